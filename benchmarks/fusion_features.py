"""The fusion's own features without a fine-tuned model: what each adds (ml-100k ratings and click-through, the shop's lexical model).

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

`--task lexical` asks of the synthetic shop (`--shops shop,demo`: the benchmark's size and the demo's) whether the
lexical model (recops.lexical) helps the fusion (model output 0): the test split's ndcg@10 of BM25 and of the fusion
without and with it (fitted on validation), the trainer's check (`lexical_gains` / `lexical_helps`: every feature
cross-fitted over 5 folds of the train queries, then the weights fitted with and without the lexical feature on 4/5
of them and judged on the fifth, 3 fold assignments; its mean gain and standard error), and the test split's
ndcg@10 with the weights fitted on the whole train split instead (stacking). Tune on data seeds other than the
held-out table's (shop 1, demo 0).

    .venv/bin/python benchmarks/fusion_features.py --task lexical --seeds 7,8,9,10
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


def fitted(data: Any, neighbourhood: bool, kind: str = "linear", rows: Any = None, lexical: Any = None) -> Any:
    """The fusion (model output 0) fitted on the validation split, or on its `rows`."""
    import numpy as np

    from recops.fusion import fit_fusion
    from recops.train.evaluate import row_ratings

    statistics = data.statistics_rows()
    frame = data.validation if rows is None else data.validation.iloc[rows]
    return fit_fusion(
        kind, np.zeros(len(frame)), frame["context"].astype(str).tolist(),
        frame["product_text"].astype(str).tolist(), frame["product_id"].astype(str).tolist(),
        frame["label"].to_numpy(dtype=float), frame["group"].astype(str).tolist(), corpus=data.product_texts(),
        train_items=statistics["product_id"].astype(str).tolist(),
        train_targets=statistics["label"].astype(float).tolist(), ratings=row_ratings(frame),
        train_users=statistics["user"].tolist(), neighbourhood=neighbourhood, lexical=lexical)


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


def stacked_ndcg(data: Any) -> float:
    """The test split's ndcg@10 of BM25, popularity and the lexical model weighted as fitted on the whole train split
    (stacked), the train split's features cross-fitted as the trainer's check fits them."""
    import numpy as np

    from recops.fusion import BM25, _pairwise
    from recops.train.evaluate import cross_fitted_features, popularity_log_odds, train_lexical
    from recops.train.metrics import compute_metrics

    x, y, groups = cross_fitted_features(data)
    means, scales = x.mean(axis=0), np.where(x.std(axis=0) < 1e-9, 1.0, x.std(axis=0))
    test, statistics, model = data.test, data.statistics_rows(), train_lexical(data)
    contexts, texts = test["context"].astype(str).tolist(), test["product_text"].astype(str).tolist()
    popularity = popularity_log_odds(statistics["product_id"].astype(str).tolist(),
                                     statistics["label"].astype(float).tolist(), test["product_id"].astype(str).tolist())
    test_x = np.column_stack([BM25.fit(data.product_texts()).scores(contexts, texts), popularity,
                              model.scores(contexts, texts) if model else np.zeros(len(test))])
    stacked = ((test_x - means) / scales) @ _pairwise((x - means) / scales, y, groups, 0)
    return float(compute_metrics(["ndcg@10"], test, stacked)["ndcg@10"])


def lexical(seeds: list[int], shops: list[str], work: Path) -> None:
    """Whether the lexical model helps the fusion on the synthetic shop, per size and data seed (model output 0)."""
    import numpy as np
    from train_quality import dataset_spec

    from recops.api.finetunejob import DatasetSpec
    from recops.train.baselines import baseline_scores
    from recops.train.data import prepare
    from recops.train.evaluate import lexical_gains, lexical_helps, row_ratings, train_lexical
    from recops.train.metrics import compute_metrics

    print("| shop, data seed | train / validation / test queries | test bm25 ndcg@10 | fusion without it (vs bm25) | "
          "with it (vs bm25) | the trainer's check (train split): mean gain / standard error | "
          "with it, weights fitted on the train split (vs bm25) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for shop in shops:
        for seed in seeds:
            spec = dataset_spec(shop, "click-through", work, argparse.Namespace(seed=seed))
            data = prepare(DatasetSpec.model_validate(spec), "click-through")
            validation, test = data.validation, data.test
            model = train_lexical(data)

            def fit(rows: Any, lexical_model: Any, data: Any = data) -> Any:
                return fitted(data, False, "logistic", rows, lexical_model)

            bm25 = compute_metrics(["ndcg@10"], test, baseline_scores(data, test)["bm25"])["ndcg@10"]
            cells = []
            for lexical_model in (None, model):
                fused = fit(None, lexical_model).apply(
                    np.zeros(len(test)), test["context"].astype(str).tolist(), test["product_text"].astype(str).tolist(),
                    test["product_id"].astype(str).tolist(), row_ratings(test))
                value = compute_metrics(["ndcg@10"], test, np.asarray(fused))["ndcg@10"]
                cells.append(f"{value:.4f} ({(value / bm25 - 1) * 100:+.1f}%)")
            gains = lexical_gains(data)
            se = gains.std(ddof=1) / np.sqrt(len(gains))
            kept = model is not None and lexical_helps(data)
            queries = " / ".join(str(frame["group"].nunique()) for frame in (data.train, validation, test))
            stacked = stacked_ndcg(data)
            print(f"| {shop}, {seed} | {queries} | {bm25:.4f} | {cells[0]} | {cells[1]} | {gains.mean():+.4f} / {se:.4f}: "
                  f"{'kept' if kept else 'dropped'} | {stacked:.4f} ({(stacked / bm25 - 1) * 100:+.1f}%) |", flush=True)


def main() -> int:
    import numpy as np
    from train_quality import dataset_spec

    from recops.api.finetunejob import DatasetSpec
    from recops.train.data import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,7,11", help="split seeds (which users are held out)")
    parser.add_argument("--ml-rows", type=int, default=5000)
    parser.add_argument("--user-history", type=int, default=5)
    parser.add_argument("--task", choices=("relevance", "click-through", "lexical"), default="relevance")
    parser.add_argument("--shops", default="shop,demo", help="--task lexical: the shop sizes (train_quality's names)")
    args = parser.parse_args()
    if args.task == "lexical":
        lexical([int(s) for s in args.seeds.split(",")], args.shops.split(","),
                Path(tempfile.mkdtemp(prefix="recops-fusion-features-")))
        return 0
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
