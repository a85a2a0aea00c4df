"""The learnt fusion of a model's output with BM25 and popularity (recops.fusion), and the user history."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recops.api.contracts import MAX_USER_RATINGS, with_history
from recops.api.finetunejob import DatasetSpec
from recops.fusion import FEATURES, MAX_PRIOR_WEIGHT, Fusion, fit_fusion, prior_weight
from recops.serve.validation import Limits, parse_rank
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


def rated_events() -> pd.DataFrame:
    """u1 rates a..f over time (c and d at once); u2 rates a once; the oldest rows are the ones maxRows cuts."""
    return pd.DataFrame({
        "user_id": ["u1"] * 6 + ["u2"],
        "product_id": ["a", "b", "c", "d", "e", "f", "a"],
        "title": ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Alpha"],
        "rating": [5.0, 1.0, 4.0, 2.0, 3.0, 5.0, 4.0],
        "timestamp": [1, 2, 3, 3, 4, 5, 6],
    })


def test_each_row_sees_only_its_users_strictly_earlier_events_even_those_max_rows_cut() -> None:
    spec = DatasetSpec.model_validate({"fields": {"query": None, "label": "rating"}, "maxRows": 5,
                                       "split": {"by": "random"}, "pseudonymisation": {"enabled": False}})
    prepared = data.prepare_frame(rated_events(), spec, "relevance", salt="s")
    rows = pd.concat([prepared.train, prepared.validation, prepared.test]).set_index(["user", "product_id"])
    assert len(rows) == 5  # c to f and u2's a: the newest
    # c and d happened at once: neither is before the other. a and b are, though maxRows left them out of every split.
    assert rows.loc[("u1", "c"), "ratings"] == rows.loc[("u1", "d"), "ratings"] == (("a", 5.0), ("b", 1.0))
    assert rows.loc[("u1", "f"), "ratings"] == (("a", 5.0), ("b", 1.0), ("c", 4.0), ("d", 2.0), ("e", 3.0))
    assert rows.loc[("u2", "a"), "ratings"] == ()  # another user's events never leak in
    # The rows the cut left out are all older than every kept one, and feed the item statistics.
    assert prepared.earlier is not None and sorted(prepared.earlier["product_id"]) == ["a", "b"]
    assert len(prepared.statistics_rows()) == len(prepared.train) + 2

    # Untimed data: "earlier" means nothing, so no row has ratings and a sample's left-out rows are not kept.
    untimed = data.prepare_frame(rated_events().drop(columns=["timestamp"]), spec, "relevance", salt="s")
    assert untimed.earlier is None
    assert all(r == () for r in pd.concat([untimed.train, untimed.validation, untimed.test])["ratings"])


def test_the_user_offset_is_the_users_shrunk_residual_and_the_server_computes_the_same() -> None:
    fusion = Fusion(kind="linear", weights=[0.0, 0.0, 1.0, 1.0], bias=0.0, means=[0.0] * 4, scales=[1.0] * 4,
                    bm25_idf={}, bm25_average_length=1.0, bm25_default_idf=1.0,
                    popularity={"a": 4.0, "b": 2.0}, popularity_default=3.0, user_prior_weight=2.0)
    # (5 - 4) + (3 - 2) + (4 - 3: unknown item) over 3 events + 2 pseudo-events of no offset.
    assert fusion.user_offset([("a", 5.0), ("b", 3.0), ("z", 4.0)]) == pytest.approx(3 / 5)
    assert fusion.user_offset([]) == fusion.user_offset(None) == 0.0
    # Users that do not differ (or no users to tell): no offset at all, whatever the events.
    assert dataclasses.replace(fusion, user_prior_weight=MAX_PRIOR_WEIGHT).user_offset([("a", 5.0)] * 10) == 0.0
    # Only the newest MAX_USER_RATINGS count.
    many = [("a", 1.0)] * 50 + [("a", 5.0)] * MAX_USER_RATINGS
    assert fusion.user_offset(many) == pytest.approx(MAX_USER_RATINGS / (MAX_USER_RATINGS + 2))
    # The served score adds the offset to the item's popularity; a request's ratings as the parser gives them
    # produce the evaluation's score of a prepared row with the same earlier events.
    request = parse_rank({"user": {"ratings": [{"id": "a", "grade": 5}, {"id": "b", "grade": 3}, {"id": "z", "grade": 4}]},
                          "candidates": [{"id": "b", "text": "Bravo"}]}, Limits(10, 100))
    served = fusion.apply([0.0], [""], ["Bravo"], ["b"], [request.user_ratings])
    evaluated = fusion.apply([0.0], [""], ["Bravo"], ["b"], [(("a", 5.0), ("b", 3.0), ("z", 4.0))])
    assert served == evaluated == pytest.approx([2.0 + 3 / 5])
    # Click-through: an event counts as clicked or not, against the item's rate.
    clicks = dataclasses.replace(fusion, kind="logistic", popularity={"a": 0.25}, popularity_default=0.5)
    assert clicks.user_offset([("a", 2.0), ("a", 0.0)]) == pytest.approx((0.75 - 0.25) / 4)


def test_prior_weights_are_fitted_from_how_much_groups_differ() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(200), 20).astype(str)
    alike = rng.normal(0, 1, len(groups))
    apart = alike + np.repeat(rng.normal(0, 0.5, 200), 20)
    assert prior_weight(groups, apart) == pytest.approx(4, rel=0.3)  # within variance 1, between 0.25
    assert prior_weight(groups, alike) > 20  # the groups do not differ: their means are hardly trusted
    assert prior_weight(["a"], [1.0]) == MAX_PRIOR_WEIGHT


def test_the_relevance_fusion_learns_user_levels_and_takes_its_level_from_the_train_rows() -> None:
    """Users grade an item's quality plus their own generosity; validation holds a few unusually generous users."""
    rng = np.random.default_rng(5)
    quality = rng.normal(3.0, 0.7, 60)

    def graded(users: range, generosity: np.ndarray) -> pd.DataFrame:
        rows = []
        for user in users:
            ratings: list[tuple[str, float]] = []
            for _ in range(25):
                item = int(rng.integers(60))
                grade = float(quality[item] + generosity[user] + rng.normal(0, 0.5))
                rows.append({"user": f"u{user}", "product_id": f"p{item}", "label": grade, "ratings": tuple(ratings),
                             "context": "", "product_text": f"film {item}", "group": f"u{user}"})
                ratings.append((f"p{item}", grade))
        return pd.DataFrame(rows)

    generosity = rng.normal(0, 0.8, 300)
    train, test = graded(range(200), generosity), graded(range(200, 300), generosity)
    validation = graded(range(0, 4), generosity + 1.0)  # four users, all a grade above what they usually give
    fusion = fit_fusion("linear", np.zeros(len(validation)), validation["context"].tolist(),
                        validation["product_text"].tolist(), validation["product_id"].tolist(),
                        validation["label"].to_numpy(), validation["group"].tolist(), corpus=set(train["product_text"]),
                        train_items=train["product_id"].tolist(), train_targets=train["label"].tolist(),
                        ratings=validation["ratings"].tolist(), train_users=train["user"].tolist())
    assert fusion.weights[FEATURES.index("user")] > 0

    def rmse(ratings: list[object] | None) -> float:
        predicted = np.array(fusion.apply(np.zeros(len(test)), test["context"].tolist(), test["product_text"].tolist(),
                                          test["product_id"].tolist(), ratings))  # type: ignore[arg-type]
        return float(np.sqrt(np.mean((predicted - test["label"].to_numpy()) ** 2)))

    constant = float(np.sqrt(np.mean((test["label"] - train["label"].mean()) ** 2)))
    with_users, without = rmse(test["ratings"].tolist()), rmse(None)
    assert with_users < 0.8 * without < 0.8 * constant
    # The validation users' generosity (+1) did not become everyone's: a user without history gets about the
    # item's popularity, the train rows' level.
    first = test[test["ratings"].map(len) == 0]
    predicted = fusion.apply(np.zeros(len(first)), first["context"].tolist(), first["product_text"].tolist(),
                             first["product_id"].tolist(), first["ratings"].tolist())
    popularity = fusion.popularity_feature(first["product_id"].tolist())
    assert np.mean(np.subtract(predicted, popularity)) == pytest.approx(0.0, abs=0.25)


