"""The synthetic shop: shape, funnel, text-learnable relevance and the preference shift."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recops import cli
from recops.api.finetunejob import DatasetSpec
from recops.shop.synth import generate_shop
from recops.train import data

DEFAULT_FIELDS = ["query", "user_id", "product_id", "title", "brand", "category", "price", "event", "timestamp"]


def clicked_colours(shop: dict[str, pd.DataFrame], days: slice) -> pd.Series:
    events = shop["events"]
    day = (events["timestamp"] - events["timestamp"].min()).dt.days
    clicks = events[(events["event"] == "click") & day.between(days.start, days.stop - 1)]
    colour = shop["catalogue"].set_index("product_id")["colour"]
    return clicks["product_id"].map(colour).value_counts(normalize=True)


def total_variation(a: pd.Series, b: pd.Series) -> float:
    return float(0.5 * a.sub(b, fill_value=0.0).abs().sum())


def test_shape_sizes_and_determinism() -> None:
    shop = generate_shop(users=30, products=60, sessions=80, days=3, seed=5)
    again = generate_shop(users=30, products=60, sessions=80, days=3, seed=5)
    other = generate_shop(users=30, products=60, sessions=80, days=3, seed=6)
    events = shop["events"]
    pd.testing.assert_frame_equal(events, again["events"])
    assert not events["product_id"].equals(other["events"]["product_id"])
    assert set(DEFAULT_FIELDS) <= set(events.columns)
    assert (events["event"] == "impression").sum() == 80 * 10
    assert len(shop["catalogue"]) == 60 and shop["catalogue"]["product_id"].is_unique
    assert (shop["catalogue"]["price"] > 0).all()
    span = events["timestamp"].max() - events["timestamp"].min()
    assert span < pd.Timedelta(days=3, hours=1)


def test_funnel_is_ordered() -> None:
    events = generate_shop(users=50, products=100, sessions=400, seed=1)["events"]
    pairs = {
        name: set(zip(events.loc[events["event"] == name, "request_id"], events.loc[events["event"] == name, "product_id"], strict=True))
        for name in ("impression", "click", "add_to_cart", "purchase")
    }
    assert pairs["purchase"] <= pairs["add_to_cart"] <= pairs["click"] <= pairs["impression"]
    assert 0 < len(pairs["purchase"]) < len(pairs["add_to_cart"]) < len(pairs["click"]) < len(pairs["impression"])


def test_relevance_follows_words_of_the_query_in_the_title() -> None:
    events = generate_shop(users=100, products=200, sessions=1500, seed=2)["events"]
    shown = events[events["event"] == "impression"]
    clicked = set(zip(events.loc[events["event"] == "click", "request_id"], events.loc[events["event"] == "click", "product_id"], strict=True))
    was_clicked = np.array([pair in clicked for pair in zip(shown["request_id"], shown["product_id"], strict=True)])
    overlap = np.array(
        [len(set(q.split()) & set(t.lower().split())) for q, t in zip(shown["query"], shown["title"], strict=True)]
    )
    ctr = [was_clicked[overlap == n].mean() for n in range(3) if (overlap == n).sum() > 100]
    assert len(ctr) >= 2 and all(a < b for a, b in itertools.pairwise(ctr))


def test_preference_shift_changes_what_users_click() -> None:
    size = {"users": 300, "products": 300, "sessions": 3000, "days": 10, "seed": 11}
    shifted = generate_shop(**size, shift_day=5)
    steady = generate_shop(**size)
    change = total_variation(clicked_colours(shifted, slice(0, 5)), clicked_colours(shifted, slice(5, 10)))
    noise = total_variation(clicked_colours(steady, slice(0, 5)), clicked_colours(steady, slice(5, 10)))
    assert change > 0.15
    assert noise < 0.06
    assert change > 3 * noise
    # What the shop shows does not change: the users do.
    shown = shifted["events"][shifted["events"]["event"] == "impression"]
    day = (shown["timestamp"] - shown["timestamp"].min()).dt.days
    colour = shifted["catalogue"].set_index("product_id")["colour"]
    before = shown.loc[day < 5, "product_id"].map(colour).value_counts(normalize=True)
    after = shown.loc[day >= 5, "product_id"].map(colour).value_counts(normalize=True)
    assert total_variation(before, after) < 0.06


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_cli_writes_a_shop_that_prepares(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shop"
    argv = ["data", "synth", "--out", str(out), "--format", fmt, "--users", "20", "--products", "40"]
    argv += ["--sessions", "60", "--days", "3", "--shift-day", "1", "--seed", "3"]
    assert cli.main(argv) == 0
    assert "impressions" in capsys.readouterr().out
    assert (out / f"events.{fmt}").exists() and (out / f"catalogue.{fmt}").exists()
    prepared = data.prepare(DatasetSpec(uri=str(out / f"events.{fmt}")), "click-through", salt="s")
    assert prepared.report.rows_kept == 600  # one row per impression after merging feedback
    assert dict(prepared.report.steps)["feedback_merged"] > 0
    assert set(pd.concat([prepared.train, prepared.test])["label"]) == {0.0, 1.0}


def test_cli_partitions_by_day(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    argv = ["data", "synth", "--out", str(out), "--users", "10", "--products", "30", "--sessions", "40", "--days", "4"]
    assert cli.main([*argv, "--partition-by-day"]) == 0
    assert len(list((out / "events").glob("dt=*/part-0.parquet"))) == 4
    assert len(data.load_frame(DatasetSpec(uri=str(out / "events")))) == 400
