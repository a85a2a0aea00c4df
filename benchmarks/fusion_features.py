"""The fusion's own features on ml-100k ratings, without a fine-tuned model: what each adds to the RMSE.

The numpy-only check that chose the item neighbourhood (recops.fusion.ItemNeighbours) and its constants before a
`recops train` run: the same data and split as `train_quality.py --jobs ml-100k:relevance` (5,000 newest ratings,
split by user), the fusion fitted on the validation split with the model's output held at 0, and the test split's
RMSE of the constant (the statistics rows' mean grade), the fusion without the neighbourhood (BM25, popularity,
user offset) and with it. Tune on split seeds other than 42, which the held-out table reports.

    .venv/bin/python benchmarks/fusion_features.py --seeds 3,7,11

`--task click-through` does the same for ml-100k click-through (liked: 4-5 stars; groups are users, no query): the
test split's ndcg@10 / mrr of popularity against the fusion (model output 0) without and with the item neighbourhood
(with it: what `recops train` fits for data whose groups are users; a click-through fusion's user offset weighs 0);
logloss against the constant (the base rate).

    .venv/bin/python benchmarks/fusion_features.py --task click-through --seeds 3,7,11
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rmse_of(fusion: Any, frame: Any) -> float:
    import numpy as np

    predicted = np.asarray(fusion.apply(np.zeros(len(frame)), frame["context"].astype(str).tolist(),
                                        frame["product_text"].astype(str).tolist(),
                                        frame["product_id"].astype(str).tolist(), frame["ratings"].tolist()))
    return float(np.sqrt(np.mean((predicted - frame["label"].to_numpy(dtype=float)) ** 2)))


def fitted(data: Any, neighbourhood: bool, kind: str = "linear") -> Any:
    import numpy as np

    from recops.fusion import fit_fusion

    frame, statistics = data.validation, data.statistics_rows()
    return fit_fusion(
        kind, np.zeros(len(frame)), frame["context"].astype(str).tolist(),
        frame["product_text"].astype(str).tolist(), frame["product_id"].astype(str).tolist(),
        frame["label"].to_numpy(dtype=float), frame["group"].astype(str).tolist(), corpus=data.product_texts(),
        train_items=statistics["product_id"].astype(str).tolist(),
        train_targets=statistics["label"].astype(float).tolist(), ratings=frame["ratings"].tolist(),
        train_users=statistics["user"].tolist(), neighbourhood=neighbourhood)


def probabilities(fusion: Any, frame: Any) -> Any:
    import numpy as np

    raw = np.asarray(fusion.apply(np.zeros(len(frame)), frame["context"].astype(str).tolist(),
                                  frame["product_text"].astype(str).tolist(),
                                  frame["product_id"].astype(str).tolist(), frame["ratings"].tolist()))
    return 1.0 / (1.0 + np.exp(-np.clip(raw, -60, 60)))


def click_through(seeds: list[int], args: argparse.Namespace, work: Path) -> None:
    """Popularity against the fusion (model output 0) on ml-100k click-through's held-out users, per split seed."""
    from train_quality import dataset_spec

    from recops.api.finetunejob import DatasetSpec
    from recops.train.baselines import baseline_scores
    from recops.train.data import prepare
    from recops.train.metrics import compute_metrics

    variants = {"without the neighbourhood": False, "with it": True}  # the user offset weighs 0 in both
    print("| split seed | test users | popularity ndcg@10 / mrr | constant logloss | "
          + " | ".join(f"fusion {name}: ndcg@10 (vs popularity) / mrr / logloss" for name in variants)
          + " | fused weights (last) |")
    print("|---|---:|---:|---:|" + "---:|" * len(variants) + "---|")
    for seed in seeds:
        spec = dataset_spec("ml-100k", "click-through", work, argparse.Namespace(
            seed=seed, ml_rows=args.ml_rows, user_history=args.user_history))
        data = prepare(DatasetSpec.model_validate(spec), "click-through")
        baselines = baseline_scores(data, data.test)
        popularity = compute_metrics(["ndcg@10", "mrr"], data.test, baselines["popularity"])
        constant = compute_metrics(["logloss"], data.test, baselines["constant"])["logloss"]
        cells = []
        for neighbourhood in variants.values():
            fusion = fitted(data, neighbourhood, "logistic")
            m = compute_metrics(["ndcg@10", "mrr", "logloss"], data.test, probabilities(fusion, data.test))
            cells.append(f"{m['ndcg@10']:.4f} ({(m['ndcg@10'] / popularity['ndcg@10'] - 1) * 100:+.1f}%) / "
                         f"{m['mrr']:.4f} / {m['logloss']:.4f}")
        print(f"| {seed} | {data.test['group'].nunique()} | {popularity['ndcg@10']:.4f} / {popularity['mrr']:.4f} "
              f"| {constant:.4f} | " + " | ".join(cells) + f" | {fusion.describe()} |", flush=True)


def main() -> int:
    import numpy as np
    from train_quality import dataset_spec

    from recops.api.finetunejob import DatasetSpec
    from recops.train.data import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,7,11", help="split seeds (which users are held out)")
    parser.add_argument("--ml-rows", type=int, default=5000)
    parser.add_argument("--user-history", type=int, default=5)
    parser.add_argument("--task", choices=("relevance", "click-through"), default="relevance")
    args = parser.parse_args()
    if args.task == "click-through":
        click_through([int(s) for s in args.seeds.split(",")], args, Path(tempfile.mkdtemp(prefix="recops-fusion-features-")))
        return 0
    print("| split seed | test rows | constant | fusion without the model | + neighbourhood | gain (points below the constant) | fused weights |")
    print("|---|---:|---:|---:|---:|---:|---|")
    work = Path(tempfile.mkdtemp(prefix="recops-fusion-features-"))
    for seed in (int(s) for s in args.seeds.split(",")):
        spec = dataset_spec("ml-100k", "relevance", work, argparse.Namespace(
            seed=seed, ml_rows=args.ml_rows, user_history=args.user_history))
        data = prepare(DatasetSpec.model_validate(spec), "relevance")
        constant = float(np.sqrt(np.mean((data.test["label"].to_numpy(dtype=float)
                                          - data.statistics_rows()["label"].mean()) ** 2)))
        without, with_ = fitted(data, False), fitted(data, True)
        before, after = rmse_of(without, data.test), rmse_of(with_, data.test)
        print(f"| {seed} | {len(data.test)} | {constant:.4f} | {before:.4f} ({(1 - before / constant) * 100:.1f}% below) "
              f"| {after:.4f} ({(1 - after / constant) * 100:.1f}% below) | {(before - after) / constant * 100:+.1f} "
              f"| {with_.describe()} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
