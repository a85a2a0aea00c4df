"""Property tests of the split: no query or user in two splits, every row in one split, and the
same assignment for the same data and seed whatever the row order."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recops.api.finetunejob import DatasetSpec
from recops.train import data
from recops.train.errors import DataError

EVENTS = ("impression", "click", "purchase")


@st.composite
def shop_logs(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=6, max_value=80))
    n_queries = draw(st.integers(min_value=2, max_value=12))
    n_users = draw(st.integers(min_value=2, max_value=10))
    row = st.tuples(
        st.integers(0, n_queries - 1),
        st.integers(0, n_users - 1),
        st.integers(0, 15),
        st.sampled_from(EVENTS),
        st.integers(0, 50),
        st.booleans(),
    )
    records = draw(st.lists(row, min_size=n, max_size=n))
    frame = pd.DataFrame(
        {
            "query": [f"q{q}" if has_query else None for q, _, _, _, _, has_query in records],
            "user_id": [f"user{u}" for _, u, _, _, _, _ in records],
            "product_id": [f"p{p}" for _, _, p, _, _, _ in records],
            "title": [f"title {p}" for _, _, p, _, _, _ in records],
            "event": [e for _, _, _, e, _, _ in records],
            "timestamp": [1_700_000_000 + t for _, _, _, _, t, _ in records],
        }
    )
    # Both classes, so that the label check never hides the split's behaviour.
    frame.loc[0, "event"], frame.loc[1, "event"] = "impression", "click"
    return frame


def prepared_or_none(frame: pd.DataFrame, by: str, seed: int) -> data.PreparedData | None:
    dataset = DatasetSpec.model_validate({"split": {"by": by, "validation": 0.2, "test": 0.2, "seed": seed}})
    try:
        return data.prepare_frame(frame, dataset, "click-through", salt="s", seed=seed)
    except DataError as error:
        # Legitimate refusals only: too few groups, or one class left in train.
        assert "at least 2" in str(error) or "single class" in str(error), str(error)
        return None


def splits(prepared: data.PreparedData) -> list[pd.DataFrame]:
    return [prepared.train, prepared.validation, prepared.test]


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(frame=shop_logs(), seed=st.integers(0, 2**16), by=st.sampled_from(["query", "user"]))
def test_no_group_straddles_two_splits(frame: pd.DataFrame, seed: int, by: str) -> None:
    prepared = prepared_or_none(frame, by, seed)
    if prepared is None:
        return
    key = "group" if by == "query" else "user"
    parts = [set(part[key].dropna()) for part in splits(prepared)]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert len(prepared.train) > 0 and len(prepared.test) > 0
    assert sum(len(part) for part in splits(prepared)) == prepared.report.rows_kept


@SETTINGS
@given(frame=shop_logs(), seed=st.integers(0, 2**16), by=st.sampled_from(["query", "user", "time", "random"]))
def test_same_data_and_seed_give_the_same_split(frame: pd.DataFrame, seed: int, by: str) -> None:
    first = prepared_or_none(frame, by, seed)
    second = prepared_or_none(frame, by, seed)
    if first is None:
        assert second is None
        return
    assert second is not None
    assert first.fingerprint == second.fingerprint
    for a, b in zip(splits(first), splits(second), strict=True):
        pd.testing.assert_frame_equal(a, b)
    if by in ("query", "user"):
        # Group splits do not depend on the order of the rows either.
        shuffled = prepared_or_none(frame.sample(frac=1.0, random_state=seed), by, seed)
        assert shuffled is not None
        assert shuffled.fingerprint == first.fingerprint
        key = "group" if by == "query" else "user"
        for a, b in zip(splits(first), splits(shuffled), strict=True):
            assert set(a[key].dropna()) == set(b[key].dropna())


@SETTINGS
@given(frame=shop_logs(), seed=st.integers(0, 2**16))
def test_time_split_puts_the_latest_rows_in_test(frame: pd.DataFrame, seed: int) -> None:
    prepared = prepared_or_none(frame, "time", seed)
    if prepared is None:
        return
    assert prepared.train["timestamp"].max() <= prepared.test["timestamp"].min()
    if len(prepared.validation):
        assert prepared.train["timestamp"].max() <= prepared.validation["timestamp"].min()
        assert prepared.validation["timestamp"].max() <= prepared.test["timestamp"].min()
