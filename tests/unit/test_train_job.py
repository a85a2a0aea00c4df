"""The pure parts of `recops train`: job resolution, metric applicability, the gate, progress."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from recops.api import contracts
from recops.api.contracts import TERMINATION_MESSAGE_LIMIT, Debiased, TerminationMessage
from recops.api.finetunejob import Gate
from recops.api.gate import decide_gate
from recops.train.job import JobError, planned_metrics, require_cuda_devices, resolve_job
from recops.train.progress import Progress, ProgressReporter, format_duration, progress_line

SPEC = {"task": "click-through", "dataset": {"uri": "/data/events.jsonl"}, "output": {"uri": "s3://models/recops"}}


def write(tmp_path: Path, document: Any, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return str(path)


def manifest(**metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": metadata, "spec": SPEC}


def test_a_manifest_names_the_model_after_the_job(tmp_path: Path) -> None:
    job = resolve_job(write(tmp_path, manifest(name="ctr", namespace="shop", uid="1234567890abcdef")), environ={})
    assert job.model_version == "ctr-12345678"
    assert job.namespace == "shop"
    assert job.model_uri == "s3://models/recops/shop/ctr-12345678"
    assert job.checkpoints_uri == "s3://models/recops/shop/ctr-12345678.checkpoints"
    assert job.termination_path == "/dev/termination-log" and not job.termination_path_given


def test_flags_override_the_spec_and_the_namespace_comes_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "spec.json"
    config.write_text(json.dumps(SPEC))  # a bare spec, as JSON
    job = resolve_job(str(config), output="/mnt/models/", version="v7", current_model="pvc://models/shop/v6",
                      termination_path="/tmp/t", environ={"RECOPS_FTJ_NAMESPACE": "team-a"})
    assert (job.namespace, job.model_uri, job.current_model) == ("team-a", "/mnt/models/team-a/v7", "pvc://models/shop/v6")
    assert job.termination_path_given


def test_without_uid_the_version_is_stable_for_one_spec_and_differs_for_another(tmp_path: Path) -> None:
    first = resolve_job(write(tmp_path, SPEC), environ={})
    again = resolve_job(write(tmp_path, SPEC, "again.yaml"), environ={})
    other = resolve_job(write(tmp_path, {**SPEC, "task": "relevance"}, "other.yaml"), environ={})
    assert first.namespace == "default"
    assert first.model_version == again.model_version and first.model_version.startswith("recops-click-through-")
    assert other.model_version != first.model_version


@pytest.mark.parametrize("document, cause", [
    ({**SPEC, "training": {"epochs": 0}}, "spec.training.epochs"),
    ({**SPEC, "task": "clustering"}, "spec.task"),
    ({"apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy", "metadata": {}, "spec": {}}, "MonitorPolicy"),
    ({**SPEC, "evaluation": {"gate": {"metric": "auc"}}}, "a gate needs minimum, maximum, beatBaselines or beatCurrent"),
    ({**SPEC, "task": "embedding", "evaluation": {"gate": {"metric": "rmse", "minimum": 1}}}, "cannot judge a embedding"),
])
def test_bad_configs_are_refused_with_a_one_line_cause(tmp_path: Path, document: dict[str, Any], cause: str) -> None:
    with pytest.raises(JobError) as err:
        resolve_job(write(tmp_path, document), environ={})
    assert cause in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("version", ["../escape", "a/b", "", "-x"])
def test_a_model_version_must_be_one_path_segment(tmp_path: Path, version: str) -> None:
    with pytest.raises(JobError):
        resolve_job(write(tmp_path, SPEC), version=version or " ", environ={})


def test_metrics_that_do_not_apply_to_the_task_are_skipped_with_a_reason() -> None:
    from recops.api.finetunejob import FineTuneJobSpec

    spec = FineTuneJobSpec.model_validate({**SPEC, "task": "relevance", "evaluation": {
        "metrics": ["auc", "logloss", "ndcg@5"], "gate": {"metric": "rmse", "maximum": 0.5}}})
    computed, skipped = planned_metrics(spec)
    assert computed == ["auc", "ndcg@5", "rmse"]  # the gate's metric is added
    assert list(skipped) == ["logloss"] and "probabilities" in skipped["logloss"]


def gate(**fields: Any) -> Gate:
    return Gate.model_validate(fields)


BASELINE = {"constant": {"logloss": 0.45, "rmse": 0.9}, "popularity": {"ndcg@10": 0.40, "auc": 0.6},
            "bm25": {"ndcg@10": 0.50, "auc": 0.7}}


@pytest.mark.parametrize("the_gate, metrics, current, passed", [
    (None, {"auc": 0.1}, None, None),
    (gate(metric="auc", minimum=0.7), {"auc": 0.71}, None, True),
    (gate(metric="auc", minimum=0.7), {"auc": 0.69}, None, False),
    (gate(metric="logloss", maximum=0.5), {"logloss": 0.4}, None, True),
    (gate(metric="logloss", maximum=0.5), {"logloss": 0.6}, None, False),
    (gate(metric="auc", minimum=0.5), {}, None, False),  # not computable: never deployable
    (gate(metric="auc", minimum=0.5), {"auc": float("nan")}, None, False),
    (gate(metric="auc", minimum=0.5, beatCurrent=True), {"auc": 0.8}, {"auc": 0.75}, True),
    (gate(metric="auc", minimum=0.5, beatCurrent=True), {"auc": 0.8}, {"auc": 0.85}, False),
    (gate(metric="auc", minimum=0.5, beatCurrent=True), {"auc": 0.8}, {"auc": 0.8}, False),  # a tie does not beat
    (gate(metric="rmse", maximum=1.0, beatCurrent=True), {"rmse": 0.6}, {"rmse": 0.7}, True),  # lower is better
    (gate(metric="rmse", maximum=1.0, beatCurrent=True), {"rmse": 0.6}, {"auc": 0.7}, False),  # fails closed
    (gate(metric="rmse", maximum=1.0, beatCurrent=True), {"rmse": 0.6}, {"rmse": float("nan")}, False),
    (gate(metric="auc", minimum=0.5, beatCurrent=True), {"auc": 0.8}, None, True),  # nothing serves yet
    (gate(metric="ndcg@10", beatBaselines=["bm25", "popularity"]), {"ndcg@10": 0.55}, None, True),
    (gate(metric="ndcg@10", beatBaselines=["bm25", "popularity"]), {"ndcg@10": 0.45}, None, False),  # bm25 wins
    (gate(metric="ndcg@10", beatBaselines=["bm25"]), {"ndcg@10": 0.50}, None, False),  # a tie does not beat
    (gate(metric="ndcg@10", beatBaselines=["bm25"], beatCurrent=True), {"ndcg@10": 0.55}, {"ndcg@10": 0.6}, False),
    (gate(metric="logloss", beatBaselines=["constant"]), {"logloss": 0.44}, None, True),
    (gate(metric="rmse", beatBaselines=["constant"]), {"rmse": 0.95}, None, False),
    (gate(metric="recall@10", beatBaselines=["bm25"]), {"recall@10": 0.9}, None, False),  # bm25 lacks it: closed
])
def test_the_gate(the_gate: Gate | None, metrics: dict[str, float], current: dict[str, float] | None,
                  passed: bool | None) -> None:
    decision = decide_gate(the_gate, metrics, BASELINE, current)
    assert decision.passed is passed
    assert decision.reasons


def test_on_an_event_log_every_reference_is_judged_on_the_exploration_slice() -> None:
    beat_current = gate(metric="ndcg@10", beatBaselines=["bm25"], beatCurrent=True)
    metrics, current = {"ndcg@10": 0.55}, {"ndcg@10": 0.60}  # the plain log favours the model that ranked it
    slice_bm25 = {"bm25": {"ndcg@10": 0.48}}
    slice_won = Debiased(rows=40, groups=9, metrics={"ndcg@10": 0.52}, baseline=slice_bm25, currentModel={"ndcg@10": 0.47})
    slice_lost = Debiased(rows=40, groups=9, metrics={"ndcg@10": 0.45}, baseline=slice_bm25, currentModel={"ndcg@10": 0.47})
    assert decide_gate(beat_current, metrics, BASELINE, current).passed is False  # not a log: plain
    decision = decide_gate(beat_current, metrics, BASELINE, current, slice_won)
    assert decision.passed is True
    assert "vs bm25 (debiased: 40 explored impressions) 0.4800" in decision.summary
    assert "vs the current model (debiased: 40 explored impressions) 0.4700" in decision.summary
    assert decide_gate(beat_current, metrics, BASELINE, current, slice_lost).passed is False
    # BM25 too: the plain log favours what ranks like the logging model. Plain, 0.45 loses to bm25's 0.50; on the
    # slice the model's 0.52 beats bm25's 0.48 (and the reverse fails).
    beat_bm25 = gate(metric="ndcg@10", beatBaselines=["bm25"])
    assert decide_gate(beat_bm25, {"ndcg@10": 0.45}, BASELINE, None, slice_won).passed is True
    assert decide_gate(beat_bm25, {"ndcg@10": 0.60}, BASELINE, None, slice_lost).passed is False
    # The slice lacks the baseline's figure: not shown to be beaten.
    no_bm25 = slice_won.model_copy(update={"baseline": {}})
    assert decide_gate(beat_bm25, metrics, BASELINE, None, no_bm25).passed is False
    # A log without the slice cannot judge beatCurrent: fail closed and say why.
    no_slice = decide_gate(beat_current, metrics, BASELINE, {"ndcg@10": 0.1}, Debiased())
    assert no_slice.passed is False and "no exploration slice" in no_slice.summary
    # The slice lacks the metric (e.g. no click in it): not shown to be beaten.
    empty = Debiased(rows=3, groups=1, metrics={}, currentModel={})
    assert decide_gate(beat_current, metrics, BASELINE, current, empty).passed is False
    # Without the slice the baselines are judged on the whole log.
    assert decide_gate(gate(metric="ndcg@10", beatBaselines=["bm25"]), metrics, BASELINE, current, Debiased()).passed
    assert not decide_gate(gate(metric="ndcg@10", beatBaselines=["bm25"]), {"ndcg@10": 0.45}, BASELINE, current,
                           Debiased()).passed


def test_the_termination_message_keeps_the_verdict_and_slims_the_rest_under_4_kb() -> None:
    many = {f"ndcg@{k}": 0.5 for k in range(1, 51)}
    message = TerminationMessage(metrics=many, baseline={"bm25": many, "popularity": many}, currentModel=many,
                                 gatePassed=True, debiased=Debiased(rows=5, metrics=many, currentModel=many,
                                                                    baseline={"bm25": many}))
    text = message.to_json()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = TerminationMessage.model_validate_json(text)
    assert parsed.gate_passed is True and parsed.metrics == many
    assert parsed.debiased is not None and parsed.debiased.current_model == many and not parsed.baseline


@pytest.mark.parametrize("fields, message", [
    ({"metric": "auc"}, "a gate needs minimum, maximum, beatBaselines or beatCurrent"),
    ({"metric": "auc", "minimum": 0.5, "maximum": 0.9}, "at most one of minimum, maximum"),
    ({"metric": "rmse", "beatBaselines": ["bm25"]}, "bm25 has no meaningful rmse"),
    ({"metric": "ndcg@10", "beatBaselines": ["constant"]}, "constant has no meaningful ndcg@10"),
])
def test_a_gate_that_cannot_judge_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gate(**fields)


def test_progress_lines_and_the_progress_record() -> None:
    progress = Progress(step=30, total_steps=120, epoch=0.75)
    assert progress.percent == 25.0
    line = progress_line(progress, 0.6931, elapsed_s=90, eta_s=270)
    assert line == "step 30/120 (25%) epoch 0.75 loss 0.6931 elapsed 1m30s left 4m30s"
    record = contracts.last_progress(progress.record())
    assert record is not None and record["updatedAt"].endswith("Z")
    assert {k: v for k, v in record.items() if k != "updatedAt"} == {
        "step": 30, "totalSteps": 120, "epoch": 0.75, "percent": 25.0}
    assert format_duration(7322) == "2h02m"


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_reporter_prints_at_most_every_interval_and_the_newest_value_last() -> None:
    stream, clock = io.StringIO(), ManualClock()
    reporter = ProgressReporter(interval_s=0.3, stream=stream, clock=clock)
    for step in range(1, 101):
        reporter.report(Progress(step, 100, step / 100))
        clock.now += 0.01
    reporter.close()
    reporter.close()  # nothing new: nothing printed
    lines = stream.getvalue().splitlines()
    assert all(line.startswith(contracts.PROGRESS_MARKER) for line in lines)
    sent = [json.loads(line[len(contracts.PROGRESS_MARKER):])["step"] for line in lines]
    # 1 s of steps at 0.3 s: the first, one per interval, and close() the final value.
    assert sent == [1, 31, 61, 91, 100]
    # What the operator reads back from the log: the last line, whatever else the log holds.
    log = "INFO loading\n" + "\n".join(lines) + "\nINFO model written\n"
    progress = contracts.last_progress(log)
    assert progress is not None and progress["step"] == 100 and progress["totalSteps"] == 100
    assert progress["percent"] == 100.0 and progress["epoch"] == 1.0


@pytest.mark.parametrize("line", [
    'recops-progress {"step": 1}',  # fields missing
    'recops-progress {"step": -1, "totalSteps": 2, "epoch": 0.5, "percent": 50, "updatedAt": "2026-12-01T00:00:00Z"}',
    'recops-progress {"step": 1, "totalSteps": 2, "epoch": 0.5, "percent": 150, "updatedAt": "2026-12-01T00:00:00Z"}',
    'recops-progress {"step": 1, "totalSteps": 2, "epoch": 0.5, "percent": 50, "updatedAt": "yesterday"}',
    'recops-progress {"step": true, "totalSteps": 2, "epoch": 0.5, "percent": 50, "updatedAt": "2026-12-01T00:00:00Z"}',
    'recops-progress [1, 2]',
    'recops-progress {not json',
    'INFO recops-progress {"step": 1, "totalSteps": 2, "epoch": 0.5, "percent": 50, "updatedAt": "2026-12-01T00:00:00Z"}',
])
def test_a_malformed_or_embedded_progress_line_is_ignored(line: str) -> None:
    good = contracts.progress_record(1, 4, 0.25, 25.0, "2026-12-01T00:00:00Z")
    assert contracts.last_progress(line) is None
    assert contracts.last_progress(good + "\n" + line) == {"step": 1, "totalSteps": 4, "epoch": 0.25, "percent": 25.0,
                                                          "updatedAt": "2026-12-01T00:00:00Z"}


def test_the_reporter_runs_only_under_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(contracts.ENV_FTJ_NAME, raising=False)
    assert ProgressReporter.from_environment() is None
    monkeypatch.setenv(contracts.ENV_FTJ_NAME, "ctr")
    monkeypatch.setenv("RECOPS_PROGRESS_INTERVAL", "2")
    reporter = ProgressReporter.from_environment()
    assert reporter is not None and reporter.interval_s == 2.0


@pytest.mark.parametrize(("gpus", "devices", "torch_cuda", "cause"), [
    (1, 0, "13.2", r"gpusPerWorker is 1 but this trainer sees 0 CUDA device\(s\) \(torch built for CUDA 13.2\)"),
    (1, 0, None, r"sees 0 CUDA device\(s\) \(a CPU-only torch\).*trainer-cuda"),
    (4, 2, "13.2", r"gpusPerWorker is 4 but this trainer sees 2 CUDA device"),
])
def test_a_trainer_given_gpus_without_cuda_devices_refuses_to_train(gpus: int, devices: int, torch_cuda: str | None,
                                                                     cause: str) -> None:
    with pytest.raises(JobError, match=cause):
        require_cuda_devices(gpus, devices, torch_cuda)


@pytest.mark.parametrize(("gpus", "devices"), [(0, 0), (0, 2), (1, 1), (2, 8)])
def test_a_trainer_with_its_gpus_or_none_asked_goes_on(gpus: int, devices: int) -> None:
    require_cuda_devices(gpus, devices, "13.2")


def test_recops_train_given_a_gpu_it_cannot_see_fails_with_the_cause_in_its_termination_message(tmp_path: Path) -> None:
    """The real command, with every CUDA device hidden: it stops before reading data, and the operator reports the
    termination message's error (the FineTuneJob's Failed condition)."""
    spec = {**SPEC, "output": {"uri": str(tmp_path / "models")}, "resources": {"gpusPerWorker": 1}}
    termination = tmp_path / "termination-log"
    run = subprocess.run([sys.executable, "-m", "recops.cli", "train", "--config", write(tmp_path, spec),
                          "--termination-message-path", str(termination)], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    error = TerminationMessage.model_validate_json(termination.read_text()).error
    assert error is not None and "gpusPerWorker is 1 but this trainer sees 0 CUDA device(s)" in error
    assert "trainer-cuda" in error and not (tmp_path / "models").exists()
