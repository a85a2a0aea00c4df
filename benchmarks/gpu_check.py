"""GPU check of `recops train`: bf16 training throughput on a random BERT of MiniLM's shape.

Self-contained for a GPU machine where recops is not installed (run it through gpu_check.sh, which
puts operator/ on PYTHONPATH): it builds a random BERT with MiniLM-L6's shape (6 layers, hidden
384, 12 heads, intermediate 1536, a WordPiece vocabulary of 30,522 entries generated here, since
the MiniLM package is not there), writes a synthetic shop, then

1. runs `python -m recops.train.command` (precision auto: bf16 on a GPU that has it) as a real
   process and prints the trainer's own throughput line and the termination message, and
2. runs benchmarks/train_throughput.py on the same model (recops' recipe vs pad-to-128).

    bash benchmarks/gpu_check.sh            # on the GPU machine: ~20k training pairs
    bash benchmarks/gpu_check.sh --tiny     # anywhere, in a minute: a few hundred pairs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINILM_SHAPE = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
                "max_position_embeddings": 512, "vocab_size": 30522}


def build_vocabulary(texts: list[str], size: int) -> list[str]:
    """A WordPiece vocabulary: specials, characters, whole words of the shop, then fillers to `size`."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for t in texts for w in t.lower().replace("|", " ").split()})
    chars = sorted({c for w in words for c in w})
    vocab = specials + chars + [f"##{c}" for c in chars] + [w for w in words if w not in chars]
    vocab += [f"[unused{i}]" for i in range(size - len(vocab))]
    return vocab[:size]


def build_model(directory: Path, texts: list[str]) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(build_vocabulary(texts, MINILM_SHAPE["vocab_size"])) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    BertModel(BertConfig(**MINILM_SHAPE)).save_pretrained(str(directory))
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few hundred pairs: a quick check on any machine")
    parser.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp(prefix="recops-gpu-"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sessions, batch, bench_rows = (40, 16, 128) if args.tiny else (2500, 64, 8192)

    import torch

    print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""),
          flush=True)
    from recops.shop.synth import generate_shop, write_shop

    work = Path(tempfile.mkdtemp(prefix="recops-gpu-work-"))
    shop = generate_shop(sessions=sessions, products=max(100, sessions // 5), users=max(50, sessions // 10), seed=0)
    write_shop(shop, str(work / "shop"), "parquet")
    texts = [*shop["events"]["query"].dropna().astype(str), *shop["catalogue"]["title"].astype(str),
             *shop["events"]["brand"].astype(str), *shop["events"]["category"].astype(str)]
    model = build_model(work / "minilm-shape", texts)

    config = {
        "apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "gpu-check", "namespace": "bench", "uid": "00000000-gpu"},
        "spec": {
            "task": "click-through",
            "baseModel": {"uri": str(model)},
            "dataset": {"uri": str(work / "shop" / "events.parquet"),
                        "fields": {"productText": ["title", "brand", "category"]}},
            "training": {"epochs": 1, "batchSize": batch, "maxLength": 128, "precision": "auto", "learningRate": 1e-4},
            "output": {"uri": str(work / "models")},
            "evaluation": {"metrics": ["auc", "ndcg@10", "mrr"]},
        },
    }
    (work / "job.json").write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "recops.train.command", "--config", str(work / "job.json"),
                          "--termination-message-path", str(out / "termination-message.json")],
                         capture_output=True, text=True, env=env)
    (out / "train.log").write_text(run.stderr + run.stdout)
    print(f"recops train exit {run.returncode} in {time.monotonic() - started:.0f}s")
    for line in run.stderr.splitlines():
        if any(key in line for key in ("training:", "trained ", "data:", "model:", "bm25:", "popularity:", "error")):
            print("  " + line)
    if (out / "termination-message.json").exists():
        print("termination message:", (out / "termination-message.json").read_text())
    if run.returncode != 0:
        print(run.stderr[-4000:])
        return run.returncode

    bench = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--model", str(model),
                            "--rows", str(bench_rows), "--batch-size", str(batch)], capture_output=True, text=True,
                           env=env)
    (out / "throughput.log").write_text(bench.stderr + bench.stdout)
    print(bench.stdout[-3000:] if bench.returncode == 0 else bench.stderr[-4000:])
    return bench.returncode


if __name__ == "__main__":
    sys.exit(main())
