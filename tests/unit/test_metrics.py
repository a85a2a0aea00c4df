"""Metrics against values computed by hand, and the baselines' behaviour."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from recops.api.finetunejob import DatasetSpec
from recops.train import baselines, data
from recops.train.metrics import compute_metrics, parse_metric

# Three groups: A and B have positives (grade >= 1), C has none and is left out of ranking metrics.
FRAME = pd.DataFrame(
    {
        "group": ["A", "A", "A", "A", "B", "B", "B", "C", "C"],
        "grade": [3.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0],
        "label": [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    }
)
SCORES = np.array([0.9, 0.8, 0.4, 0.1, 0.7, 0.6, 0.2, 0.5, 0.3])


def test_ranking_metrics_by_hand() -> None:
    got = compute_metrics(["mrr", "recall@1", "recall@2", "ndcg@3", "ndcg@1"], FRAME, SCORES)
    # A ranks grades [3, 0, 1, 0]; B ranks [0, 2, 0].
    assert got["mrr"] == pytest.approx((1.0 + 1.0 / 2.0) / 2.0)
    assert got["recall@1"] == pytest.approx((1.0 / 2.0 + 0.0) / 2.0)
    assert got["recall@2"] == pytest.approx((1.0 / 2.0 + 1.0) / 2.0)
    ndcg_a = (3.0 + 1.0 / math.log2(4.0)) / (3.0 + 1.0 / math.log2(3.0))
    ndcg_b = (2.0 / math.log2(3.0)) / 2.0
    assert got["ndcg@3"] == pytest.approx((ndcg_a + ndcg_b) / 2.0)
    assert got["ndcg@1"] == pytest.approx((3.0 / 3.0 + 0.0 / 2.0) / 2.0)


def test_classification_metrics_by_hand() -> None:
    got = compute_metrics(["auc", "logloss", "rmse", "accuracy"], FRAME, SCORES)
    # Positives score 0.9, 0.4, 0.6; they beat 6 + 3 + 4 of the 3 x 6 (positive, negative) pairs.
    assert got["auc"] == pytest.approx(13.0 / 18.0)
    y = FRAME["label"].to_numpy()
    expected_logloss = -sum(
        math.log(p) if t else math.log(1.0 - p) for t, p in zip(y, SCORES, strict=True)
    ) / len(y)
    assert got["logloss"] == pytest.approx(expected_logloss)
    assert got["rmse"] == pytest.approx(math.sqrt(sum((p - t) ** 2 for t, p in zip(y, SCORES, strict=True)) / 9))
    # Thresholded at 0.5: right on 0.9, 0.1, 0.6, 0.2, 0.3; wrong on 0.8, 0.4, 0.7, 0.5.
    assert got["accuracy"] == pytest.approx(5.0 / 9.0)


def test_rmse_in_grades_for_relevance() -> None:
    frame = FRAME.assign(label=FRAME["grade"])
    unit_scores = np.array([1.0, 0.0, 1.0 / 3.0, 0.0, 0.0, 2.0 / 3.0, 0.0, 0.0, 0.0])
    assert compute_metrics(["rmse"], frame, unit_scores, max_grade=3.0)["rmse"] == pytest.approx(0.0)


def test_perfect_and_reversed_rankings() -> None:
    perfect = FRAME["grade"].to_numpy() + 0.01 * np.arange(9)[::-1]
    got = compute_metrics(["auc", "mrr", "ndcg@10", "recall@10"], FRAME, perfect / perfect.max())
    assert got == pytest.approx({"auc": 1.0, "mrr": 1.0, "ndcg@10": 1.0, "recall@10": 1.0})
    reversed_ = 1.0 - perfect / perfect.max()
    assert compute_metrics(["auc"], FRAME, reversed_)["auc"] == pytest.approx(0.0)


def test_ties_never_favour_the_row_order() -> None:
    # One group, one positive among 20 rows, all scores equal. Ties are broken by a fixed
    # permutation of the rows, so over the 20 places the positive can take its rank takes every
    # value 1..20 once: the mean MRR is that of a random order (H_20 / 20), not 1.0 as a
    # positive-first order would give.
    mrrs = []
    for position in range(20):
        grades = np.zeros(20)
        grades[position] = 1.0
        frame = pd.DataFrame({"group": "g", "grade": grades, "label": grades})
        got = compute_metrics(["mrr", "auc"], frame, np.full(20, 0.5))
        assert got["auc"] == pytest.approx(0.5)
        mrrs.append(got["mrr"])
    assert np.mean(mrrs) == pytest.approx(sum(1.0 / r for r in range(1, 21)) / 20)


def test_undefined_metrics_are_nan() -> None:
    frame = pd.DataFrame({"group": ["a", "a"], "grade": [0.0, 0.0], "label": [0.0, 0.0]})
    got = compute_metrics(["auc", "mrr", "ndcg@5"], frame, np.array([0.2, 0.3]))
    assert all(math.isnan(value) for value in got.values())


def test_metric_names() -> None:
    assert parse_metric("ndcg@10") == ("ndcg", 10)
    assert parse_metric("recall@5") == ("recall", 5)
    assert parse_metric("auc") == ("auc", None)
    assert compute_metrics(["loss"], FRAME, SCORES) == {}
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric("precision@10")
    with pytest.raises(ValueError, match="scores for"):
        compute_metrics(["auc"], FRAME, SCORES[:3])


# --- baselines ------------------------------------------------------------------------------
def test_popularity_scores_are_smoothed_positive_rates() -> None:
    train = pd.DataFrame(
        {"product_id": ["hit"] * 20 + ["miss"] * 20, "grade": [1.0] * 18 + [0.0] * 2 + [0.0] * 20}
    )
    frame = pd.DataFrame({"product_id": ["hit", "miss", "new"]})
    hit, miss, new = baselines.popularity_scores(train, frame)
    assert new == pytest.approx(0.45)  # the overall rate
    assert hit == pytest.approx((18 + 10 * 0.45) / 30) and miss == pytest.approx((0 + 10 * 0.45) / 30)
    assert 0.0 <= miss < new < hit <= 1.0


def test_bm25_prefers_matching_text() -> None:
    frame = pd.DataFrame(
        {
            "context": ["red running shoes"] * 3 + [""],
            "product_text": ["red running shoes", "blue running shoes", "ceramic mug", "red running shoes"],
            "grade": [1.0, 0.0, 0.0, 0.0],
        }
    )
    scores = baselines.bm25_scores(frame)
    assert scores[0] > scores[1] > scores[2] == 0.0
    assert scores[3] == 0.0  # nothing to match


def test_baseline_metrics_on_a_prepared_split() -> None:
    rng = np.random.default_rng(0)
    records = []
    for q in range(12):
        for p in range(8):
            match = p % 2 == 0
            records.append(
                {
                    "query": f"word{q} thing",
                    "user_id": f"u{rng.integers(5)}",
                    "product_id": f"p{q}-{p}",
                    "title": f"word{q} thing {p}" if match else f"other stuff {p}",
                    "event": "click" if match and rng.random() < 0.8 else "impression",
                }
            )
    prepared = data.prepare_frame(pd.DataFrame(records), DatasetSpec(), "click-through", salt="s")
    names = ["auc", "ndcg@5", "mrr", "recall@5", "logloss"]
    result = baselines.baseline_metrics(names, prepared)
    assert set(result) == {"constant", "popularity", "bm25"}
    # Each baseline only where it means something: the constant cannot rank, BM25 is no click model.
    assert set(result["bm25"]) == set(result["popularity"]) == {"auc", "ndcg@5", "mrr", "recall@5"}
    assert set(result["constant"]) == {"logloss"}
    rate = prepared.train["label"].mean()
    assert result["constant"]["logloss"] == pytest.approx(log_loss(prepared.test["label"], [rate] * len(prepared.test)))
    # Clicks follow the query's words into the title: BM25 sees it, popularity (new products) cannot.
    assert result["bm25"]["auc"] > 0.8
    assert result["popularity"]["auc"] == pytest.approx(0.5)
