"""The serving event log round-trips into the trainer's data loader: what `recops serve` logs
is click-through training data with labels from the feedback it accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from recops.api.finetunejob import DatasetSpec
from tests.support.models import tiny_served_model
from tests.support.serving import ServeProcess, candidates

pytestmark = [pytest.mark.workload, pytest.mark.timeout(600)]


def test_event_log_becomes_click_through_rows_labelled_by_feedback(tmp_path: Path) -> None:
    from recops.train.data import prepare

    model = tiny_served_model(tmp_path / "model", "click-through", version="v-log")
    log_dir = tmp_path / "events"
    server = ServeProcess(model, "--event-log", str(log_dir),
                          env={"RECOPS_PSEUDONYM_SALT": "salt", "RECOPS_POD_NAME": "pod-a"})
    expected: dict[tuple[str, str], float] = {}  # (query, product text) -> grade
    texts = {c["id"]: c["text"] for c in candidates(40)}
    try:
        server.wait_ready()
        for i in range(30):
            query = f"query {i}"
            pool = candidates(40)[i:i + 6]
            status, answer = server.post("/v1/rank", {"query": query, "user": {"id": f"user-{i % 7}"},
                                                      "candidates": pool, "topK": 5})
            assert status == 200, answer
            shown = [e["id"] for e in answer["items"]]
            grades = dict.fromkeys(shown, 0.0)
            feedback = [(shown[0], "click")]
            if i % 3 == 0:
                feedback.append((shown[1], "purchase"))
            if i % 5 == 0:
                feedback.append((shown[0], "add_to_cart"))  # the best event of an item counts
            for item, event in feedback:
                status, accepted = server.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": item,
                                                                "event": event})
                assert status == 200, accepted
                grades[item] = max(grades[item], {"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}[event])
            for item, grade in grades.items():
                expected[(query, texts[item])] = grade
    finally:
        server.stop()  # flushes the event log
    assert server.process.returncode == 0

    prepared = prepare(DatasetSpec(uri=str(log_dir), format="jsonl"), "click-through", salt="salt", seed=0)
    rows = [row for split in ("train", "validation", "test") for row in prepared.split(split).to_dict("records")]
    assert len(rows) == 30 * 5
    got = {(row["query"], row["product_text"]): (row["grade"], row["label"]) for row in rows}
    assert set(got) == set(expected)
    for key, grade in expected.items():
        assert got[key] == (grade, 1.0 if grade >= 1 else 0.0), key
    assert sum(label for _, label in got.values()) == 30 + 10
    assert all(row["user"] and not str(row["user"]).startswith("user-") for row in rows)  # never the raw id