def test_a_fusion_written_before_the_user_feature_loads_and_ignores_ratings(tmp_path: Path) -> None:
    old = {"kind": "linear", "weights": [0.5, 0.2, 1.0], "bias": 3.0, "means": [0.0, 0.0, 3.0], "scales": [1.0, 1.0, 1.0],
           "bm25_idf": {}, "bm25_average_length": 1.0, "bm25_default_idf": 1.0, "popularity": {"a": 4.0},
           "popularity_default": 3.0, "fitted_on": {"rows": 100}}
    (tmp_path / "fusion.json").write_text(json.dumps(old))
    fusion = Fusion.load(tmp_path)
    assert len(fusion.weights) == len(FEATURES)
    assert fusion.apply([1.0], [""], ["x"], ["a"], [(("a", 5.0),)]) == pytest.approx([3.0 + 0.5 + 1.0])


def taste_rows(users: range, taste: np.ndarray, rng: np.random.Generator, quality: np.ndarray) -> pd.DataFrame:
    """Items 0-29 are one genre, 30-59 another; a user's taste lifts one genre and lowers the other."""
    rows = []
    for user in users:
        ratings: list[tuple[str, float]] = []
        for _ in range(30):
            item = int(rng.integers(60))
            grade = float(quality[item] + taste[user] * (1 if item < 30 else -1) + rng.normal(0, 0.5))
            rows.append({"user": f"u{user}", "product_id": f"p{item}", "label": grade, "ratings": tuple(ratings),
                         "context": "", "product_text": f"film {item}", "group": f"u{user}"})
            ratings.append((f"p{item}", grade))
    return pd.DataFrame(rows)


