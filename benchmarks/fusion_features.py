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
without and with it (fitted on validation), what the trainer's check (`lexical_helps`, on the validation split)
decides, and a check on the train split instead: every feature cross-fitted over 5 folds of the train queries (the
lexical model and popularity fitted without the fold), then the fusion's weights fitted with and without the lexical
feature on 4/5 of the train queries and judged on the fifth, 3 fold assignments (the mean ndcg@10 gain); and the
test split's ndcg@10 with the weights fitted on the whole train split (stacking). Tune on data seeds other than the
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


def popularity_log_odds(item_ids: list[str], targets: list[float], items: list[str]) -> Any:
    """Each of `items`' smoothed click rate over (`item_ids`, `targets`) as a log-odds, as the fusion reads it."""
    import numpy as np

    from recops.fusion import prior_weight, smoothed_means

    means, overall = smoothed_means(item_ids, targets, prior_weight(item_ids, targets))
    rate = np.array([means.get(item, overall) for item in items]).clip(1e-4, 1 - 1e-4)
    return np.log(rate / (1 - rate))


def cross_fitted_checks(data: Any, lexical_model: Any, folds: int = 5, repeats: int = 3) -> tuple[float, float]:
    """The train split's check (see the docstring above): the mean ndcg@10 gain of the lexical feature; and the test
    split's ndcg@10 of BM25, popularity and the lexical model weighted as fitted on the whole train split (stacked)."""
    import numpy as np

    from recops.fusion import BM25, _pairwise
    from recops.lexical import fit_lexical
    from recops.train.metrics import compute_metrics

    train, test = data.train, data.test
    groups = train["group"].astype(str).to_numpy()
    contexts, texts = train["context"].astype(str).tolist(), train["product_text"].astype(str).tolist()
    items, y = train["product_id"].astype(str).tolist(), train["label"].to_numpy(dtype=float)
    bm25 = BM25.fit(data.product_texts())

    def assignment(seed: int) -> Any:
        names = np.unique(groups)
        fold_of = dict(zip(np.random.default_rng(seed).permutation(names), np.arange(len(names)) % folds, strict=True))
        return np.array([fold_of[g] for g in groups])

    lexical, popularity = np.zeros(len(train)), np.zeros(len(train))
    fold = assignment(0)
    for k in range(folds):
        rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = fit_lexical([contexts[i] for i in rest], [texts[i] for i in rest], y[rest])
        lexical[held] = model.scores([contexts[i] for i in held], [texts[i] for i in held]) if model else 0.0
        popularity[held] = popularity_log_odds([items[i] for i in rest], y[rest].tolist(), [items[i] for i in held])
    x = np.column_stack([bm25.scores(contexts, texts), popularity, lexical])
    means, scales = x.mean(axis=0), np.where(x.std(axis=0) < 1e-9, 1.0, x.std(axis=0))
    z = (x - means) / scales
    gains = []
    for repeat in range(repeats):
        fold = assignment(100 + repeat)
        for k in range(folds):
            rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            part = train.iloc[held]
            if part["label"].nunique() < 2:
                continue
            ndcg = [compute_metrics(["ndcg@10"], part, z[held][:, columns] @ _pairwise(z[rest][:, columns], y[rest],
                                                                                       groups[rest], 0))["ndcg@10"]
                    for columns in ([0, 1, 2], [0, 1])]
            gains.append(ndcg[0] - ndcg[1])
    statistics = data.statistics_rows()
    test_contexts, test_texts = test["context"].astype(str).tolist(), test["product_text"].astype(str).tolist()
    test_x = np.column_stack([
        bm25.scores(test_contexts, test_texts),
        popularity_log_odds(statistics["product_id"].astype(str).tolist(), statistics["label"].astype(float).tolist(),
                            test["product_id"].astype(str).tolist()),
        lexical_model.scores(test_contexts, test_texts) if lexical_model else np.zeros(len(test))])
    stacked = ((test_x - means) / scales) @ _pairwise(z, y, groups, 0)
    return float(np.mean(gains)), float(compute_metrics(["ndcg@10"], test, stacked)["ndcg@10"])


def lexical(seeds: list[int], shops: list[str], work: Path) -> None:
    """Whether the lexical model helps the fusion on the synthetic shop, per size and data seed (model output 0)."""
    import numpy as np
    from train_quality import dataset_spec

    from recops.api.finetunejob import DatasetSpec
    from recops.train.baselines import baseline_scores
    from recops.train.data import prepare
    from recops.train.evaluate import lexical_helps, row_ratings, train_lexical
    from recops.train.metrics import compute_metrics

    print("| shop, data seed | train / validation / test queries | test bm25 ndcg@10 | fusion without it (vs bm25) | "
          "with it (vs bm25) | the trainer's check (validation) | cross-fitted check (train): gain | "
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
            kept = model is not None and lexical_helps(validation, np.zeros(len(validation)), model, fit)
            queries = " / ".join(str(frame["group"].nunique()) for frame in (data.train, validation, test))
            gain, stacked = cross_fitted_checks(data, model)
            print(f"| {shop}, {seed} | {queries} | {bm25:.4f} | {cells[0]} | {cells[1]} | {'kept' if kept else 'dropped'} "
                  f"| {gain:+.4f} | {stacked:.4f} ({(stacked / bm25 - 1) * 100:+.1f}%) |", flush=True)


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
