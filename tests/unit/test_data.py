"""Loading, field mapping, cleaning steps and pseudonymisation of recops.train.data, on crafted rows."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recops.api import contracts
from recops.api.finetunejob import DatasetSpec
from recops.train import data
from recops.train.errors import DataError

SALT = "test-salt"


def spec(uri: str | Path | None = None, **overrides: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"uri": str(uri) if uri is not None else None, **overrides})


def rows(n_queries: int = 6, per_query: int = 6) -> pd.DataFrame:
    """A small clean shop log: each query shows a few products; every other one is clicked."""
    records = []
    for q in range(n_queries):
        for i in range(per_query):
            records.append(
                {
                    "query": f"query {q}",
                    "user_id": f"customer-{(q * per_query + i) % 7}",
                    "product_id": f"p{q}-{i}",
                    "title": f"product {i} for query {q}",
                    "event": ["impression", "click", "add_to_cart", "purchase"][i % 4],
                    "timestamp": 1_767_225_600 + q * 3600 + i,
                }
            )
    return pd.DataFrame(records)


def steps(prepared: data.PreparedData) -> dict[str, int]:
    return dict(prepared.report.steps)


def all_rows(prepared: data.PreparedData) -> pd.DataFrame:
    return pd.concat([prepared.train, prepared.validation, prepared.test], ignore_index=True)


def prepare(frame: pd.DataFrame, task: str = "click-through", **overrides: Any) -> data.PreparedData:
    return data.prepare_frame(frame, spec(**overrides), task, salt=SALT)


# --- loading --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_reads_each_format_with_auto_detection(tmp_path: Path, fmt: str) -> None:
    frame = rows()
    path = tmp_path / f"events.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)
    loaded = data.load_frame(spec(path))
    assert len(loaded) == len(frame)
    assert set(frame.columns) <= set(loaded.columns)
    prepared = data.prepare(spec(path), "click-through", salt=SALT)
    assert prepared.report.rows_read == len(frame) == prepared.report.rows_kept
    assert list(prepared.train.columns) == list(data.COLUMNS)


def test_directory_glob_file_and_pvc_uris_read_partitions_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = rows()
    claim = tmp_path / "pvc" / "shop-data"
    for day, part in enumerate([frame.iloc[:10], frame.iloc[10:20], frame.iloc[20:]]):
        folder = claim / "events" / f"dt=2026-01-0{day + 1}"
        folder.mkdir(parents=True)
        part.to_parquet(folder / "part-0.parquet")
    (claim / "events" / "_SUCCESS").write_text("")  # markers are not data
    (claim / "events" / "dt=2026-01-01" / "empty.parquet").write_bytes(b"")  # neither are empty files
    root = claim / "events"
    monkeypatch.setenv(contracts.ENV_PVC_ROOT, str(tmp_path / "pvc"))
    for uri in (str(root), f"file://{root}", "pvc://shop-data/events", f"{root}/dt=*/*.parquet"):
        loaded = data.load_frame(spec(uri))
        assert sorted(loaded["product_id"]) == sorted(frame["product_id"]), uri


def test_serving_event_log_collapses_feedback_onto_impressions(tmp_path: Path) -> None:
    """Records as the server writes them: impressions with text, feedback without."""

    def record(event: str, request: str, product: str, ts: str, **extra: Any) -> dict[str, Any]:
        return {"ts": ts, "event": event, "request_id": request, "product_id": product, "track": "stable", **extra}

    shown = {"query": "red shoes", "user_id": "u_already_pseudonymised", "user_context": None, "position": 0, "score": 0.7}
    hour10 = [
        record("impression", "r1", "a", "2026-01-05T10:00:00Z", title="red running shoes", **shown),
        record("impression", "r1", "b", "2026-01-05T10:00:00Z", title="blue sandals", **shown),
        record("impression", "r2", "a", "2026-01-05T10:30:00Z", title="red running shoes", **shown),
    ]
    hour11 = [
        record("click", "r1", "a", "2026-01-05T11:01:00Z"),
        record("purchase", "r1", "a", "2026-01-05T11:09:00Z"),
        record("add_to_cart", "r1", "a", "2026-01-05T11:05:00Z"),
        record("click", "r9", "z", "2026-01-05T11:02:00Z"),  # its impression is not in the window
    ]
    for hour, records in (("10", hour10), ("11", hour11)):
        path = Path(contracts.event_log_path(str(tmp_path / "log"), ("2026-01-05", hour), "server-0"))
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))

    loaded = data.load_frame(spec(tmp_path / "log"))
    by_key = loaded.set_index(["request_id", "product_id"])
    assert len(loaded) == 4  # r1/a, r1/b, r2/a and the orphan r9/z
    assert by_key.loc[("r1", "a"), "event"] == "purchase"
    assert by_key.loc[("r1", "a"), "title"] == "red running shoes"
    assert by_key.loc[("r1", "a"), "query"] == "red shoes"
    assert by_key.loc[("r1", "b"), "event"] == "impression"
    # The impression's time is the row's time, in the default field mapping's column.
    when = pd.to_datetime(by_key.loc[("r1", "a"), "timestamp"], utc=True)
    assert when == pd.Timestamp("2026-01-05T10:00:00Z")

    prepared = data.prepare(spec(tmp_path / "log", split={"by": "random", "test": 0.25, "validation": 0.0}), "relevance", salt=SALT)
    assert steps(prepared)["feedback_merged"] == 3
    assert steps(prepared)["missing_fields"] == 1  # the orphan has no text
    kept = all_rows(prepared).set_index("product_id")
    assert sorted(all_rows(prepared)["grade"]) == [0.0, 0.0, 3.0]
    assert kept.loc["b", "timestamp"] == pd.Timestamp("2026-01-05T10:00:00Z").timestamp()


def test_event_records_written_twice_are_duplicates_not_feedback() -> None:
    impression = {"request_id": "r1", "event": "impression", "query": "mug", "user_id": "u1", "title": "blue mug", "ts": "2026-01-01T00:00:00Z"}
    records = [
        {**impression, "product_id": "a"},
        {**impression, "product_id": "b"},
        {**impression, "product_id": "b"},  # written twice
        {"request_id": "r1", "event": "click", "product_id": "a", "ts": "2026-01-01T00:01:00Z"},
        {"request_id": "r1", "event": "click", "product_id": "a", "ts": "2026-01-01T00:01:00Z"},  # twice
    ]
    prepared = prepare(pd.DataFrame(records), "domain-pretrain", split={"by": "random", "validation": 0.0, "test": 0.5})
    assert prepared.report.steps[:2] == [("duplicates", 2), ("feedback_merged", 1)]
    assert [name for name, _ in prepared.report.steps].count("duplicates") == 1
    assert prepared.report.rows_kept == 2


def test_the_exploration_slice_of_an_event_log_is_marked_and_other_data_is_not() -> None:
    def impression(request: str, product: str, explored: bool | None) -> dict[str, Any]:
        return {"request_id": request, "event": "impression", "query": f"mug {request}", "product_id": product,
                "title": f"mug {product}", "ts": "2026-01-01T00:00:00Z", "explored": explored,
                "propensity": 0.05 if explored else 0.9}
    records = [impression("r1", "a", True), impression("r1", "b", True), impression("r2", "a", False),
               impression("r2", "b", False), impression("r3", "a", None),
               {"request_id": "r1", "event": "click", "product_id": "b", "ts": "2026-01-01T00:01:00Z"}]
    prepared = prepare(pd.DataFrame(records), split={"by": "random", "validation": 0.0, "test": 0.2})
    assert prepared.logged
    kept = all_rows(prepared).set_index(["query", "product_id"])
    assert kept["explored"].to_dict() == {("mug r1", "a"): True, ("mug r1", "b"): True, ("mug r2", "a"): False,
                                          ("mug r2", "b"): False, ("mug r3", "a"): False}
    assert kept.loc[("mug r1", "b"), "label"] == 1.0  # the click merged onto its explored impression
    assert kept.loc[("mug r1", "b"), "propensity"] == 0.05 and kept.loc[("mug r2", "a"), "propensity"] == 0.9
    plain = prepare(rows())
    assert not plain.logged and not all_rows(plain)["explored"].any() and all_rows(plain)["propensity"].isna().all()
    # Event data with request ids that no recops server wrote (a shop's own log, `recops data synth`) was ranked by
    # something else: it is not a served log.
    foreign = [{k: v for k, v in r.items() if k != "explored"} for r in records]
    assert not prepare(pd.DataFrame(foreign), split={"by": "random", "validation": 0.0, "test": 0.2}).logged


def test_partitions_with_different_columns_and_types_read_as_one(tmp_path: Path) -> None:
    first = [{"request_id": "r1", "event": "impression", "product_id": "a", "title": "red mug", "query": None, "score": 1}]
    second = [
        {"request_id": "r1", "event": "click", "product_id": "a", "score": 0.5, "debug": {"k": [1, 2]}},
        {"request_id": "r2", "event": "impression", "product_id": "b", "title": "tea pot", "query": "pot", "score": 0.25},
    ]
    for part, records in (("dt=1", first), ("dt=2", second)):
        (tmp_path / part).mkdir()
        (tmp_path / part / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = data.load_frame(spec(tmp_path)).set_index("product_id")
    assert loaded.loc["a", "event"] == "click" and loaded.loc["a", "title"] == "red mug"
    assert loaded.loc["b", "query"] == "pot" and float(loaded.loc["b", "score"]) == 0.25


def test_movielens_rows_map_ratings_to_events() -> None:
    frame = data.load_frame(spec("builtin://movielens-100k"))
    assert len(frame) == 100_000
    assert {"user_id", "product_id", "title", "event", "rating", "timestamp"} <= set(frame.columns)
    assert "query" not in frame.columns  # groups are users
    toy_story = frame.loc[frame["product_id"] == "1", "title"].iloc[0]
    assert toy_story.startswith("Toy Story (1995)") and "Animation" in toy_story
    positive = frame["event"].isin(["click", "purchase"])
    assert (positive == (frame["rating"] >= 4)).all()


# --- field mapping and labels ---------------------------------------------------------------
def test_field_mapping_joins_text_and_grades_events() -> None:
    frame = rows().rename(columns={"query": "q", "title": "name"}).assign(brand="Acme")
    prepared = prepare(frame, "relevance", fields={"query": "q", "productText": ["name", "brand"]})
    everything = all_rows(prepared)
    assert everything["product_text"].str.endswith(f"{contracts.PRODUCT_TEXT_SEPARATOR}Acme").all()
    assert (everything["context"] == everything["query"]).all()
    assert set(everything["grade"]) == {0.0, 1.0, 2.0, 3.0}
    assert (everything["label"] == everything["grade"]).all()
    assert prepared.max_grade == 3.0
    click = prepare(frame, "click-through", fields={"query": "q", "productText": ["name", "brand"]})
    clicks = all_rows(click)
    assert ((clicks["grade"] >= 1) == (clicks["label"] == 1.0)).all()
    assert set(clicks["label"]) == {0.0, 1.0} and click.max_grade == 1.0


def test_custom_event_grades() -> None:
    frame = rows()
    prepared = prepare(frame, "relevance", eventGrades={"impression": 0, "click": 1, "add_to_cart": 1, "purchase": 5})
    assert set(all_rows(prepared)["grade"]) == {0.0, 1.0, 5.0}
    assert prepared.max_grade == 5.0


def test_label_column_overrides_events() -> None:
    frame = rows().assign(stars=lambda f: np.arange(len(f)) % 5 + 1, event="nonsense")
    prepared = prepare(frame, "relevance", fields={"label": "stars"})
    everything = all_rows(prepared)
    assert sorted(set(everything["grade"])) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert "unknown_events" not in steps(prepared)
    assert prepared.max_grade == 5.0


def test_user_context_is_the_context_without_a_query() -> None:
    frame = rows().assign(query=None, persona="likes hiking")
    prepared = prepare(frame, fields={"userContext": "persona"})
    everything = all_rows(prepared)
    assert (everything["context"] == contracts.context_text(None, "likes hiking")).all()
    assert everything["query"].isna().all()
    assert (everything["group"] == everything["user"]).all()  # no query: groups are users


def test_optional_roles_are_used_only_when_present() -> None:
    frame = rows().drop(columns=["query", "user_id", "timestamp"])
    frame["user_context"] = "likes wool"
    prepared = prepare(frame, split={"by": "random"})
    everything = all_rows(prepared)
    assert everything["user"].isna().all() and everything["timestamp"].isna().all()
    assert (everything["context"] == "user: likes wool").all()
    assert prepared.report.pseudonymised_users == 0


def test_a_mapped_column_that_is_absent_is_an_error_naming_it() -> None:
    with pytest.raises(DataError, match=r"column 'search_terms' \(fields.query\) is not in the data; columns are"):
        prepare(rows(), fields={"query": "search_terms"})
    with pytest.raises(DataError, match=r"'when' \(fields.timestamp\)"):
        prepare(rows(), fields={"timestamp": "when"})
    # Without any of query, user and user context there is nothing to rank for: say that, not a split error.
    with pytest.raises(DataError, match="no query, user or user context column"):
        prepare(rows().drop(columns=["query", "user_id"]))
    assert len(all_rows(prepare(rows().drop(columns=["query", "user_id"]), "domain-pretrain", split={"by": "random"})))


def test_timestamps_in_any_usual_shape_become_epoch_seconds() -> None:
    base = rows()
    seconds = base["timestamp"].astype(float)
    shapes = {
        "seconds": base["timestamp"],
        "milliseconds": base["timestamp"] * 1000,
        "iso": pd.to_datetime(base["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "datetime": pd.to_datetime(base["timestamp"], unit="s", utc=True),
    }
    for name, column in shapes.items():
        everything = all_rows(prepare(base.assign(timestamp=column)))
        expected = dict(zip(base["product_id"], seconds, strict=True))
        assert np.allclose(everything["timestamp"], everything["product_id"].map(expected)), name


# --- cleaning, one step at a time -----------------------------------------------------------
def test_missing_fields_step() -> None:
    frame = rows()
    frame.loc[0, "product_id"] = None
    frame.loc[1, "title"] = None
    frame.loc[2, "event"] = None
    frame.loc[3, "query"] = None  # optional: kept, grouped by its user
    prepared = prepare(frame)
    assert steps(prepared)["missing_fields"] == 3
    assert prepared.report.rows_kept == len(frame) - 3


def test_duplicates_step_and_switch() -> None:
    frame = pd.concat([rows(), rows().iloc[:4]], ignore_index=True)
    assert steps(prepare(frame))["duplicates"] == 4
    assert "duplicates" not in steps(prepare(frame, cleaning={"dropDuplicates": False}))


def test_text_length_outliers_step() -> None:
    frame = rows()
    frame.loc[0, "title"] = "   "
    frame.loc[1, "title"] = "x" * 6000
    frame.loc[2, "title"] = "ab"
    frame.loc[3, "query"] = "q" * 6000
    prepared = prepare(frame, cleaning={"minTextLength": 3})
    assert steps(prepared)["missing_fields"] == 1  # blank text is missing text
    assert steps(prepared)["outliers_text_length"] == 3


def test_unknown_events_step_and_switch() -> None:
    frame = rows()
    frame.loc[:1, "event"] = "hover"
    assert steps(prepare(frame))["unknown_events"] == 2
    kept = prepare(frame, cleaning={"dropUnknownEvents": False})
    assert "unknown_events" not in steps(kept)
    assert kept.report.rows_kept == len(frame)


def test_impossible_values_step() -> None:
    frame = rows().assign(score=lambda f: (np.arange(len(f)) % 4).astype(object))
    frame.loc[0, "score"] = "lots"
    frame.loc[1, "score"] = -1
    frame.loc[2, "score"] = float("inf")
    frame["timestamp"] = frame["timestamp"].astype(object)
    frame.loc[3, "timestamp"] = "not a time"
    prepared = prepare(frame, "relevance", fields={"label": "score"})
    assert steps(prepared)["impossible_values"] == 4


def test_max_rows_keeps_the_newest() -> None:
    frame = rows()
    prepared = prepare(frame, maxRows=20, split={"by": "random"})
    assert steps(prepared)["max_rows"] == len(frame) - 20
    newest = sorted(frame["timestamp"])[-20:]
    assert sorted(all_rows(prepared)["timestamp"]) == [float(t) for t in newest]


def test_max_rows_without_times_keeps_a_seeded_random_sample() -> None:
    frame = rows().drop(columns=["timestamp"]).sort_values("product_id", kind="stable").reset_index(drop=True)
    prepared = prepare(frame, maxRows=20, split={"by": "random"})
    assert steps(prepared)["max_rows_random_sample"] == len(frame) - 20
    kept = all_rows(prepared)
    assert len(kept) == 20 and set(kept["product_id"]) != set(frame["product_id"].head(20))  # not the first rows
    again = all_rows(prepare(frame, maxRows=20, split={"by": "random"}))
    assert sorted(kept["product_id"]) == sorted(again["product_id"])  # the same sample every time
    assert "max_rows_random_sample" in prepared.report.to_markdown()


def test_report_counts_add_up_and_render() -> None:
    frame = pd.concat([rows(), rows().iloc[:3]], ignore_index=True)
    frame.loc[5, "event"] = "hover"
    report = prepare(frame).report
    assert report.rows_read - sum(dropped for _, dropped in report.steps) == report.rows_kept
    assert sum(report.split_rows.values()) == report.rows_kept
    as_dict = report.to_dict()
    assert as_dict["rowsRead"] == len(frame) and {"step": "duplicates", "dropped": 3} in as_dict["steps"]
    markdown = report.to_markdown()
    assert "| duplicates | 3 |" in markdown and f"| **rows kept** | **{report.rows_kept}** |" in markdown


# --- pseudonymisation -----------------------------------------------------------------------
def test_pseudonyms_are_stable_for_a_salt_and_differ_for_another() -> None:
    frame = rows()
    first = all_rows(data.prepare_frame(frame, spec(), "click-through", salt="one"))
    again = all_rows(data.prepare_frame(frame, spec(), "click-through", salt="one"))
    other = all_rows(data.prepare_frame(frame, spec(), "click-through", salt="two"))
    assert first["user"].tolist() == again["user"].tolist()
    assert set(first["user"]).isdisjoint(set(other["user"]))
    expected = {contracts.pseudonymise(user, "one") for user in frame["user_id"]}
    assert set(first["user"]) == expected


def test_salt_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contracts.ENV_PSEUDONYM_SALT, "from-a-secret")
    everything = all_rows(data.prepare_frame(rows(), spec(), "click-through"))
    assert set(everything["user"]) == {contracts.pseudonymise(u, "from-a-secret") for u in rows()["user_id"]}


def test_no_clear_user_id_in_any_output() -> None:
    frame = rows().assign(query=lambda f: np.where(np.arange(len(f)) % 2 == 0, f["query"], None))
    prepared = prepare(frame, split={"by": "user"})
    clear = set(frame["user_id"])
    outputs = [
        frame_.to_csv() for frame_ in (prepared.train, prepared.validation, prepared.test)
    ] + [json.dumps(prepared.report.to_dict()), prepared.report.to_markdown(), repr(prepared.report), prepared.fingerprint]
    for text in outputs:
        for user in clear:
            assert user not in text
    assert prepared.report.pseudonymised_users == len(clear)


def test_split_and_fingerprint_do_not_depend_on_the_salt() -> None:
    frame = rows(n_queries=12)
    one = data.prepare_frame(frame, spec(split={"by": "user"}), "click-through", salt="one")
    two = data.prepare_frame(frame, spec(split={"by": "user"}), "click-through", salt="two")
    assert one.fingerprint == two.fingerprint
    assert one.test["product_id"].tolist() == two.test["product_id"].tolist()
    other_seed = data.prepare_frame(frame, spec(split={"by": "user"}), "click-through", salt="one", seed=7)
    assert other_seed.fingerprint != one.fingerprint


def test_fingerprint_and_split_are_the_same_in_another_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "events.parquet"
    rows(n_queries=10).to_parquet(path)
    script = (
        "import sys; from recops.train import data; from recops.api.finetunejob import DatasetSpec; "
        "p = data.prepare(DatasetSpec(uri=sys.argv[1]), 'click-through'); "
        "print(p.fingerprint, ','.join(sorted(p.test['product_id'])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    env.pop(contracts.ENV_PSEUDONYM_SALT, None)  # a random salt there
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    here = data.prepare(spec(path), "click-through", salt="another salt")
    assert done.stdout.strip() == f"{here.fingerprint} {','.join(sorted(here.test['product_id']))}"


# --- bad input ------------------------------------------------------------------------------
def assert_one_line(error: pytest.ExceptionInfo[DataError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message
    for word in words:
        assert word in message, message


def test_missing_columns_are_named() -> None:
    with pytest.raises(DataError) as error:
        prepare(rows().drop(columns=["title"]))
    assert_one_line(error, "'title'", "productText")
    with pytest.raises(DataError) as error:
        prepare(rows(), fields={"productId": "sku"})
    assert_one_line(error, "'sku'")
    with pytest.raises(DataError) as error:
        prepare(rows().drop(columns=["event"]))
    assert_one_line(error, "'event'", "label")
    with pytest.raises(DataError) as error:
        prepare(rows(), fields={"label": "stars"})
    assert_one_line(error, "'stars'")


def test_empty_after_cleaning() -> None:
    with pytest.raises(DataError) as error:
        prepare(rows().assign(event="hover"))
    assert_one_line(error, "no rows left", "unknown_events")


def test_single_class_label() -> None:
    with pytest.raises(DataError) as error:
        prepare(rows().assign(event="impression"))
    assert_one_line(error, "single class")


def test_unreadable_and_missing_uris(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        data.prepare(spec(tmp_path / "nowhere.parquet"), "click-through")
    assert_one_line(error, "does not exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as error:
        data.prepare(spec(tmp_path / "empty"), "click-through")
    assert_one_line(error, "no data", "no non-empty files")
    with pytest.raises(DataError) as error:
        data.prepare(spec("builtin://imagenet"), "click-through")
    assert_one_line(error, "unknown builtin")


def test_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rows().to_json(path, orient="records", lines=True)
    with pytest.raises(DataError) as error:
        data.prepare(spec(path, format="parquet"), "click-through")
    assert_one_line(error, "as parquet")
    garbage = tmp_path / "events.parquet"
    garbage.write_text("this is not parquet\n")
    with pytest.raises(DataError) as error:
        data.prepare(spec(garbage), "click-through")
    assert_one_line(error, "cannot read")
    unknown = tmp_path / "events.xlsx"
    unknown.write_text("a,b\n")
    with pytest.raises(DataError) as error:
        data.prepare(spec(unknown), "click-through")
    assert_one_line(error, "format")


def test_split_by_time_needs_timestamps() -> None:
    with pytest.raises(DataError) as error:
        prepare(rows().drop(columns=["timestamp"]), split={"by": "time"})
    assert_one_line(error, "time", "'timestamp'")


def test_one_query_cannot_be_split_by_query() -> None:
    with pytest.raises(DataError) as error:
        prepare(rows(n_queries=1))
    assert_one_line(error, "at least 2")


def test_since_skips_old_partitions_and_drops_older_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dataset.since: partitions that end before it are never read; older rows in the rest are dropped."""

    def impression(request: str, product: str, ts: str) -> dict[str, Any]:
        return {"ts": ts, "event": "impression", "request_id": request, "product_id": product, "query": "mug",
                "user_id": "u_x", "title": f"mug {product}", "track": "stable"}

    log = tmp_path / "log"
    layout = {
        ("2026-01-04", "23"): [impression("r0", "a", "2026-01-04T23:10:00Z")],
        ("2026-01-05", "10"): [impression("r1", "a", "2026-01-05T10:10:00Z"),
                               impression("r2", "b", "2026-01-05T10:50:00Z")],
        ("2026-01-05", "11"): [impression("r3", "c", "2026-01-05T11:05:00Z"),
                               {"ts": "2026-01-05T11:06:00Z", "event": "click", "request_id": "r3", "product_id": "c"}],
    }
    for when, records in layout.items():
        path = Path(contracts.event_log_path(str(log), when, "server-0"))
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    # A file of a skipped partition is never opened: make it unreadable as JSON to prove it.
    old = Path(contracts.event_log_path(str(log), ("2026-01-04", "23"), "server-0"))
    old.write_text("this is not json\n")

    prepared = data.prepare(
        spec(log, since="2026-01-05T10:30:00Z", split={"by": "random", "validation": 0.0, "test": 0.5}),
        "domain-pretrain", salt=SALT,
    )
    kept = all_rows(prepared)
    assert sorted(kept["product_id"]) == ["b", "c"]  # r1 (10:10) is older than since
    assert steps(prepared)["before_since"] == 1
    assert kept.set_index("product_id").loc["c", "grade"] == 1.0  # the click still joins its impression

    assert data._partition_before("x/dt=2026-01-05/hour=09/p.jsonl", data.since_epoch("2026-01-05T10:00:00Z"))
    assert not data._partition_before("x/dt=2026-01-05/hour=10/p.jsonl", data.since_epoch("2026-01-05T10:59:00Z"))
    assert data._partition_before("x/dt=2026-01-04/p.parquet", data.since_epoch("2026-01-05T00:00:00Z"))
    assert not data._partition_before("x/events.parquet", data.since_epoch("2030-01-01T00:00:00Z"))
    with pytest.raises(DataError, match=r"at or after dataset\.since"):
        data.prepare(spec(log, since="2027-01-01T00:00:00Z"), "domain-pretrain", salt=SALT)