def fitted_on_users(kind: str, validation: pd.DataFrame, train: pd.DataFrame, users: bool = True,
                    neighbourhood: bool | None = None) -> Fusion:
    return fit_fusion(kind, np.zeros(len(validation)), validation["context"].tolist(),
                      validation["product_text"].tolist(), validation["product_id"].tolist(),
                      validation["label"].to_numpy(), validation["group"].tolist(), corpus=set(train["product_text"]),
                      train_items=train["product_id"].tolist(), train_targets=train["label"].tolist(),
                      ratings=validation["ratings"].tolist(), train_users=train["user"].tolist() if users else None,
                      neighbourhood=neighbourhood)


def test_the_neighbourhood_reads_the_users_taste_on_similar_items_and_only_the_train_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    quality, taste = rng.normal(3.0, 0.5, 60), rng.normal(0, 1.0, 400)
    train, validation, test = (taste_rows(range(0, 200), taste, rng, quality), taste_rows(range(200, 300), taste, rng, quality),
                               taste_rows(range(300, 400), taste, rng, quality))
    fusion = fitted_on_users("linear", validation, train)
    assert fusion.neighbours is not None and fusion.fitted_on["neighbourPairs"] > 0
    neighbours = fusion.neighbours
    rows = neighbours.rows(["p1", "p40"])
    similar, opposite = neighbours.predict("p0", rows[:1], np.ones(1)), neighbours.predict("p0", rows[1:], np.ones(1))
    assert similar > 0 > opposite  # same genre: alike; the other genre: opposite
    assert fusion.weights[FEATURES.index("neighbours")] > 0

    def rmse(model: Fusion) -> float:
        predicted = np.array(model.apply(np.zeros(len(test)), test["context"].tolist(), test["product_text"].tolist(),
                                         test["product_id"].tolist(), test["ratings"].tolist()))
        return float(np.sqrt(np.mean((predicted - test["label"].to_numpy()) ** 2)))

    without = dataclasses.replace(fusion, neighbours=None)
    assert rmse(fusion) < 0.85 * rmse(without)

    # The held-out labels never reach the neighbourhood: other validation grades leave it as it was.
    shuffled = validation.assign(label=rng.permutation(validation["label"].to_numpy()))
    again = fitted_on_users("linear", shuffled, train).neighbours
    assert again is not None
    for name in ("ids", "indptr", "indices", "similarity"):
        np.testing.assert_array_equal(getattr(again, name), getattr(neighbours, name))
    # A row's feature reads only the events it is given (its user's earlier ones): none, no neighbourhood.
    assert fusion.neighbour_feature(["p0", "p0"], [(), None], 2) == [0.0, 0.0]

    # Saved beside fusion.json and loaded as it was; a request's parsed ratings, shared by its candidates,
    # score as the prepared rows with the same earlier events do.
    fusion.save(tmp_path)
    assert (tmp_path / "neighbours.npz").exists()
    loaded = Fusion.load(tmp_path)
    events = test["ratings"].iloc[-1]
    request = parse_rank({"user": {"ratings": [{"id": item, "grade": grade} for item, grade in events]},
                          "candidates": [{"id": f"p{i}", "text": f"film {i}"} for i in (0, 31, 7)]}, Limits(10, 100))
    candidates = [f"p{i}" for i in (0, 31, 7)]
    served = loaded.apply([0.0] * 3, [""] * 3, [f"film {i}" for i in (0, 31, 7)], candidates, [request.user_ratings] * 3)
    rows_events = [tuple(list(events)) for _ in range(3)]  # one object per prepared row
    evaluated = fusion.apply([0.0] * 3, [""] * 3, [f"film {i}" for i in (0, 31, 7)], candidates, rows_events)
    assert served == pytest.approx(evaluated, abs=1e-9)
    assert len(set(np.round(served, 6))) == 3

    # A truncated neighbourhood file is a ValueError (the server's clean "cannot load the fusion"), not a crash.
    (tmp_path / "neighbours.npz").write_bytes((tmp_path / "neighbours.npz").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"neighbours\.npz"):
        Fusion.load(tmp_path)


