"""Bad input to `recops train`: non-zero exit, the one-line cause on stderr and in the termination
message's `error`, and nothing at the model's final place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.models import tiny_base_model
from tests.workloads.train_support import job_manifest, leftovers, model_dir, run_train, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(600)]


def assert_refused(run: Any, cause: str) -> None:
    assert run.returncode != 0
    assert cause in run.last_error_line, run.stderr[-2000:]
    assert run.last_error_line.startswith("recops train: error: ")
    assert run.termination is not None, "no termination message"
    assert cause in run.termination["error"]
    assert "\n" not in run.termination["error"]
    assert run.termination["modelUri"] is None and run.termination["gatePassed"] is None


def test_a_spec_that_fails_validation(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    manifest = job_manifest("click-through", tiny_base, shop_events, tmp_path / "models",
                            training={"epochs": -1, "batchSize": 16})
    manifest["spec"]["surprise"] = True
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert_refused(run, "invalid FineTuneJob spec")
    assert "spec.training.epochs" in run.last_error_line and "spec.surprise: unknown field" in run.last_error_line
    assert leftovers(tmp_path / "models") == []


def test_a_bare_spec_without_dataset_uri(tmp_path: Path, tiny_base: Path) -> None:
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({"task": "relevance", "baseModel": {"uri": str(tiny_base)},
                                  "output": {"uri": str(tmp_path / "models")}}))
    run = run_train(config, tmp_path / "termination-log")
    assert_refused(run, "dataset.uri is required")


def test_data_that_cannot_be_read(tmp_path: Path, tiny_base: Path) -> None:
    missing = tmp_path / "no-such-events.jsonl"
    run = run_train(write_config(tmp_path, job_manifest("click-through", tiny_base, missing, tmp_path / "models")),
                    tmp_path / "termination-log")
    assert run.returncode != 0
    assert str(missing) in run.termination["error"] if run.termination else False
    assert run.last_error_line.startswith("recops train: error: ")
    assert leftovers(tmp_path / "models") == []


@pytest.mark.parametrize("fields, named", [
    ({"productText": ["no_such_column"]}, "no_such_column"),
    # Issue 19: a misspelt query column trained without queries and reported ndcg@10 = 0.0.
    ({"query": "search_terms"}, "column 'search_terms' (fields.query) is not in the data"),
    ({"query": None, "user": None, "userContext": None}, "no query, user or user context column"),
])
def test_data_without_the_mapped_columns(tmp_path: Path, tiny_base: Path, shop_events: Path,
                                         fields: dict[str, object], named: str) -> None:
    manifest = job_manifest("click-through", tiny_base, shop_events, tmp_path / "models", dataset={"fields": fields})
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert_refused(run, named)
    assert leftovers(tmp_path / "models") == []


def test_a_model_path_without_weights(tmp_path: Path, shop_events: Path) -> None:
    base = tiny_base_model(tmp_path / "base")
    (base / "model.safetensors").unlink()
    run = run_train(write_config(tmp_path, job_manifest("click-through", base, shop_events, tmp_path / "models")),
                    tmp_path / "termination-log")
    assert_refused(run, "has no weights")
    assert leftovers(tmp_path / "models") == []


def test_a_base_model_that_is_not_a_model_directory(tmp_path: Path, shop_events: Path) -> None:
    run = run_train(write_config(tmp_path, job_manifest("embedding", tmp_path / "nothing-here", shop_events,
                                                        tmp_path / "models")), tmp_path / "termination-log")
    assert_refused(run, "no such directory")


def test_an_output_that_already_holds_a_complete_model(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    output = tmp_path / "models"
    existing = model_dir(output)
    existing.mkdir(parents=True)
    (existing / "recops.json").write_text('{"the": "model serving now"}')
    (existing / "model.safetensors").write_bytes(b"weights")
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    run = run_train(write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, output)),
                    tmp_path / "termination-log")
    assert_refused(run, "already holds a complete model")
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before
    assert leftovers(output) == ["shop", "shop/ftj-01234567", "shop/ftj-01234567/model.safetensors",
                                 "shop/ftj-01234567/recops.json"]


def test_a_gate_metric_the_task_cannot_give(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    manifest = job_manifest("embedding", tiny_base, shop_events, tmp_path / "models",
                            evaluation={"metrics": ["ndcg@10"], "gate": {"metric": "logloss", "maximum": 0.5}})
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert_refused(run, "evaluation.gate.metric logloss cannot judge a embedding model")


def test_a_current_model_that_is_not_complete(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    incomplete = tiny_base_model(tmp_path / "incomplete")  # weights, but no recops.json
    run = run_train(write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, tmp_path / "models")),
                    tmp_path / "termination-log", "--current-model", str(incomplete))
    assert_refused(run, "is not complete")


def test_a_config_that_is_not_yaml(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("task: [click-through\n")
    run = run_train(config, tmp_path / "termination-log")
    assert_refused(run, "is not YAML or JSON")


def test_the_termination_message_path_is_skipped_silently_only_when_not_given(tmp_path: Path) -> None:
    """An explicit path that cannot be written is reported; the exit status still says what happened."""
    config = tmp_path / "job.yaml"
    config.write_text("task: click-through\n")  # fails validation (no output.uri)
    run = run_train(config, tmp_path / "no-such-dir" / "termination-log")
    assert run.returncode != 0
    assert "cannot write the termination message" in run.stderr
    assert "output" in run.stderr
