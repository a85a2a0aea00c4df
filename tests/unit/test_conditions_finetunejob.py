"""Conditions helpers and the FineTuneJob status computed from a Job and its pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recops.api import conditions as c
from recops.api.conditions import FINETUNEJOB_CONDITIONS
from recops.api.finetunejob import FineTuneJob
from recops.controllers import conditions as cond
from recops.controllers import finetunejob_status as st
from recops.controllers.finetunejob import FineTuneJobController

UID = "0123abcd-4567-89ef-0123-456789abcdef"
T0, T1, T2 = "2026-11-29T08:00:00Z", "2026-11-29T08:01:00Z", "2026-11-29T08:02:00Z"
JOB_UID = "job-uid-1"


def body(gate: dict[str, Any] | None = None, status: dict[str, Any] | None = None, suspend: bool = False,
         generation: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": "click-through", "dataset": {"uri": "/data"}, "output": {"uri": "/models"},
                            "suspend": suspend}
    if gate:
        spec["evaluation"] = {"metrics": ["auc", "logloss"], "gate": gate}
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "j", "namespace": "ns", "uid": UID, "generation": generation},
            "spec": spec, "status": status or {}}


def model(b: dict[str, Any]) -> FineTuneJob:
    return FineTuneJob.model_validate({k: b[k] for k in ("apiVersion", "kind", "metadata", "spec")})


def job(conditions: list[dict[str, Any]] | None = None, suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j", "uid": JOB_UID}, "spec": {"suspend": suspend},
            "status": {"conditions": conditions or [], **status}}


def pod(name: str, phase: str, terminated: dict[str, Any] | None = None, created: str = T0) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "trainer", "state": {"terminated": terminated} if terminated else
                                 {"running": {"startedAt": T0}}}
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": phase, "startTime": created, "containerStatuses": [container]}}


def report(**fields: Any) -> str:
    base = {"schemaVersion": 1, "modelUri": "/models/ns/j-0123abcd", "modelVersion": "j-0123abcd",
            "metrics": {"auc": 0.81, "logloss": 0.4}, "baseline": {"popularity": {"auc": 0.6}},
            "currentModel": None, "gatePassed": None, "error": None}
    base.update(fields)
    return json.dumps(base)


def compute(b: dict[str, Any], j: dict[str, Any] | None, pods: list[dict[str, Any]], now: str = T2) -> dict[str, Any]:
    return st.compute_status(b, model(b), st.Observed(job=j, pods=pods), now=now)


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {x["type"]: (x["status"], x["reason"]) for x in status["conditions"]}


# --- conditions helpers ---------------------------------------------------------------------------
def test_transition_time_changes_only_with_the_status() -> None:
    first = cond.set_condition([], "Ready", False, "Pending", "wait", generation=1, now=T0)
    same = cond.set_condition(first, "Ready", False, "Running", "still", generation=2, now=T1)
    assert same == [{"type": "Ready", "status": "False", "reason": "Running", "message": "still",
                     "lastTransitionTime": T0, "observedGeneration": 2}]
    flipped = cond.set_condition(same, "Ready", True, "Succeeded", generation=2, now=T2)
    assert flipped[0]["lastTransitionTime"] == T2 and flipped[0]["status"] == "True"
    assert cond.is_true(flipped, "Ready") and not cond.is_true(flipped, "Complete")
    assert cond.set_condition([], "X", None, "R", generation=None, now=T0)[0]["status"] == "Unknown"


def test_ordered_conditions_are_stable() -> None:
    items = [{"type": t} for t in ("Ready", "Zed", "Complete", "Failed")]
    assert [x["type"] for x in cond.ordered(items, FINETUNEJOB_CONDITIONS)] == ["Complete", "Failed", "Ready", "Zed"]


# --- status of an unfinished job ------------------------------------------------------------------
def test_pending_then_running_both_wait_conditions_present_and_false() -> None:
    b = body()
    pending = compute(b, job(), [])
    assert pending["phase"] == "Pending" and pending["observedGeneration"] == 1
    assert conditions_of(pending) == {"Complete": ("False", c.PENDING), "Failed": ("False", c.PENDING),
                                      "Suspended": ("False", c.PENDING), "Ready": ("False", c.PENDING)}
    running = compute(b | {"status": pending}, job(active=1), [pod("j-abc", "Running")])
    assert running["phase"] == "Running" and running["attempts"] == 1 and running["startTime"] == T0
    assert conditions_of(running)["Complete"] == ("False", c.RUNNING)
    # The Complete condition stayed False: its transition time is the first one.
    first = {x["type"]: x for x in pending["conditions"]}
    assert {x["type"]: x for x in running["conditions"]}["Complete"]["lastTransitionTime"] == \
        first["Complete"]["lastTransitionTime"]


def test_the_same_observation_gives_the_same_status() -> None:
    b = body()
    first = compute(b, job(active=1), [pod("j-abc", "Running")], now=T1)
    again = compute(b | {"status": first}, job(active=1), [pod("j-abc", "Running")], now=T2)
    assert again == first  # nothing to write on an idle resync


def test_progress_is_the_newest_read_else_the_stored_one() -> None:
    stored = {"step": 4, "totalSteps": 10, "epoch": 0.4, "percent": 40.0, "updatedAt": T0}
    b = body(status={"progress": stored})
    assert compute(b, job(), [])["progress"] == stored  # nothing read (no log, a node without logs): kept
    newer = {**stored, "step": 5, "percent": 50.0, "updatedAt": T2}
    observed = st.Observed(job=job(active=1), pods=[pod("j-abc", "Running")], progress=newer)
    assert st.compute_status(b, model(b), observed, now=T2)["progress"] == newer
    assert st.operator_status({"progress": stored, "phase": "Running"}) == {"progress": stored, "phase": "Running"}


def test_the_progress_is_read_from_the_rank0_pod_that_runs_or_just_succeeded() -> None:
    assert st.Observed(job=job(), pods=[pod("j-a", "Pending")]).reporting_pod() is None
    failed, running = pod("j-a", "Failed", created=T0), pod("j-b", "Running", created=T1)
    assert st.Observed(job=job(), pods=[failed, running]).reporting_pod() is running
    assert st.Observed(job=job(), pods=[failed]).reporting_pod() is None  # a failure has no progress to add
    done = pod("j-c", "Succeeded")
    assert st.Observed(job=job(), pods=[done]).reporting_pod() is done  # its last line: the final 100%
    indexed = {**job(), "spec": {"completionMode": "Indexed", "completions": 2}}
    workers = [pod(f"j-{i}", "Running") for i in range(2)]
    for i, worker in enumerate(workers):
        worker["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(i)}
    assert st.Observed(job=indexed, pods=workers[::-1]).reporting_pod() is workers[0]


def test_suspended_and_resumed() -> None:
    b = body(suspend=True)
    suspended = compute(b, job(suspend=True), [])
    assert suspended["phase"] == "Suspended"
    assert conditions_of(suspended)["Suspended"] == ("True", c.SPEC_SUSPENDED)
    resumed = compute(body(status=suspended, generation=2), job(), [])
    assert resumed["phase"] == "Pending" and resumed["observedGeneration"] == 2
    assert conditions_of(resumed)["Suspended"] == ("False", c.RESUMED)


def test_queued_job_is_pending_not_suspended() -> None:
    status = compute(body(), job(suspend=True), [])  # Kueue holds it; the user did not suspend
    assert status["phase"] == "Pending" and conditions_of(status)["Suspended"][0] == "False"


def test_unschedulable_pod_is_reported() -> None:
    p = pod("j-abc", "Pending")
    p["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]
    status = compute(body(), job(active=1), [p])
    assert conditions_of(status)["Ready"] == ("False", c.UNSCHEDULABLE)
    assert "Insufficient nvidia.com/gpu" in status["message"]


@pytest.mark.parametrize("reason, message", [
    ("ImagePullBackOff", 'Back-off pulling image "registry.example/recops-trainer:nope"'),
    ("CreateContainerConfigError", "couldn't find key aws-key in Secret shop/s3"),
    ("InvalidImageName", 'Failed to apply default image tag "UPPER:case"'),
])
def test_a_container_that_cannot_start_is_named_with_the_kubelets_reason(reason: str, message: str) -> None:
    p = pod("j-abc", "Pending")
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": reason, "message": message}}
    status = compute(body(), job(active=1), [p])
    assert status["phase"] == "Pending"
    assert conditions_of(status)["Ready"] == ("False", reason)
    assert status["message"] == f"trainer pod j-abc container trainer: {reason}: {message}"
    # Still being created is no failure.
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    assert conditions_of(compute(body(), job(active=1), [p]))["Ready"] == ("False", c.PENDING)


def test_a_job_that_cannot_create_its_pod_says_why() -> None:
    b = body()
    refused = 'pods "j-x" is forbidden: exceeded quota: shop, requested: requests.cpu=4, used: 0, limited: 2'
    status = st.compute_status(b, model(b), st.Observed(job=job(), pods=[], create_failures=["older", refused]),
                               now=T2)
    assert conditions_of(status)["Ready"] == ("False", c.POD_CREATE_FAILED)
    assert status["message"] == f"the Job cannot create the trainer pod: {refused}"


def test_a_trainer_kept_from_starting_fails_after_the_start_timeout_unless_it_may_change_by_itself() -> None:
    b = body()
    p = pod("j-abc", "Pending", created=T0)
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}}
    observed = st.Observed(job=job(active=1), pods=[p])
    # T2 is 120 s after the pod was created: within a 180 s timeout it waits, past 60 s it fails for good.
    assert st.compute_status(b, model(b), observed, now=T2, start_timeout_s=180)["phase"] == "Pending"
    assert st.compute_status(b, model(b), observed, now=T2)["phase"] == "Pending"  # no timeout: waits for ever
    failed = st.compute_status(b, model(b), observed, now=T2, start_timeout_s=60)
    assert failed["phase"] == "Failed" and failed["completionTime"] == T2
    assert conditions_of(failed)["Failed"] == ("True", "ImagePullBackOff")
    assert conditions_of(failed)["Ready"] == ("False", "ImagePullBackOff")
    assert failed["message"].startswith("trainer pod j-abc container trainer: ImagePullBackOff: nope (for more than 60 s")
    assert st.is_final(failed)

    refused = 'pods "j-x" is forbidden: maximum cpu usage per Container is 1m, but limit is 2'
    created_t0 = {**job(), "metadata": {**job()["metadata"], "creationTimestamp": T0}}
    no_pod = st.Observed(job=created_t0, pods=[], create_failures=[refused])
    assert conditions_of(st.compute_status(b, model(b), no_pod, now=T2, start_timeout_s=60))["Failed"] == (
        "True", c.POD_CREATE_FAILED)
    # A quota frees up as other pods finish; a node may join: those wait on.
    quota = st.Observed(job=created_t0, pods=[], create_failures=["pods is forbidden: exceeded quota: q"])
    assert st.compute_status(b, model(b), quota, now=T2, start_timeout_s=60)["phase"] == "Pending"
    unschedulable = pod("j-abc", "Pending")
    unschedulable["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                              "message": "0/3 nodes are available"}]
    assert st.compute_status(b, model(b), st.Observed(job=job(active=1), pods=[unschedulable]), now=T2,
                             start_timeout_s=60)["phase"] == "Pending"


def test_retry_after_a_failed_attempt_counts_attempts() -> None:
    failed = pod("j-1", "Failed", {"exitCode": 3, "message": report(error="CUDA out of memory"), "finishedAt": T1})
    status = compute(body(), job(failed=1, active=1), [failed, pod("j-2", "Running", created=T1)])
    assert status["phase"] == "Running" and status["attempts"] == 2


def test_a_failed_last_attempt_stays_running_until_the_job_fails() -> None:
    """benchmarks/chaos.py saw Running -> Pending (Retrying, "backoffLimit 0") -> Failed: no retry was left."""
    failed = pod("j-1", "Failed", {"exitCode": 3, "message": report(error="boom"), "finishedAt": T1})
    retrying = {**job(failed=1), "spec": {"suspend": False, "backoffLimit": 1}}
    assert conditions_of(compute(body(), retrying, [failed]))["Ready"] == ("False", c.RETRYING)
    last = {**job(failed=1), "spec": {"suspend": False, "backoffLimit": 0}}
    status = compute(body(), last, [failed])
    assert status["phase"] == "Running" and conditions_of(status)["Ready"] == ("False", c.RUNNING)
    assert status["message"].startswith("the trainer failed; waiting for the Job to fail: ")


def test_a_running_status_stands_while_the_job_controller_records_the_exit() -> None:
    """No status write for the moment between the trainer's exit and the Job's Complete or Failed condition."""
    running = compute(body(), job(active=1), [pod("j-1", "Running")])
    assert running["phase"] == "Running" and running["message"].startswith("trainer pod j-1 is running")
    exited = pod("j-1", "Succeeded", {"exitCode": 0, "message": report(), "finishedAt": T1})
    assert compute(body(status=running), job(succeeded=1), [exited]) == running  # nothing to write
    # Seen for the first time in that moment (a pass missed the running pod): Running, saying why.
    first = compute(body(), job(succeeded=1), [exited])
    assert first["phase"] == "Running" and first["message"] == "the trainer finished; waiting for the Job to complete"


# --- finished -------------------------------------------------------------------------------------
def test_succeeded_reads_the_termination_message() -> None:
    b = body(gate={"metric": "auc", "minimum": 0.7})
    done = job([{"type": "Complete", "status": "True", "lastTransitionTime": T1}], succeeded=1, completionTime=T1)
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": report(gatePassed=True)})])
    assert status["phase"] == "Succeeded"
    assert status["model"] == {"uri": "/models/ns/j-0123abcd", "version": "j-0123abcd"}
    assert status["metrics"] == {"auc": 0.81, "logloss": 0.4}
    assert status["baseline"] == {"popularity": {"auc": 0.6}}
    assert status["gatePassed"] is True and status["keyMetric"] == "auc=0.81"
    assert status["completionTime"] == T1 and status["attempts"] == 1
    assert conditions_of(status) == {"Complete": ("True", c.SUCCEEDED), "Failed": ("False", c.SUCCEEDED),
                                     "GatePassed": ("True", c.GATE_MET), "Suspended": ("False", c.SUCCEEDED),
                                     "Ready": ("True", c.GATE_MET)}
    assert st.is_final(status)


def test_empty_values_are_left_out_and_a_field_that_empties_is_removed() -> None:
    from recops.controllers.status import status_patch

    # Stored by hand or by an older operator: an empty value is no value, so it is not rewritten every pass.
    assert st.operator_status({"phase": "Running", "metrics": {}, "conditions": [], "attempts": 0,
                               "gatePassed": False}) == {"phase": "Running", "attempts": 0, "gatePassed": False}
    b = body(status={"metrics": {"auc": 0.5}, "baseline": {"popularity": {"auc": 0.4}}})
    done = job([{"type": "Complete", "status": "True", "lastTransitionTime": T1}], succeeded=1, completionTime=T1)
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": report(metrics={}, baseline={})})])
    assert "metrics" not in status and "baseline" not in status
    # A merge patch of {} would leave the old metrics in place; null removes them.
    patch = status_patch(st.operator_status(b["status"]), status)
    assert patch["metrics"] is None and patch["baseline"] is None


def test_the_optimisation_verdict_is_a_condition_and_in_status() -> None:
    done = job([{"type": "Complete", "status": "True", "lastTransitionTime": T1}], succeeded=1, completionTime=T1)
    optimization = {"format": "onnx", "quantization": "int8", "file": None, "spearman": 0.95, "top10Overlap": 0.8,
                    "reason": "optimised form rejected: Spearman 0.9500 (at least 0.99) ...",
                    "latencyMsPer100": {"fullPrecision": 300.0, "optimized": 90.0},
                    "metrics": {"auc": 0.7}, "fullPrecisionMetrics": {"auc": 0.81}}
    status = compute(body(), done, [pod("j-abc", "Succeeded", {"exitCode": 0,
                                                              "message": report(optimization=optimization)})])
    assert conditions_of(status)["Optimized"] == ("False", c.FULL_PRECISION_KEPT)
    assert status["optimization"] == {"format": "onnx", "quantization": "int8", "served": False, "spearman": 0.95,
                                      "top10Overlap": 0.8, "latencyMsPer100": {"fullPrecision": 300.0, "optimized": 90.0},
                                      "fullPrecisionMetrics": {"auc": 0.81}, "reason": optimization["reason"]}
    optimization.update(file="onnx/model.onnx", reason="served: ...")
    status = compute(body(), done, [pod("j-abc", "Succeeded", {"exitCode": 0,
                                                              "message": report(optimization=optimization)})])
    assert conditions_of(status)["Optimized"] == ("True", c.OPTIMIZED_SERVED) and status["optimization"]["served"]
    # Without spec.optimize: no such condition.
    assert "Optimized" not in conditions_of(compute(body(), done, [pod("j-abc", "Succeeded", {"exitCode": 0,
                                                                                            "message": report()})]))


def test_gate_not_passed_is_complete_but_not_ready() -> None:
    b = body(gate={"metric": "auc", "minimum": 0.9})
    done = job([{"type": "Complete", "status": "True"}], succeeded=1)
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": report(gatePassed=False)})])
    assert status["phase"] == "Succeeded" and status["gatePassed"] is False
    assert conditions_of(status)["Complete"] == ("True", c.SUCCEEDED)
    assert conditions_of(status)["GatePassed"] == ("False", c.GATE_NOT_MET)
    assert conditions_of(status)["Ready"] == ("False", c.GATE_NOT_MET)


def test_a_gate_on_baselines_decided_from_the_report_by_the_trainers_function() -> None:
    b = body(gate={"metric": "auc", "beatBaselines": ["bm25", "popularity"]})
    done = job([{"type": "Complete", "status": "True"}], succeeded=1)
    lost = report(baseline={"popularity": {"auc": 0.6}, "bm25": {"auc": 0.85}})
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": lost})])
    assert status["gatePassed"] is False and "auc 0.8100 vs bm25 0.8500: does not beat it" in status["message"]
    assert conditions_of(status)["Ready"] == ("False", c.GATE_NOT_MET)
    won = report(baseline={"popularity": {"auc": 0.6}, "bm25": {"auc": 0.7}})
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": won})])
    assert status["gatePassed"] is True and conditions_of(status)["Ready"] == ("True", c.GATE_MET)
    # A baseline missing from the report (e.g. dropped to fit 4 KB) proves nothing: closed, unless the trainer said.
    slim = report(baseline={})
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": slim})])
    assert status["gatePassed"] is False
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": report(baseline={}, gatePassed=True)})])
    assert status["gatePassed"] is True and "the trainer's gate on auc passed" in status["message"]


def test_gate_decided_from_metrics_when_the_report_has_no_verdict() -> None:
    b = body(gate={"metric": "logloss", "maximum": 0.3})
    done = job([{"type": "Complete", "status": "True"}], succeeded=1)
    status = compute(b, done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": report()})])
    assert status["gatePassed"] is False and "logloss 0.4000 > maximum 0.3" in status["message"]


def test_no_gate_is_ready_without_a_gate_condition() -> None:
    done = job([{"type": "Complete", "status": "True"}], succeeded=1)
    status = compute(body(), done, [pod("j-abc", "Succeeded", {"exitCode": 0, "message": report()})])
    assert "gatePassed" not in status and "GatePassed" not in conditions_of(status)
    assert conditions_of(status)["Ready"] == ("True", c.NO_GATE)


def test_success_without_a_report_uses_the_contract_location() -> None:
    done = job([{"type": "Complete", "status": "True"}], succeeded=1)
    status = compute(body(), done, [])  # pods already gone
    assert status["model"] == {"uri": "/models/ns/j-0123abcd", "version": "j-0123abcd"}


def test_failed_with_exit_code_and_error() -> None:
    failed_job = job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                       "lastTransitionTime": T1}], failed=3)
    pods = [pod(f"j-{i}", "Failed", {"exitCode": 3, "message": report(error=f"boom {i}")}, created=f"2026-11-29T08:0{i}:00Z")
            for i in range(3)]
    status = compute(body(), failed_job, pods)
    assert status["phase"] == "Failed" and status["attempts"] == 3 and status["completionTime"] == T1
    assert "exit code 3" in status["message"] and "boom 2" in status["message"]
    assert conditions_of(status)["Failed"] == ("True", c.BACKOFF_LIMIT_EXCEEDED)
    assert conditions_of(status)["Complete"] == ("False", c.BACKOFF_LIMIT_EXCEEDED)
    assert st.is_final(status)


def test_failure_message_from_a_log_tail() -> None:
    failed_job = job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    tail = "Traceback (most recent call last):\n  ...\nRuntimeError: dataset is empty\n"
    status = compute(body(), failed_job, [pod("j-1", "Failed", {"exitCode": 1, "message": tail})])
    assert conditions_of(status)["Failed"] == ("True", c.DEADLINE_EXCEEDED)
    assert "RuntimeError: dataset is empty" in status["message"]


def test_invalid_spec_fails_but_is_not_final() -> None:
    b = body()
    status = st.compute_status(b, None, st.Observed(job=None), now=T0, invalid="spec.x: unknown field")
    assert status["phase"] == "Failed"
    assert conditions_of(status)["Failed"] == ("True", c.INVALID_SPEC)
    assert conditions_of(status)["Ready"] == ("False", c.INVALID_SPEC)
    assert not st.is_final(status)


def test_termination_message_parsing() -> None:
    assert st.parse_termination_message(report()).metrics["auc"] == 0.81  # type: ignore[union-attr]
    assert st.parse_termination_message("not json") is None
    assert st.parse_termination_message("{broken") is None
    assert st.parse_termination_message(None) is None


def test_parse_reports_unsupported_specs_as_invalid() -> None:
    from recops.controllers.finetunejob import parse_finetunejob as parse

    b = body()
    assert parse(b)[1] is None
    b["spec"]["resources"] = {"workers": 4}
    assert parse(b)[1] is None  # many workers are supported
    b["metadata"]["name"] = "shop.ranker"
    ftj, invalid = parse(b)
    assert ftj is None and invalid is not None and "DNS label" in invalid
    b["spec"]["resources"] = {"unknownField": 1}
    assert "unknown field" in (parse(b)[1] or "")


@pytest.mark.parametrize("next_phase", ["Pending", "Running", "Succeeded"])
def test_a_resume_is_an_event_whatever_the_first_pass_after_it_sees(next_phase: str) -> None:
    # Under load the first pass after `suspend: false` may find the pod already Running, or done.
    posted: list[str] = []
    controller = FineTuneJobController(None, None, lambda body, kind, reason, message: posted.append(reason))  # type: ignore[arg-type]
    controller._post_transition_events(body(status={"phase": "Suspended"}), {"phase": next_phase, "conditions": []})
    assert posted[0] == c.RESUMED and len(posted) == (1 if next_phase == "Pending" else 2)
    posted.clear()
    controller._post_transition_events(body(suspend=True, status={"phase": "Suspended"}), {"phase": "Failed", "conditions": []})
    assert c.RESUMED not in posted  # still suspended (a deadline passed): no resume
