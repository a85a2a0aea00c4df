"""Training throughput: recops' recipe against the naive one, same model, same data.

recops: dynamic padding (each batch padded to its longest pair) and length-grouped batches.
naive:  every batch padded to max length 128, batches in random order.

Both run the same `recops.train.trainer.train` (the code `recops train` runs) on the same
prepared split of a synthetic shop, for the same number of examples; the figure is the Trainer's
samples per second, and the ratio recops / naive. Precision follows `--precision` (auto: bf16
on a GPU that has it, fp32 on the CPU).

    .venv/bin/python benchmarks/train_throughput.py                       # MiniLM, 512 pairs, CPU
    .venv/bin/python benchmarks/train_throughput.py --model /path/to/model --rows 4096 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RECOPS_CHECKPOINT_SECONDS", "1000000")  # measure training, not checkpointing


def padded_tokens(rows: dict[str, list[Any]], batch_size: int, max_length: int, naive: bool) -> float:
    """Mean tokens per example actually fed to the model (padding included), for the record."""
    import numpy as np

    lengths = np.array(rows["length"])
    if naive:
        return float(max_length)
    order = np.argsort(lengths)  # length grouping approximates sorted batches
    batches = [lengths[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
    return float(sum(b.max() * len(b) for b in batches) / len(lengths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin://all-minilm-l6-v2", help="base model URI or directory")
    parser.add_argument("--task", default="click-through", choices=["click-through", "relevance", "embedding"])
    parser.add_argument("--rows", type=int, default=512, help="training examples per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--product-text", default="title,brand,category", help="product text columns")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from recops import uris
    from recops.api.finetunejob import FineTuneJobSpec
    from recops.shop.synth import generate_shop, write_shop
    from recops.train.data import prepare
    from recops.train.trainer import build_rows, train

    work = Path(tempfile.mkdtemp(prefix="recops-bench-"))
    sessions = max(50, args.rows // 6)
    write_shop(generate_shop(sessions=sessions, products=max(100, sessions // 2), seed=args.seed), str(work / "shop"),
               "parquet")
    spec = FineTuneJobSpec.model_validate({
        "task": args.task,
        "baseModel": {"uri": args.model},
        "dataset": {"uri": str(work / "shop" / "events.parquet"), "maxRows": args.rows,
                    "fields": {"productText": args.product_text.split(",")},
                    "split": {"by": "random", "validation": 0.0, "test": 0.01}},
        "training": {"epochs": 1, "batchSize": args.batch_size, "maxLength": args.max_length,
                     "precision": args.precision, "seed": args.seed},
        "output": {"uri": str(work / "out")},
    })
    data = prepare(spec.dataset, spec.task)
    base = Path(uris.local_path(args.model) or args.model)
    from transformers import AutoTokenizer

    rows = build_rows(args.task, AutoTokenizer.from_pretrained(str(base)), data.train, args.max_length)
    results: dict[str, dict[str, float]] = {}
    for name, naive in (("naive", True), ("recops", False)):
        started = time.monotonic()
        result = train(spec, data, base, work / f"checkpoints-{name}", None, {"run": name}, naive=naive)
        results[name] = {
            "samples_per_s": round(result.samples_per_second or 0.0, 2),
            "train_s": round(result.seconds, 2),
            "wall_s": round(time.monotonic() - started, 2),
            "tokens_per_example": round(padded_tokens(rows, args.batch_size, args.max_length, naive), 1),
            "precision": result.precision,  # type: ignore[dict-item]
        }
    ratio = results["recops"]["samples_per_s"] / max(results["naive"]["samples_per_s"], 1e-9)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    summary = {"model": args.model, "task": args.task, "examples": len(rows["length"]), "batch_size": args.batch_size,
               "max_length": args.max_length, "device": device, **results, "ratio_recops_over_naive": round(ratio, 2)}
    print(json.dumps(summary, indent=1))
    print(f"recops {results['recops']['samples_per_s']} samples/s vs naive {results['naive']['samples_per_s']} "
          f"samples/s: x{ratio:.2f}  (reproduce: {' '.join(['python', *sys.argv])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
