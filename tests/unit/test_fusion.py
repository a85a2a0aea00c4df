"""The learnt fusion of a model's output with BM25 and popularity (recops.fusion), and the user history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recops.api.contracts import with_history
from recops.api.finetunejob import DatasetSpec
from recops.fusion import FEATURES, Fusion, fit_fusion
from recops.train import data
from recops.train.metrics import compute_metrics
from recops.train.modelcard import verdict

WORDS = ["red", "blue", "wool", "boots", "jacket", "mug", "lamp", "rug", "tent", "watch"]


def shop_rows(seed: int, groups: int = 30, per_group: int = 12) -> pd.DataFrame:
    """Clicks follow the query's words in the title and a hidden per-product appeal that popularity sees."""
    rng = np.random.default_rng(seed)
    appeal = np.random.default_rng(99).normal(0, 1.5, 40)  # the same products in every split
    rows = []
    for g in range(groups):
        query = " ".join(rng.choice(WORDS, 2, replace=False))
        for _ in range(per_group):
            product = int(rng.integers(40))
            title = " ".join(rng.choice(WORDS, 3, replace=False))
            overlap = len(set(query.split()) & set(title.split()))
            click = rng.random() < 1 / (1 + np.exp(-(1.5 * overlap + appeal[product] - 1.5)))
            rows.append({"group": f"q{g}", "context": query, "product_text": title, "product_id": f"p{product}",
                         "label": float(click), "grade": float(click)})
    return pd.DataFrame(rows)


def fitted(kind: str, frame: pd.DataFrame, train: pd.DataFrame, raw: np.ndarray) -> Fusion:
    return fit_fusion(kind, raw, frame["context"].tolist(), frame["product_text"].tolist(),
                      frame["product_id"].tolist(), frame["label"].to_numpy(), frame["group"].tolist(),
                      corpus=set(frame["product_text"]) | set(train["product_text"]),
                      train_items=train["product_id"].tolist(), train_targets=train["label"].tolist())


def test_the_fusion_ranks_better_than_its_parts_and_is_what_is_loaded(tmp_path: Path) -> None:
    train, validation, test = shop_rows(1, groups=200), shop_rows(2), shop_rows(3)
    noise = np.random.default_rng(0)
    fusion = fitted("logistic", validation, train, noise.normal(size=len(validation)))  # a model that learnt nothing
    assert fusion.weights[FEATURES.index("bm25")] > 0 and fusion.weights[FEATURES.index("popularity")] > 0
    assert abs(fusion.weights[FEATURES.index("model")]) < fusion.weights[FEATURES.index("bm25")]

    raw = noise.normal(size=len(test))
    fused = np.array(fusion.apply(raw, test["context"].tolist(), test["product_text"].tolist(), test["product_id"].tolist()))
    bm25 = fusion.features(raw, test["context"].tolist(), test["product_text"].tolist(), test["product_id"].tolist())[:, 1]
    for metric in ("ndcg@10", "auc"):
        assert compute_metrics([metric], test, 1 / (1 + np.exp(-fused)))[metric] > compute_metrics([metric], test, bm25)[metric]
    # A calibrated log-odds: the mean predicted rate is near the observed one.
    assert np.mean(1 / (1 + np.exp(-fused))) == pytest.approx(test["label"].mean(), abs=0.08)

    fusion.save(tmp_path)
    again = Fusion.load(tmp_path)
    assert again.apply(raw, test["context"].tolist(), test["product_text"].tolist(),
                       test["product_id"].tolist()) == pytest.approx(fused.tolist())
    # An unknown item (or none: /v2 infer has no ids) gets the overall popularity.
    unknown = again.apply([0.0, 0.0], ["red mug"] * 2, ["red mug"] * 2, ["never-seen", None])
    assert unknown[0] == pytest.approx(unknown[1])


def test_the_linear_fusion_predicts_grades() -> None:
    train, validation = shop_rows(4, groups=60), shop_rows(5)
    validation = validation.assign(label=validation["label"] * 2 + 1)  # grades 1..3
    fusion = fitted("linear", validation, train.assign(label=train["label"] * 2 + 1), np.zeros(len(validation)))
    predicted = np.array(fusion.apply(np.zeros(len(validation)), validation["context"].tolist(),
                                      validation["product_text"].tolist(), validation["product_id"].tolist()))
    constant = np.sqrt(np.mean((validation["label"] - validation["label"].mean()) ** 2))
    assert np.sqrt(np.mean((predicted - validation["label"]) ** 2)) < constant


def test_user_history_holds_only_earlier_liked_items() -> None:
    events = pd.DataFrame({
        "user_id": ["u1"] * 5 + ["u2"],
        "product_id": ["a", "b", "c", "d", "e", "a"],
        "title": ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Alpha"],
        "event": ["click", "impression", "click", "click", "click", "click"],
        "timestamp": [1, 2, 3, 3, 4, 1],
        "user_context": ["age 30"] * 5 + [None],
    })
    spec = DatasetSpec.model_validate({"fields": {"query": None}, "userHistory": 2, "split": {"by": "random"},
                                       "pseudonymisation": {"enabled": False}})
    prepared = data.prepare_frame(events, spec, "click-through", salt="s")
    rows = pd.concat([prepared.train, prepared.validation, prepared.test]).set_index(["user", "product_id"])
    assert rows.loc[("u1", "a"), "context"] == "user: age 30"  # nothing before it
    assert rows.loc[("u1", "b"), "context"] == "user: " + with_history("age 30", ["Alpha"])
    # c and d happened at the same time: neither sees the other; b was not liked.
    assert rows.loc[("u1", "c"), "context"] == rows.loc[("u1", "d"), "context"] == "user: age 30; liked: Alpha"
    assert rows.loc[("u1", "e"), "context"] == "user: age 30; liked: Delta; Charlie"  # the last 2, newest first
    assert rows.loc[("u2", "a"), "context"] == ""  # another user's history never leaks in

    with pytest.raises(data.DataError, match="userHistory needs a user and a timestamp"):
        data.prepare_frame(events.drop(columns=["timestamp"]), spec, "click-through", salt="s")


def test_the_card_says_plainly_what_the_model_does_not_beat() -> None:
    lines = "\n".join(verdict({"ndcg@10": 0.40, "logloss": 0.50},
                               {"constant": {"logloss": 0.45}, "popularity": {"ndcg@10": 0.30}, "bm25": {"ndcg@10": 0.42}},
                               {"ndcg@10": 0.40}))
    assert "does not beat" in lines
    assert "ndcg@10: bm25 0.4200 vs model 0.4000" in lines and "logloss: constant 0.4500 vs model 0.5000" in lines
    assert "current model 0.4000" in lines  # a tie does not beat
    assert "popularity" not in lines
