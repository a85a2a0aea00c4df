"""Quality: what `recops train` writes, against what a shop already has, on held-out data.

Each run is a real `recops train` process with the API's default training settings (the demo's job: the
quickstart manifest's); the figures are those of its termination message: the model (as served: fused
with BM25 and popularity where the task is a cross-encoder) and each baseline on the same test rows,
each baseline only on the metrics that mean something for it (constant: logloss, rmse; popularity and
BM25: auc and the ranking metrics). --seed also chooses ml-100k's held-out users (its split seed; default the
API's, 42).

Jobs (dataset:task):
  demo:click-through       the synthetic shop `make demo` trains on (its size, seed and FineTuneJob)
  shop:click-through       a larger synthetic shop (2,000 search sessions, 600 products), split by query
  ml-100k:click-through    MovieLens-100k, liked (4-5 stars) or not; no query, so groups are users
  graded:relevance         synthetic search-relevance judgements (query, title, grade 1-3), split by query
  ml-100k:relevance        MovieLens-100k ratings (1-5) as grades

The recipe was tuned on other seeds (shop seed 7 at the demo's size); these use seeds it never saw.

    .venv/bin/python benchmarks/train_quality.py                              # every job above
    .venv/bin/python benchmarks/train_quality.py --jobs demo:click-through --seed 7
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
JOBS = "demo:click-through,shop:click-through,ml-100k:click-through,graded:relevance,ml-100k:relevance"
RANKING = ["ndcg@10", "mrr", "auc"]
METRICS = {"click-through": [*RANKING, "logloss"], "relevance": ["rmse", *RANKING]}
KEY_METRIC = {"click-through": "ndcg@10", "relevance": "rmse"}
DEMO_SHOP = {"users": 200, "products": 300, "sessions": 1500, "seed": 0}  # hack/demo.py's SHOP and sessions


def dataset_spec(name: str, task: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from recops.shop.synth import generate_graded, generate_shop, write_shop

    if name in ("demo", "shop"):
        size = dict(DEMO_SHOP) if name == "demo" else {"users": 300, "products": 600, "sessions": 2000, "seed": 1}
        if args.seed is not None:
            size["seed"] = args.seed
        folder = work / f"{name}-{size['seed']}"
        if not (folder / "events.jsonl").exists():
            write_shop(generate_shop(**size), str(folder), "jsonl")
        if name == "demo":
            return {**demo_job()["dataset"], "uri": str(folder / "events.jsonl")}
        return {"uri": str(folder / "events.jsonl"), "split": {"by": "query", "validation": 0.15, "test": 0.3}}
    if name == "graded":
        path = work / f"graded-{args.seed or 1}.csv"
        generate_graded(products=600, queries=300, per_query=30, seed=args.seed or 1).to_csv(path, index=False)
        return {"uri": str(path), "fields": {"label": "grade", "timestamp": None, "event": None},
                "split": {"by": "query", "validation": 0.15, "test": 0.3}}
    # ml-100k: the newest ratings (maxRows), split by user (no user is in two splits); the context is the
    # user's description and the titles of the last films they liked, strictly before each rating.
    fields: dict[str, Any] = {"query": None, "userContext": "user_context"}
    if task == "relevance":
        fields["label"] = "rating"
    split: dict[str, Any] = {"by": "user", "validation": 0.15, "test": 0.2}
    if args.seed is not None:  # which users are held out (default: the API's split seed, 42)
        split["seed"] = args.seed
    return {"uri": "builtin://movielens-100k", "maxRows": args.ml_rows, "fields": fields,
            "userHistory": args.user_history, "split": split}


def demo_job() -> dict[str, Any]:
    """The quickstart FineTuneJob's spec (what `make demo` trains)."""
    text = (REPO / "examples/quickstart/10-finetunejob.yaml").read_text()
    spec: dict[str, Any] = yaml.safe_load(re.sub(r"\$\{(\w+)\}", r"/\1", text))["spec"]
    return spec


def run(name: str, task: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    metrics = METRICS[task]
    config: dict[str, Any] = {"task": task, "dataset": dataset_spec(name, task, work, args),
                              "output": {"uri": str(work / "models")}, "evaluation": {"metrics": metrics}}
    if name == "demo":
        config["training"] = demo_job()["training"]
    config["training"] = {**config.get("training", {}), **args.training}
    path = work / f"{name}-{task}.json"
    path.write_text(json.dumps(config))
    termination = work / f"{name}-{task}.termination.json"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "recops.train.command", "--config", str(path),
                           "--model-version", f"{name}-{task}-{int(started)}", "--termination-message-path",
                           str(termination)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - started
    (work / f"{name}-{task}.log").write_text(proc.stderr)  # the trainer's log: epochs, validation figures, fusion
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed", "seconds": seconds}
    message = json.loads(termination.read_text())
    return {"model": message["metrics"], "baseline": message["baseline"], "seconds": round(seconds),
            "training": config["training"]}


def verdict(task: str, result: dict[str, Any]) -> str:
    from recops.api.gate import better

    metric = KEY_METRIC[task]
    value = result["model"].get(metric)
    lost = [name for name, values in result["baseline"].items()
            if metric in values and (value is None or not better(metric, value, values[metric]))]
    if value is None:
        return f"{metric} not computed"
    references = {name: values[metric] for name, values in result["baseline"].items() if metric in values}
    gains = ", ".join(f"{(value / ref - 1) * 100 if metric not in ('rmse', 'logloss') else (1 - value / ref) * 100:+.1f}% vs {n}"
                      for n, ref in references.items())
    return ("does NOT beat " + ", ".join(lost) if lost else "beats all") + f" on {metric} ({gains})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=JOBS)
    parser.add_argument("--seed", type=int, default=None, help="data seed (default: each job's own)")
    parser.add_argument("--ml-rows", type=int, default=5000)
    parser.add_argument("--user-history", type=int, default=5, help="ml-100k: dataset.userHistory")
    parser.add_argument("--training", type=json.loads, default={},
                        help='training overrides as JSON, e.g. \'{"epochs": 3}\' (default: none)')
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="recops-quality-"))
    rows = []
    for job in args.jobs.split(","):
        name, task = job.split(":")
        result = run(name, task, work, args)
        rows.append((name, task, result))
        print(json.dumps({"dataset": name, "task": task, **result}), flush=True)
    print()
    print("| dataset | task | metric | model | constant | popularity | bm25 | time |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, task, result in rows:
        if "error" in result:
            print(f"| {name} | {task} | error: {result['error']} |")
            continue
        for metric in METRICS[task]:
            cells = [result["model"].get(metric)] + [result["baseline"].get(b, {}).get(metric)
                                                     for b in ("constant", "popularity", "bm25")]
            print(f"| {name} | {task} | {metric} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in cells)
                  + f" | {result['seconds']}s |")
    print()
    for name, task, result in rows:
        if "error" not in result:
            print(f"- {name} {task}: {verdict(task, result)}")
    print(f"\n(reproduce: {' '.join(['.venv/bin/python', 'benchmarks/train_quality.py', *sys.argv[1:]])}; "
          f"base model builtin://all-minilm-l6-v2, the API's default training settings unless shown)")
    print(json.dumps({"jobs": [{"dataset": n, "task": t, **r} for n, t, r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
