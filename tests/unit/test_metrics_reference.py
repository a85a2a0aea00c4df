"""Every metric and baseline against a reference implementation on random inputs, ties included.

recops breaks ties in the ranking metrics by one fixed pseudo-random order (the same for every scorer);
the references get that order as a tiny offset, so any other difference is a bug in recops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, mean_squared_error, ndcg_score, roc_auc_score

from recops.fusion import BM25, smoothed_means
from recops.train import baselines
from recops.train.metrics import compute_metrics, paired_interval, tie_share

SEEDS = range(6)


def random_frame(seed: int, ties: bool) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 200))
    grades = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0, 3.0], n)
    frame = pd.DataFrame({"group": rng.integers(0, 8, n).astype(str), "grade": grades, "label": grades,
                          "product_id": [f"p{i}" for i in range(n)]})
    scores = rng.random(n)
    if ties:
        scores = np.round(scores * 4) / 4  # five distinct values: many ties in every group
    return frame, scores


def tie_broken(scores: np.ndarray) -> np.ndarray:
    """The scores with recops' documented tie-break folded in: within equal scores, the fixed permutation's
    order (seed 0, smaller first) comes first."""
    order = np.random.default_rng(0).permutation(len(scores))
    return np.asarray(scores, dtype=float) - order * 1e-9


def per_group(frame: pd.DataFrame, scores: np.ndarray, judge) -> float:  # type: ignore[no-untyped-def]
    values = []
    for _, rows in frame.groupby("group"):
        grades = rows["grade"].to_numpy()
        if (grades >= 1).any():
            values.append(judge(grades, scores[rows.index.to_numpy()]))
    return float(np.mean(values))


def reciprocal_rank(grades: np.ndarray, scores: np.ndarray) -> float:
    ranked = grades[np.argsort(-scores, kind="stable")]
    return 1.0 / (int(np.flatnonzero(ranked >= 1)[0]) + 1)


def recall_at(k: int):  # type: ignore[no-untyped-def]
    def judge(grades: np.ndarray, scores: np.ndarray) -> float:
        top = np.argsort(-scores, kind="stable")[:k]
        return float((grades[top] >= 1).sum() / (grades >= 1).sum())
    return judge


def ndcg_at(k: int):  # type: ignore[no-untyped-def]
    def judge(grades: np.ndarray, scores: np.ndarray) -> float:
        return float(ndcg_score([grades], [scores], k=k)) if len(grades) > 1 else 1.0
    return judge


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_agree_with_the_references(seed: int, ties: bool) -> None:
    frame, scores = random_frame(seed, ties)
    got = compute_metrics(["auc", "logloss", "accuracy", "rmse", "mrr", "ndcg@5", "ndcg@10", "recall@3"],
                          frame, scores, max_grade=3.0)
    target = frame["grade"].to_numpy() >= 1
    broken = tie_broken(scores)
    assert got["auc"] == pytest.approx(roc_auc_score(target, scores))  # ties count half in both
    assert got["logloss"] == pytest.approx(log_loss(target, np.clip(scores, 1e-7, 1 - 1e-7)))
    assert got["accuracy"] == pytest.approx(float(np.mean((scores >= 0.5) == target)))
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(frame["label"], scores * 3.0)))
    assert got["mrr"] == pytest.approx(per_group(frame, broken, reciprocal_rank))
    assert got["ndcg@5"] == pytest.approx(per_group(frame, broken, ndcg_at(5)))
    assert got["ndcg@10"] == pytest.approx(per_group(frame, broken, ndcg_at(10)))
    assert got["recall@3"] == pytest.approx(per_group(frame, broken, recall_at(3)))


def test_the_tie_break_does_not_follow_the_row_order() -> None:
    # Every score equal, the positive first or last in the rows: the same ranking metrics either way would
    # mean the order of the rows decides; a fixed permutation decides instead, the same for every scorer.
    frame = pd.DataFrame({"group": ["q"] * 50, "grade": [1.0] + [0.0] * 49, "product_id": [f"p{i}" for i in range(50)]})
    flat = np.zeros(50)
    first = compute_metrics(["mrr"], frame, flat)["mrr"]
    last = compute_metrics(["mrr"], frame.iloc[::-1].reset_index(drop=True).assign(
        product_id=[f"p{i}" for i in range(50)]), flat)["mrr"]
    assert first != 1.0 or last != 1.0
    assert tie_share(frame, flat) == 1.0 and tie_share(frame, np.arange(50.0)) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_the_baselines_agree_with_their_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "shoe", "boot", "wool", "jacket", "mug", "lamp"]
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 5)))) for _ in range(30)]
    train = pd.DataFrame({"product_id": rng.choice([f"p{i}" for i in range(10)], 200),
                          "grade": rng.choice([0.0, 1.0, 2.0], 200), "label": 0.0})
    train["label"] = (train["grade"] >= 1).astype(float)
    test = pd.DataFrame({"product_id": [f"p{i}" for i in range(12)], "context": rng.choice(words, 12),
                         "product_text": texts[:12]})

    # popularity: (positives + 10 * overall) / (events + 10); unseen products get the overall rate.
    overall = train["label"].mean()
    counts = train.groupby("product_id")["label"].agg(["sum", "count"])
    expected = [((counts.loc[p, "sum"] + 10 * overall) / (counts.loc[p, "count"] + 10)) if p in counts.index
                else overall for p in test["product_id"]]
    np.testing.assert_allclose(baselines.popularity_scores(train, test), expected)
    assert smoothed_means(["a", "a", "b"], [1.0, 0.0, 1.0])[1] == pytest.approx(2 / 3)

    # bm25: Okapi BM25 (k1 1.2, b 0.75, idf log(1 + (N - n + 0.5) / (n + 0.5))), written out by hand.
    documents = [t.split() for t in set(texts)]
    average = np.mean([len(d) for d in documents])
    def okapi(query: str, text: str) -> float:
        total, tokens = 0.0, text.split()
        for term in query.split():
            seen = sum(term in d for d in documents)
            tf = tokens.count(term)
            if tf and seen:
                idf = np.log(1 + (len(documents) - seen + 0.5) / (seen + 0.5))
                total += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(tokens) / average))
        return total
    np.testing.assert_allclose(baselines.bm25_scores(test, texts),
                               [okapi(q, t) for q, t in zip(test["context"], test["product_text"], strict=True)])
    assert BM25.fit(texts).score("", texts[0]) == 0.0

    # constant: the train split's mean label, as a unit score.
    assert baselines.constant_score(train, 1.0) == pytest.approx(overall)
    assert baselines.constant_score(train.assign(label=train["grade"]), 2.0) == pytest.approx(train["grade"].mean() / 2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("metric", ["ndcg@5", "mrr", "recall@3", "logloss", "rmse", "accuracy"])
def test_a_paired_interval_is_the_difference_of_the_two_metrics(seed: int, metric: str) -> None:
    frame, scores = random_frame(seed, ties=True)
    reference = np.round(np.random.default_rng(seed + 100).random(len(frame)) * 4) / 4
    interval = paired_interval(metric, frame, scores, reference, max_grade=3.0, resamples=200)
    assert interval is not None
    expected = compute_metrics([metric], frame, scores, max_grade=3.0)[metric] - \
        compute_metrics([metric], frame, reference, max_grade=3.0)[metric]
    assert interval.difference == pytest.approx(expected, abs=1e-12)
    assert interval.low <= interval.high


@pytest.mark.parametrize("seed", SEEDS)
def test_a_paired_interval_resamples_whole_groups_as_a_plain_bootstrap_of_per_group_figures_does(seed: int) -> None:
    """The reference: each group's ndcg@10 from compute_metrics on that group alone, the per-group differences
    resampled by numpy, the 2.5th and 97.5th percentiles of their means."""
    rng = np.random.default_rng(seed)
    groups = 60
    frame = pd.DataFrame({"group": rng.integers(0, groups, 1500).astype(str)})
    frame["grade"] = rng.choice([0.0, 0.0, 1.0, 3.0], len(frame))
    frame["label"] = frame["grade"]
    good, other = frame["grade"].to_numpy() * 0.2 + rng.random(len(frame)), rng.random(len(frame))
    differences = []
    for _, rows in frame.groupby("group"):
        if (rows["grade"] >= 1).any():
            index = rows.index.to_numpy()
            differences.append(compute_metrics(["ndcg@10"], rows.reset_index(drop=True), good[index])["ndcg@10"]
                               - compute_metrics(["ndcg@10"], rows.reset_index(drop=True), other[index])["ndcg@10"])
    d = np.array(differences)
    means = d[rng.integers(0, len(d), (20000, len(d)))].mean(axis=1)
    interval = paired_interval("ndcg@10", frame, good, other, resamples=20000)
    assert interval is not None and interval.groups == len(d)
    assert interval.low == pytest.approx(np.percentile(means, 2.5), abs=0.006)
    assert interval.high == pytest.approx(np.percentile(means, 97.5), abs=0.006)
    assert interval.low > 0  # better in every group's expectation, and 60 groups show it


def test_a_paired_interval_of_a_scorer_with_itself_is_zero_and_auc_has_none() -> None:
    frame, scores = random_frame(0, ties=True)
    same = paired_interval("ndcg@5", frame, scores, scores.copy())
    assert same is not None and (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    assert paired_interval("auc", frame, scores, scores[::-1].copy()) is None
