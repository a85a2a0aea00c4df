"""Quality: the shipped MiniLM fine-tuned by `recops train` against the baselines (popularity, BM25)
on the held-out split of a synthetic shop and of MovieLens-100k.

Each run is a real `recops train` process; the figures are those of its termination message
(test split metrics of the model and of both baselines on the same rows).

    .venv/bin/python benchmarks/train_quality.py                                  # both datasets, CPU sizes
    .venv/bin/python benchmarks/train_quality.py --datasets shop --tasks embedding,click-through,relevance
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
from typing import Any

METRICS = ["ndcg@10", "mrr", "recall@10", "auc"]


def dataset_spec(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    if name == "shop":
        from recops.train.synth import generate_shop, write_shop

        shop = generate_shop(users=args.shop_users, products=args.shop_products, sessions=args.shop_sessions,
                             queries=args.shop_queries, seed=args.seed)
        write_shop(shop, str(work / "shop"), "jsonl")
        return {"uri": str(work / "shop" / "events.jsonl"),
                "split": {"by": "query", "validation": 0.1, "test": 0.3}}
    # ml-100k: no query, so the context is the user's description and groups are users; the newest
    # ratings are kept (maxRows) to keep CPU time small.
    return {"uri": "builtin://movielens-100k", "maxRows": args.ml_rows,
            "fields": {"query": None, "userContext": "user_context"},
            "split": {"by": "user", "validation": 0.1, "test": 0.2}}


def run(task: str, dataset: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    name = f"{task}-{abs(hash(json.dumps(dataset, sort_keys=True))) % 10**6}"
    config = {"task": task, "baseModel": {"uri": args.model}, "dataset": dataset,
              "training": {"epochs": args.epochs, "batchSize": args.batch_size, "maxLength": args.max_length,
                           "learningRate": args.learning_rate},
              "output": {"uri": str(work / "models")}, "evaluation": {"metrics": METRICS}}
    (work / f"{name}.json").write_text(json.dumps(config))
    termination = work / f"{name}.termination.json"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "recops.train.command", "--config", str(work / f"{name}.json"),
                           "--model-version", name, "--termination-message-path", str(termination)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed", "seconds": seconds}
    message = json.loads(termination.read_text())
    return {"model": message["metrics"], **message["baseline"], "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="shop,ml-100k")
    parser.add_argument("--tasks", default="embedding,click-through")
    parser.add_argument("--model", default="builtin://all-minilm-l6-v2")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=5e-5)  # the API default
    # A cross-encoder learns lexical matching from clicks only with enough of them: on the small shop
    # of tests/workloads/test_train_minilm.py (300 sessions) it stays below BM25; at 2,000 it beats it.
    parser.add_argument("--shop-sessions", type=int, default=2000)
    parser.add_argument("--shop-products", type=int, default=600)
    parser.add_argument("--shop-users", type=int, default=300)
    parser.add_argument("--shop-queries", type=int, default=200)
    parser.add_argument("--ml-rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="recops-quality-"))
    rows = []
    for dataset_name in args.datasets.split(","):
        dataset = dataset_spec(dataset_name, work, args)
        for task in args.tasks.split(","):
            result = run(task, dataset, work, args)
            rows.append((dataset_name, task, result))
            print(json.dumps({"dataset": dataset_name, "task": task, **result}), flush=True)
    print()
    print(f"| dataset | task | {' | '.join(f'{m} model / pop / bm25' for m in METRICS)} | time |")
    print("|---|---|" + "---|" * len(METRICS) + "---|")
    for dataset_name, task, result in rows:
        if "error" in result:
            print(f"| {dataset_name} | {task} | error: {result['error']} |")
            continue
        cells = []
        for metric in METRICS:
            values = [result.get(k, {}).get(metric) for k in ("model", "popularity", "bm25")]
            cells.append(" / ".join("–" if v is None else f"{v:.3f}" for v in values))
        print(f"| {dataset_name} | {task} | {' | '.join(cells)} | {result['seconds']:.0f}s |")
    print(f"\n(reproduce: {' '.join(['python', *sys.argv])}; model {args.model}, {args.epochs:g} epochs, "
          f"batch {args.batch_size}, maxLength {args.max_length}, lr {args.learning_rate:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
