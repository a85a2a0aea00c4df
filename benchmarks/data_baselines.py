"""Figures for the trainer's data: the cleaning report and the baselines' metrics on the
synthetic shop (with injected faults) and on ml-100k.

    .venv/bin/python benchmarks/data_baselines.py [--sessions 30000] [--products 3000] [--users 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

METRICS = ["auc", "logloss", "rmse", "mrr", "ndcg@10", "recall@10"]


def show(title: str, uri: str, task: str, split: str, names: list[str]) -> None:
    from recops.api.finetunejob import DatasetSpec
    from recops.train.baselines import baseline_metrics
    from recops.train.data import prepare

    spec = DatasetSpec.model_validate({"uri": uri, "split": {"by": split}})
    started = time.perf_counter()
    prepared = prepare(spec, task, salt="benchmark-salt")
    prepared_s = time.perf_counter() - started
    started = time.perf_counter()
    result = baseline_metrics(names, prepared)
    baseline_s = time.perf_counter() - started
    print(f"\n## {title} ({task}, split by {split})\n")
    print(prepared.report.to_markdown())
    print(f"\nmax grade {prepared.max_grade:g}; fingerprint {prepared.fingerprint[:16]}...")
    print(f"prepare {prepared_s:.1f} s, baselines {baseline_s:.1f} s\n")
    print("| baseline | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for name, values in result.items():
        print(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in names) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=30000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from recops.shop.synth import dirty, generate_shop, write_shop

    started = time.perf_counter()
    shop = generate_shop(
        users=args.users, products=args.products, sessions=args.sessions, days=args.days,
        shift_day=args.days // 2, seed=args.seed,
    )
    generated_s = time.perf_counter() - started
    events = shop["events"]
    counts = events["event"].value_counts()
    print("# Data and baselines\n")
    print(
        f"Synthetic shop: {args.users} users, {args.products} products, {args.sessions} sessions over {args.days} days "
        f"(shift on day {args.days // 2}): {len(events)} events "
        f"({', '.join(f'{counts.get(e, 0)} {e}' for e in ('impression', 'click', 'add_to_cart', 'purchase'))}) "
        f"generated in {generated_s:.1f} s."
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_shop({**shop, "events": dirty(events, 0.005, seed=args.seed)}, tmp, "parquet")
        uri = f"{tmp}/events.parquet"
        show("Synthetic shop, 0.5% faults injected per kind", uri, "click-through", "query", METRICS)
        show("Synthetic shop, 0.5% faults injected per kind", uri, "relevance", "query", METRICS)
        show("Synthetic shop, 0.5% faults injected per kind", uri, "click-through", "time", METRICS)
    show("MovieLens 100k", "builtin://movielens-100k", "click-through", "user", METRICS)
    show("MovieLens 100k", "builtin://movielens-100k", "relevance", "user", METRICS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