def test_no_neighbourhood_without_users_nor_for_click_through() -> None:
    rng = np.random.default_rng(12)
    quality, taste = rng.normal(3.0, 0.5, 60), rng.normal(0, 1.0, 300)
    train, validation = taste_rows(range(0, 200), taste, rng, quality), taste_rows(range(200, 300), taste, rng, quality)
    untimed = fitted_on_users("linear", validation.assign(ratings=[()] * len(validation)), train, users=False)
    assert untimed.neighbours is None and untimed.weights[FEATURES.index("neighbours")] == 0.0
    clicks = train.assign(label=(train["label"] > 3.0).astype(float))
    assert fitted_on_users("logistic", validation.assign(label=(validation["label"] > 3.0).astype(float)),
                           clicks).neighbours is None


def test_click_through_on_users_fits_the_neighbourhood() -> None:
    """Recommendation without a query (groups are users): liked = a grade above 3 of taste_rows' films."""
    rng = np.random.default_rng(13)
    quality, taste = rng.normal(3.0, 0.5, 60), rng.normal(0, 1.0, 400)
    train, validation, test = (taste_rows(range(0, 200), taste, rng, quality), taste_rows(range(200, 300), taste, rng, quality),
                               taste_rows(range(300, 400), taste, rng, quality))
    liked = [frame.assign(grade=(frame["label"] > 3.0).astype(float), label=(frame["label"] > 3.0).astype(float))
             for frame in (train, validation, test)]
    train, validation, test = liked

    def probabilities(model: Fusion) -> np.ndarray:
        raw = np.array(model.apply(np.zeros(len(test)), test["context"].tolist(), test["product_text"].tolist(),
                                   test["product_id"].tolist(), test["ratings"].tolist()))
        return 1.0 / (1.0 + np.exp(-raw))

    assert fitted_on_users("logistic", validation, train).neighbours is None  # the default: linear fusions only
    fusion = fitted_on_users("logistic", validation, train, neighbourhood=True)
    assert fusion.neighbours is not None and fusion.weights[FEATURES.index("neighbours")] > 0
    assert fusion.weights[FEATURES.index("user")] == 0.0
    metrics = ["ndcg@10", "logloss"]
    served = compute_metrics(metrics, test, probabilities(fusion))
    without = compute_metrics(metrics, test, probabilities(dataclasses.replace(fusion, neighbours=None)))
    assert served["ndcg@10"] > without["ndcg@10"] + 0.02  # the user's taste on similar films orders their list
    constant = compute_metrics(["logloss"], test, np.full(len(test), train["label"].mean()))["logloss"]
    assert served["logloss"] < constant  # still a calibrated log-odds, without the offset


def test_groups_are_users_only_without_a_query_and_with_users() -> None:
    from recops.train.evaluate import groups_are_users

    users = pd.DataFrame({"query": [None, None], "user": ["u1", "u2"]})
    assert groups_are_users(users)
    assert not groups_are_users(users.assign(query=["boots", None]))
    assert not groups_are_users(users.assign(user=[None, None]))


def click_rows(users: range, level: np.ndarray, appeal: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Users click at their own level (some click everything) on items of their own appeal; each group (a query)
    mixes users, as an offline split of logged traffic does."""
    rows = []
    for user in users:
        ratings: list[tuple[str, float]] = []
        for _ in range(20):
            item = int(rng.integers(len(appeal)))
            clicked = float(rng.random() < 1.0 / (1.0 + np.exp(-(appeal[item] + level[user] - 1.0))))
            rows.append({"user": f"u{user}", "product_id": f"p{item}", "label": clicked, "ratings": tuple(ratings),
                         "context": "", "product_text": f"item {item}", "group": f"q{int(rng.integers(10))}"})
            ratings.append((f"p{item}", clicked))
    return pd.DataFrame(rows)


def test_a_click_fusion_gives_the_user_offset_no_weight_so_it_never_reorders_a_group() -> None:
    """The offset is informative here (users' click levels differ), yet constant within a served request: fitted on
    a few validation rows it only reorders an offline group that mixes users, so it weighs nothing."""
    rng = np.random.default_rng(4)
    level, appeal = rng.normal(0, 1.5, 300), rng.normal(0, 1.0, 40)
    train, validation = click_rows(range(0, 200), level, appeal, rng), click_rows(range(200, 300), level, appeal, rng)
    fusion = fitted_on_users("logistic", validation, train)
    assert fusion.user_prior_weight < MAX_PRIOR_WEIGHT  # the offset was measured, and differs between users
    assert fusion.weights[FEATURES.index("user")] == 0.0
    assert fusion.weights[FEATURES.index("popularity")] > 0

    def scores(ratings: list[object] | None) -> list[float]:
        return fusion.apply(np.zeros(len(validation)), validation["context"].tolist(),
                            validation["product_text"].tolist(), validation["product_id"].tolist(), ratings)  # type: ignore[arg-type]

    assert scores(validation["ratings"].tolist()) == pytest.approx(scores(None))
