"""The rollout decisions (recops.controllers.rollout): model selection, steering annotations,
analysis and the canary's steps, as pure functions of what a pass observed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from recops.api import contracts
from recops.api.common import Threshold
from recops.api.recmodeldeployment import AnalysisRule, RecModelDeploymentSpec
from recops.controllers import rollout as r
from recops.monitor.evaluation import measure_builtin
from recops.monitor.promql import TrackSelector
from recops.monitor.rules import Measurement
from tests.support.fake_prometheus import FakePrometheus

T0 = datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ftj(name: str, version: str, completed: str | None, *, phase: str = "Succeeded", ready: bool = True,
        lineage: str = "shop", gate: bool | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "gatePassed": gate,
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if phase == "Succeeded":
        status["model"] = {"uri": f"/models/ns/{version}", "version": version}
        status["completionTime"] = completed
    return {"metadata": {"name": name, "labels": {contracts.LINEAGE_LABEL: lineage}}, "status": status}


def spec(**changes: Any) -> RecModelDeploymentSpec:
    body: dict[str, Any] = {"model": {"lineage": "shop"}, "replicas": 2, "rollout": {
        "strategy": "Canary", "canary": {
            "steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
            "analysis": {"interval": "5s", "window": "1m", "minImpressions": 100},
            "failureLimit": 2}}}
    body.update(changes)
    return RecModelDeploymentSpec.model_validate(body)


def cand(version: str, completed: str = "2026-11-29T08:00:00Z") -> r.Candidate:
    return r.Candidate(uri=f"/models/ns/{version}", version=version, fine_tune_job=f"job-{version}",
                       completed_at=completed)


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def serving_observed(version: str, canary: str | None = None, canary_ready: int = 1) -> r.Observed:
    return r.Observed(stable_replicas=2, stable_ready=2, stable_version=version, stable_rolled_out=True,
                      canary_ready=canary_ready if canary else 0, canary_version=canary)


def tracks(canary: float | None, stable: float | None, canary_samples: float | None,
           stable_samples: float | None) -> r.TrackMeasurements:
    return r.TrackMeasurements(Measurement(canary, canary_samples), Measurement(stable, stable_samples))


STABLE_A = {"modelUri": "/models/ns/a", "modelVersion": "a", "revision": 1, "completedAt": "2026-11-29T07:00:00Z"}


# --- selection ----------------------------------------------------------------------------
def test_lineage_picks_newest_completed_that_passed_and_is_newer_than_stable() -> None:
    jobs = [
        ftj("j1", "a", "2026-11-29T07:00:00Z"),
        ftj("j2", "b", "2026-11-29T08:00:00Z"),
        ftj("j3", "c", "2026-11-29T09:00:00Z", ready=False, gate=False),  # gate not met
        ftj("j4", "d", None, phase="Running"),
        ftj("j5", "e", "2026-11-29T10:00:00Z", lineage="other"),
        ftj("j6", "f", "2026-11-29T07:30:00Z"),
    ]
    picked = r.select_lineage("shop", jobs, STABLE_A, set())
    assert picked.candidate is not None and picked.candidate.version == "b"
    assert picked.candidate.fine_tune_job == "j2"
    # A rejected newest model stops the lineage there: the older f (superseded by b) never rolls out
    # by itself, e.g. after b's canary is aborted.
    nothing = r.select_lineage("shop", jobs, STABLE_A, {"b"})
    assert nothing.candidate is None and nothing.reason is None
    assert "newer than a" in nothing.message and "the newest, b, was rolled back" in nothing.message
    # A newer model than the rejected one is a candidate again; retrying b (off the list) too.
    newer = [*jobs, ftj("j7", "g", "2026-11-29T11:00:00Z")]
    assert r.select_lineage("shop", newer, STABLE_A, {"b"}).candidate.version == "g"  # type: ignore[union-attr]
    assert r.select_lineage("shop", jobs, STABLE_A, set()).candidate.version == "b"  # type: ignore[union-attr]


def test_lineage_never_goes_back_to_an_older_model() -> None:
    # The stable model's job was deleted: an older job is no candidate (deleting jobs never rolls out).
    jobs = [ftj("j0", "old", "2026-11-29T06:00:00Z")]
    assert r.select_lineage("shop", jobs, STABLE_A, set()).candidate is None


def test_lineage_without_models_waits() -> None:
    waiting = r.select_lineage("shop", [ftj("j", "x", None, phase="Running")], None, set())
    assert waiting.candidate is None and waiting.reason == "WaitingForModel"
    assert "recops.dev/lineage=shop" in waiting.message


def test_pinned_fine_tune_job() -> None:
    assert r.select_fine_tune_job("j", None, set()).reason == "ModelNotFound"
    running = r.select_fine_tune_job("j", ftj("j", "x", None, phase="Running"), set())
    assert running.reason == "WaitingForModel" and "Running" in running.message
    gate = r.select_fine_tune_job("j", ftj("j", "x", "2026-11-29T07:00:00Z", ready=False, gate=False), set())
    assert gate.reason == "ModelNotFound" and "gate" in gate.message
    ok = r.select_fine_tune_job("j", ftj("j", "x", "2026-11-29T07:00:00Z"), set())
    assert ok.candidate is not None and ok.candidate.uri == "/models/ns/x"
    rejected = r.select_fine_tune_job("j", ftj("j", "x", "2026-11-29T07:00:00Z"), {"x"})
    assert rejected.candidate is None and contracts.RETRY_MODEL_ANNOTATION in rejected.message


def test_a_model_records_which_form_its_job_serves() -> None:
    optimised = ftj("j", "x", "2026-11-29T07:00:00Z")
    optimised["status"]["optimization"] = {"format": "onnx", "quantization": "int8", "served": True}
    candidate = r.select_fine_tune_job("j", optimised, set()).candidate
    assert candidate is not None and candidate.track(1)["modelFormat"] == "onnx"
    optimised["status"]["optimization"]["served"] = False  # the bounds were broken: full precision
    kept = r.select_fine_tune_job("j", optimised, set()).candidate
    assert kept is not None and kept.track(1)["modelFormat"] == "torch"
    plain = r.select_fine_tune_job("j", ftj("j", "x", "2026-11-29T07:00:00Z"), set()).candidate
    assert plain is not None and plain.track(1)["modelFormat"] == "torch"
    assert "modelFormat" not in r.select_uri("s3://m/shop/v7/", set()).candidate.track(1)  # type: ignore[union-attr]


def test_pinned_uri() -> None:
    assert r.select_uri("s3://m/shop/v7/", set()).candidate == r.Candidate(uri="s3://m/shop/v7/", version="v7")
    assert r.select_uri("s3://m/shop/v7", {"v7"}).candidate is None


# --- the first model and rolling updates --------------------------------------------------
def test_first_model_serves_at_once_and_waits_for_its_pods() -> None:
    plan = r.decide(spec(), {}, 1, {}, r.Selection(cand("a")), r.Observed(), None, at(0))
    assert plan.stable is not None and plan.stable.version == "a" and plan.canary is None
    assert plan.status["stable"]["revision"] == 1
    assert plan.status["promotions"] == [{"modelVersion": "a", "promotedAt": "2026-11-29T09:00:00Z", "by": "initial"}]
    assert plan.status["phase"] == "Progressing"
    assert cond(plan.status, "Available")["status"] == "False"
    assert plan.active
    # Once its pods are ready: Serving.
    plan = r.decide(spec(), {}, 1, plan.status, r.Selection(cand("a")), serving_observed("a"), None, at(5))
    assert plan.status["phase"] == "Serving"
    assert {c["type"]: c["status"] for c in plan.status["conditions"]} == {
        "Available": "True", "Progressing": "False", "Degraded": "False", "Ready": "True"}
    assert not plan.active


def test_no_model_yet_is_pending_with_the_reason() -> None:
    selection = r.Selection(None, "WaitingForModel", "waiting for a FineTuneJob labelled recops.dev/lineage=shop")
    plan = r.decide(spec(), {}, 1, {}, selection, r.Observed(), None, at(0))
    assert plan.stable is None and plan.status["phase"] == "Pending"
    ready = cond(plan.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForModel")
    assert "lineage=shop" in ready["message"]


def test_rolling_update_swaps_the_stable_model() -> None:
    old = {"stable": STABLE_A, "promotions": [{"modelVersion": "a", "promotedAt": "x", "by": "initial"}]}
    plan = r.decide(spec(rollout={"strategy": "RollingUpdate"}), {}, 2, old, r.Selection(cand("b")),
                    serving_observed("a"), None, at(0))
    assert plan.stable is not None and plan.stable.version == "b" and plan.canary is None
    assert plan.status["stable"]["revision"] == 2
    assert plan.status["promotions"][-1] == {"modelVersion": "b", "fromVersion": "a",
                                             "promotedAt": "2026-11-29T09:00:00Z", "by": "rollingUpdate"}
    assert cond(plan.status, "Progressing")["reason"] == "RollingUpdate"
    assert plan.status["phase"] == "Progressing"
    assert ("Normal", "RollingUpdate", "rolling the stable track from a to b") in plan.events


# --- canary -------------------------------------------------------------------------------
def start_canary() -> r.Plan:
    plan = r.decide(spec(), {}, 1, {"stable": STABLE_A}, r.Selection(cand("b")), serving_observed("a"), None, at(0))
    assert plan.status["phase"] == "Canary"
    assert plan.canary is not None and plan.canary.version == "b"
    assert plan.stable is not None and plan.stable.version == "a"
    assert plan.status["canaryStep"] == 0 and plan.status["canaryWeight"] == 20
    assert plan.canary_replicas == 1  # 1 : 2 stable pods
    return plan


def pass_results() -> list[dict[str, Any]]:
    return [{"metric": "ctr", "threshold": "10% below baseline", "canary": 0.2, "stable": 0.2, "state": "Pass",
             "message": "ctr 0.2 within"}]


def fail_results() -> list[dict[str, Any]]:
    return [{"metric": "ctr", "threshold": "10% below baseline (bound 0.18)", "canary": 0.05, "stable": 0.2,
             "state": "Fail", "message": "ctr of the canary is 0.05, stable 0.2: breaches its threshold "
                                         "10% below baseline (bound 0.18)"}]


def test_canary_waits_for_its_pods_and_pause_counts_from_ready() -> None:
    plan = start_canary()
    waiting = r.decide(spec(), {}, 1, plan.status, r.Selection(cand("b")), serving_observed("a"), None, at(30))
    assert "waiting for its pods" in cond(waiting.status, "Progressing")["message"]
    assert "stepStartedAt" not in waiting.status
    ready = r.decide(spec(), {}, 1, waiting.status, r.Selection(cand("b")), serving_observed("a", "b"), None, at(40))
    assert ready.status["stepStartedAt"] == "2026-11-29T09:00:40Z"


def test_canary_passes_steps_then_promotes() -> None:
    status = start_canary().status
    observed = serving_observed("a", "b")
    # During the pause, a passing analysis does not step yet.
    plan = r.decide(spec(), {}, 1, status, r.Selection(cand("b")), observed, pass_results(), at(5))
    assert plan.status["canaryStep"] == 0 and "next step" in cond(plan.status, "Progressing")["message"]
    assert plan.status["stepStartedAt"] == "2026-11-29T09:00:05Z"  # the pause counts from the ready canary
    # After the pause, a pass moves to the next step.
    plan = r.decide(spec(), {}, 1, plan.status, r.Selection(cand("b")), observed, pass_results(), at(16))
    assert plan.status["canaryStep"] == 1 and plan.status["canaryWeight"] == 50
    assert plan.canary_replicas == 2  # 2 : 2
    assert plan.status["stepStartedAt"] == "2026-11-29T09:00:16Z"
    # After the last step: promoted; the canary goes away.
    plan = r.decide(spec(), {}, 1, plan.status, r.Selection(cand("b")), serving_observed("a", "b", 2),
                    pass_results(), at(27))
    assert plan.canary is None and plan.stable is not None and plan.stable.version == "b"
    assert plan.status["promotions"][-1]["by"] == "analysis" and plan.status["promotions"][-1]["fromVersion"] == "a"
    assert "canary" not in plan.status and "canaryWeight" not in plan.status
    assert cond(plan.status, "Progressing")["reason"] == "RollingUpdate"  # the stable Deployment now rolls to b
    assert any(e[1] == "Promoted" for e in plan.events)


def test_failures_up_to_the_limit_roll_back_with_value_and_threshold() -> None:
    status = start_canary().status
    observed = serving_observed("a", "b")
    plan = r.decide(spec(), {}, 1, status, r.Selection(cand("b")), observed, fail_results(), at(5))
    assert plan.status["analysisFailures"] == 1 and plan.canary is not None
    assert any(e[1] == "AnalysisFailed" for e in plan.events)
    plan = r.decide(spec(), {}, 1, plan.status, r.Selection(cand("b")), observed, fail_results(), at(10))
    assert plan.canary is None and plan.stable is not None and plan.stable.version == "a"
    degraded = cond(plan.status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
    assert "0.05" in degraded["message"] and "bound 0.18" in degraded["message"]
    assert plan.status["rejectedModels"][0]["modelVersion"] == "b"
    assert plan.status["phase"] == "Failed"
    assert cond(plan.status, "Ready")["status"] == "True"  # the stable model serves all traffic
    warning = next(e for e in plan.events if e[1] == "RolledBack")
    assert warning[0] == "Warning" and "ctr" in warning[2]
    # The rejected model is no candidate any more; Degraded stays until a newer one or retry-model.
    selection = r.select_lineage("shop", [ftj("j2", "b", "2026-11-29T08:00:00Z")], plan.status["stable"],
                                 r.rejected_versions(plan.status))
    later = r.decide(spec(), {}, 1, plan.status, selection, serving_observed("a"), None, at(60))
    assert later.canary is None and cond(later.status, "Degraded")["status"] == "True"


def test_inconclusive_waits_past_the_pause() -> None:
    status = start_canary().status
    results = r.evaluate_rules([AnalysisRule(metric="ctr", threshold=Threshold(relative_decrease=0.1))], 100,
                               {"ctr": tracks(0.1, 0.2, 12, 400)})
    assert results[0]["state"] == "Inconclusive"
    plan = r.decide(spec(), {}, 1, status, r.Selection(cand("b")), serving_observed("a", "b"), results, at(60))
    assert plan.status["canaryStep"] == 0 and plan.canary is not None
    progressing = cond(plan.status, "Progressing")
    assert progressing["reason"] == "Inconclusive" and "too little traffic" in progressing["message"]
    assert "canary 12, stable 400 impressions" in progressing["message"]
    assert plan.status["analysisFailures"] == 0


def test_newer_candidate_restarts_the_canary() -> None:
    status = start_canary().status
    plan = r.decide(spec(), {}, 1, status, r.Selection(cand("c", "2026-11-29T08:30:00Z")),
                    serving_observed("a", "b"), None, at(5))
    assert plan.canary is not None and plan.canary.version == "c"
    assert plan.status["canaryStep"] == 0 and "stepStartedAt" not in plan.status  # c's pods are not ready yet
    assert any(e[1] == "CanaryRestarted" for e in plan.events)


def test_canary_continues_when_its_job_is_deleted() -> None:
    status = start_canary().status
    plan = r.decide(spec(), {}, 1, status, r.Selection(None, None, "no newer model"), serving_observed("a", "b"),
                    None, at(5))
    assert plan.canary is not None and plan.canary.version == "b"


def test_abort_and_promote_annotations_are_recorded_as_handled() -> None:
    status = start_canary().status
    plan = r.decide(spec(), {contracts.PROMOTE_ANNOTATION: "now"}, 1, status, r.Selection(cand("b")),
                    serving_observed("a", "b"), None, at(1))
    assert plan.stable is not None and plan.stable.version == "b" and plan.canary is None
    assert plan.status["promotions"][-1]["by"] == "annotation"
    assert plan.status["handledAnnotations"] == {contracts.PROMOTE_ANNOTATION: "now"}
    # The same value again does nothing more.
    again = r.decide(spec(), {contracts.PROMOTE_ANNOTATION: "now"}, 1, plan.status, r.Selection(None),
                     serving_observed("b"), None, at(2))
    assert len(again.status["promotions"]) == len(plan.status["promotions"])

    status = start_canary().status
    plan = r.decide(spec(), {contracts.ABORT_ANNOTATION: "1"}, 1, status, r.Selection(cand("b")),
                    serving_observed("a", "b"), None, at(1))
    assert plan.canary is None and plan.stable is not None and plan.stable.version == "a"
    assert cond(plan.status, "Degraded")["reason"] == "Aborted"
    assert plan.status["rejectedModels"][0]["modelVersion"] == "b"


def test_retry_model_clears_the_rejection_and_degraded() -> None:
    status = start_canary().status
    observed = serving_observed("a", "b")
    plan = r.decide(spec(), {}, 1, status, r.Selection(cand("b")), observed, fail_results(), at(5))
    plan = r.decide(spec(), {}, 1, plan.status, r.Selection(cand("b")), observed, fail_results(), at(10))
    rolled_back = plan.status
    annotations = {contracts.RETRY_MODEL_ANNOTATION: "b"}
    events = r.apply_retry(rolled_back, annotations)
    assert events and "b may be rolled out again" in events[0][2]
    assert rolled_back["rejectedModels"] == []
    assert r.apply_retry(rolled_back, annotations) == []  # handled once
    retried = r.decide(spec(), annotations, 1, rolled_back, r.Selection(cand("b")), serving_observed("a"), None,
                       at(20))
    assert retried.canary is not None and retried.canary.version == "b"
    assert cond(retried.status, "Degraded")["status"] == "False"
    assert retried.status["handledAnnotations"][contracts.RETRY_MODEL_ANNOTATION] == "b"


def test_status_is_stable_when_nothing_changes() -> None:
    plan = r.decide(spec(), {}, 1, {"stable": STABLE_A}, r.Selection(None), serving_observed("a"), None, at(0))
    again = r.decide(spec(), {}, 1, plan.status, r.Selection(None), serving_observed("a"), None, at(30))
    assert again.status == plan.status and not again.events


# --- analysis -----------------------------------------------------------------------------
RULES = [AnalysisRule(metric="ctr", threshold=Threshold(relative_decrease=0.1)),
         AnalysisRule(metric="p99LatencyMs", threshold=Threshold(above=500)),
         AnalysisRule(metric="errorRate", threshold=Threshold(above=0.01))]


def test_evaluate_rules() -> None:
    ok = r.evaluate_rules(RULES, 100, {
        "ctr": tracks(0.19, 0.2, 150, 900), "p99LatencyMs": tracks(120, 110, 40, 200),
        "errorRate": tracks(0.0, 0.0, 40, 200)})
    assert [x["state"] for x in ok] == ["Pass", "Pass", "Pass"]
    assert r.verdict(ok)[0] == "Pass"
    bad = r.evaluate_rules(RULES, 100, {
        "ctr": tracks(0.17, 0.2, 150, 900), "p99LatencyMs": tracks(900, 110, 40, 200),
        "errorRate": tracks(0.2, 0.0, 40, 200)})
    assert [x["state"] for x in bad] == ["Fail", "Fail", "Fail"]
    assert "bound 0.18" in bad[0]["message"] and "0.17" in bad[0]["message"]
    assert bad[1]["threshold"] == "above 500 (bound 500)"
    state, message = r.verdict(bad)
    assert state == "Fail" and "p99LatencyMs" in message
    thin = r.evaluate_rules(RULES, 100, {"ctr": tracks(0.0, 0.2, 150, 50), "p99LatencyMs":
                                         tracks(None, 100, 0, 10), "errorRate": r.TrackMeasurements.failed("cannot query Prometheus")})
    assert [x["state"] for x in thin] == ["Inconclusive", "Inconclusive", "Error"]
    assert r.verdict(thin)[0] == "Inconclusive"


def test_analysis_due_every_interval_and_when_the_pause_ends() -> None:
    s = spec()
    status = {"canary": {"modelVersion": "b"}, "canaryStep": 0, "stepStartedAt": "2026-11-29T09:00:00Z"}
    assert r.analysis_due(s, status, at(0))
    status["lastAnalysisTime"] = "2026-11-29T09:00:08Z"
    assert not r.analysis_due(s, status, at(9))
    assert r.analysis_due(s, status, at(10))  # the 10s pause ended after the last analysis
    status["lastAnalysisTime"] = "2026-11-29T09:00:10Z"
    assert not r.analysis_due(s, status, at(12))
    assert r.analysis_due(s, status, at(15))  # interval
    assert not r.analysis_due(s, {"stable": STABLE_A}, at(100))


def test_no_server_errors_at_all_is_an_error_rate_of_zero() -> None:
    """Measured once for canary analysis and MonitorPolicy alike (recops.monitor.evaluation.measure_builtin)."""
    rule = [AnalysisRule(metric="errorRate", threshold=Threshold(above=0.01))]
    selector = TrackSelector("shop", "ranker", "canary", "b")
    # Requests, but no 5xx series: PromQL's ratio is empty.
    requests = asyncio.run(measure_builtin(FakePrometheus({"requests": 40.0}), "errorRate", selector, "1m"))
    assert requests == Measurement(0.0, 40.0)
    [result] = r.evaluate_rules(rule, 100, {"errorRate": r.TrackMeasurements(requests, requests)})
    assert (result["state"], result["canary"], result["stable"]) == ("Pass", 0.0, 0.0)
    idle = asyncio.run(measure_builtin(FakePrometheus({}), "errorRate", selector, "1m"))
    assert idle == Measurement(None, 0.0)
    [result] = r.evaluate_rules(rule, 100, {"errorRate": r.TrackMeasurements(idle, requests)})
    assert result["state"] == "Inconclusive" and "no canary requests" in result["message"]


def inconclusive_results() -> list[dict[str, Any]]:
    return r.evaluate_rules([AnalysisRule(metric="ctr", threshold=Threshold(relative_decrease=0.1))], 100,
                            {"ctr": r.TrackMeasurements.failed("cannot query Prometheus at http://prom: refused")})


def test_a_canary_without_a_verdict_is_rolled_back_at_its_progress_deadline() -> None:
    deadline = spec(rollout={"strategy": "Canary", "canary": {
        "steps": [{"weight": 20, "pause": "10s"}], "analysis": {"interval": "5s"}, "progressDeadlineSeconds": 60}})
    assert spec().rollout.canary is not None and spec().rollout.canary.progress_deadline_seconds == 600  # the default
    status = r.decide(deadline, {}, 1, {"stable": STABLE_A}, r.Selection(cand("b")), serving_observed("a"), None,
                      at(0)).status
    observed = serving_observed("a", "b")
    plan = r.decide(deadline, {}, 1, status, r.Selection(cand("b")), observed, inconclusive_results(), at(5))
    # No verdict since the canary started (its pods were not ready at 0 s).
    assert plan.status["stalledSince"] == "2026-11-29T09:00:00Z" and plan.canary is not None
    # A verdict is progress: a Pass clears the clock, so only an unbroken stretch without one counts.
    plan = r.decide(deadline, {}, 1, plan.status, r.Selection(cand("b")), observed, pass_results(), at(9))
    assert "stalledSince" not in plan.status and plan.canary is not None
    for second in (20, 50, 79):
        plan = r.decide(deadline, {}, 1, plan.status, r.Selection(cand("b")), observed, inconclusive_results(),
                        at(second))
        assert plan.canary is not None and cond(plan.status, "Progressing")["reason"] == "Inconclusive"
    assert plan.status["stalledSince"] == "2026-11-29T09:00:20Z"
    plan = r.decide(deadline, {}, 1, plan.status, r.Selection(cand("b")), observed, inconclusive_results(), at(80))
    assert plan.canary is None and plan.stable is not None and plan.stable.version == "a"  # never promoted unmeasured
    degraded = cond(plan.status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert "no verdict for 60s" in degraded["message"] and "refused" in degraded["message"]
    assert cond(plan.status, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert plan.status["phase"] == "Failed" and "stalledSince" not in plan.status
    assert plan.status["rejectedModels"][0]["modelVersion"] == "b"
    warning = next(e for e in plan.events if e[1] == "ProgressDeadlineExceeded")
    assert warning[0] == "Warning" and "progressDeadlineSeconds" in warning[2]


def test_a_canary_whose_pods_never_get_ready_is_rolled_back_and_zero_waits_for_ever() -> None:
    def with_deadline(seconds: int) -> RecModelDeploymentSpec:
        return spec(rollout={"strategy": "Canary", "canary": {"steps": [{"weight": 20}],
                                                               "progressDeadlineSeconds": seconds}})

    for seconds, rolled_back in ((30, True), (0, False)):
        status = r.decide(with_deadline(seconds), {}, 1, {"stable": STABLE_A}, r.Selection(cand("b")),
                          serving_observed("a"), None, at(0)).status
        crashing = r.Observed(stable_replicas=2, stable_ready=2, stable_version="a", stable_rolled_out=True,
                              canary_ready=0, canary_version="b", problem="CrashLoopBackOff")
        for second in (1, 29, 3600):
            plan = r.decide(with_deadline(seconds), {}, 1, status, r.Selection(cand("b")), crashing, None, at(second))
            status = plan.status
            if plan.canary is None:
                break
        assert (plan.canary is None) == rolled_back, seconds
        if rolled_back:
            assert "CrashLoopBackOff" in cond(status, "Degraded")["message"]
