"""The serving event log round-trips into the trainer's data loader: what `recops serve` logs
is click-through training data with labels from the feedback it accepted."""

from __future__ import annotations

import re
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


def test_the_exploration_slice_is_logged_and_judges_every_reference_of_the_gate(tmp_path: Path, tiny_base: Path) -> None:
    """`recops serve --exploration` shows a share of responses in a random order and logs every impression's
    propensity; `recops train` on that log judges beatCurrent and beatBaselines on the explored test rows only."""
    import json

    from recops.api.contracts import MODEL_MANIFEST, ModelManifest
    from tests.workloads.train_support import job_manifest, model_dir, run_train, write_config

    share, k = 0.5, 4
    current = tiny_served_model(tmp_path / "current", "click-through", version="v-current")
    log_dir = tmp_path / "events"
    server = ServeProcess(current, "--event-log", str(log_dir), "--exploration", str(share),
                          env={"RECOPS_PSEUDONYM_SALT": "salt", "RECOPS_POD_NAME": "pod-a"})
    pool = candidates(16)
    try:
        server.wait_ready()
        for i in range(160):
            status, answer = server.post("/v1/rank", {"query": f"query {i % 20}", "candidates": pool[i % 8:i % 8 + 6],
                                                      "topK": k})
            assert status == 200, answer
            # Shoppers like items with an even number: the label does not depend on where an item was shown.
            for item in answer["items"]:
                if int(item["id"].split("-")[1]) % 2 == 0 and (i + item["rank"]) % 3:
                    assert server.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": item["id"],
                                                        "event": "click"})[0] == 200
    finally:
        server.stop()
    records = [json.loads(line) for path in log_dir.glob("dt=*/hour=*/*.jsonl") for line in path.read_text().splitlines()]
    impressions = [r for r in records if r["event"] == "impression"]
    by_request: dict[str, list[dict[str, object]]] = {}
    for record in impressions:
        by_request.setdefault(str(record["request_id"]), []).append(record)
    explored = [rows for rows in by_request.values() if rows[0]["explored"]]
    assert 0.3 < len(explored) / len(by_request) < 0.7
    n = 6  # candidates per request
    for rows in by_request.values():
        assert len({r["explored"] for r in rows}) == 1 and len(rows) == k
        for record in rows:  # (1 - share) at the model's own position, plus share / n for any candidate anywhere
            assert record["propensity"] in (pytest.approx(share / n), pytest.approx(1 - share + share / n))
    # A response in the model's order has the model's scores descending; an explored one is any k candidates.
    for rows in by_request.values():
        scores = [float(str(r["score"])) for r in sorted(rows, key=lambda r: int(str(r["position"])))]
        if not rows[0]["explored"]:
            assert scores == sorted(scores, reverse=True)

    output = tmp_path / "models"
    manifest = job_manifest("click-through", tiny_base, log_dir, output,
                            dataset={"format": "jsonl", "split": {"by": "random", "validation": 0.2, "test": 0.4}},
                            training={"inversePropensity": True},
                            evaluation={"metrics": ["auc", "ndcg@10"],
                                        "gate": {"metric": "ndcg@10", "beatBaselines": ["bm25"], "beatCurrent": True}})
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log", "--current-model", str(current))
    assert run.returncode == 0, run.stderr[-3000:]
    # Every logged impression carried its propensity into training: 1/(share/n) = 12 for an explored one.
    weighted = re.search(r"impressions weighted by 1/propensity \(at most 20\): (\d+) of (\d+) logged one; "
                         r"weights ([\d.]+) to ([\d.]+)", run.stderr)
    assert weighted is not None, run.stderr[-3000:]
    assert weighted[1] == weighted[2] and float(weighted[3]) == pytest.approx(1 / (1 - share + share / n), rel=1e-2)
    assert float(weighted[4]) == pytest.approx(n / share, rel=1e-2)
    written = ModelManifest.model_validate_json((model_dir(output) / MODEL_MANIFEST).read_text())
    assert written.debiased is not None and written.current_model is not None
    assert 0 < written.debiased.rows < sum(1 for _ in impressions)
    assert set(written.debiased.metrics) == {"auc", "ndcg@10"} and written.debiased.current_model
    assert run.termination is not None and run.termination["debiased"]["rows"] == written.debiased.rows
    card = (model_dir(output) / "README.md").read_text()
    assert "Debiased: the exploration slice" in card
    for reference in ("the current model", "bm25"):
        assert f"{reference} (debiased: {written.debiased.rows} explored impressions)" in card
    # How sure: the gate metric's margin over each reference, on the slice the gate judged, is the slice's difference.
    slice_figures = {**written.debiased.baseline, "current model": written.debiased.current_model}
    assert {m.reference for m in written.margins} == {"bm25", "popularity", "current model"}
    for margin in written.margins:
        assert (margin.metric, margin.judged_on) == ("ndcg@10", "the exploration slice")
        assert margin.margin == pytest.approx(written.debiased.metrics["ndcg@10"] -
                                              slice_figures[margin.reference]["ndcg@10"], abs=1e-9)
        assert margin.low <= margin.high and 0 < margin.groups <= written.debiased.groups
    assert "### How sure" in card
