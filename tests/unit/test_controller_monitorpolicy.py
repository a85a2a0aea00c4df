"""The MonitorPolicy controller's sequencing against the in-memory API and an in-memory Prometheus.

Each test runs `evaluate` on a manual clock and plays the FineTuneJob controller (a retrain's status)
where needed. Mirrors tests/cluster/test_monitorpolicy.py (named per test); real traffic, a real
Prometheus and the closed loop through a real trainer stay there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from recops.api import conditions as c
from recops.api.contracts import LINEAGE_LABEL
from recops.controllers.monitorpolicy import Evaluation, MonitorPolicyController
from tests.support.fake_kube import FakeKube, ManualClock
from tests.support.fake_prometheus import FakePrometheus

NS = "shop"
POLICY = "ranker-quality"
EVENT_LOG = "s3://events/shop"


@pytest.fixture
def prometheus() -> FakePrometheus:
    return FakePrometheus({"ctr": 0.05, "impressions": 500.0})  # below the rule's 0.1


@pytest.fixture
def controller(kube: FakeKube, clock: ManualClock, prometheus: FakePrometheus, posted: list[tuple[str, str]],
               operator_loop: asyncio.AbstractEventLoop | None) -> MonitorPolicyController:
    controller = MonitorPolicyController(kube, default_prometheus_url="http://prometheus:9090", clock=clock,
                                         post_event=lambda _, t, reason, __: posted.append((t, reason)),
                                         prometheus_factory=prometheus)
    controller.loop = operator_loop
    return controller


def target(kube: FakeKube, **status: Any) -> dict[str, Any]:
    return kube.put({
        "apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": "ranker", "namespace": NS},
        "spec": {"model": {"lineage": "ranker"}, "serving": {"eventLog": {"uri": EVENT_LOG}}},
        "status": {"phase": "Serving", "stable": {"modelUri": "/models/shop/ranker-1", "modelVersion": "ranker-1",
                                                  "completedAt": "2026-12-01T07:00:00Z"}, **status}})


def policy(kube: FakeKube, *, for_: str = "0s", **retrain: Any) -> dict[str, Any]:
    return kube.put({
        "apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy", "metadata": {"name": POLICY, "namespace": NS},
        "spec": {"targetRef": {"name": "ranker"}, "interval": "10s", "baselineWindow": "1m",
                 "rules": [{"name": "ctr", "metric": "ctr", "threshold": {"below": 0.1}, "for": for_,
                            "minSamples": 100}],
                 "retrain": {"template": {"spec": {"task": "click-through", "output": {"uri": "/models"}}},
                             "dataWindow": "6h", "cooldown": "1h", "maxPerDay": 2, "historyLimit": 5, **retrain}}})


def evaluate(controller: MonitorPolicyController) -> Evaluation:
    return controller.evaluate(NS, POLICY)


def status(kube: FakeKube) -> dict[str, Any]:
    found = kube.obj("MonitorPolicy", NS, POLICY)
    assert found is not None
    return found.get("status") or {}


def conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in status(kube).get("conditions") or []}


def retrains(kube: FakeKube) -> list[dict[str, Any]]:
    return sorted(kube.all("FineTuneJob", NS), key=lambda o: o["metadata"]["creationTimestamp"])


def finish(kube: FakeKube, name: str) -> None:
    """The FineTuneJob controller's verdict on a retrain."""
    kube.set_status("FineTuneJob", NS, name, {"phase": "Succeeded", "conditions": [
        {"type": c.COMPLETE, "status": "True", "reason": c.SUCCEEDED}]}, manager="recops")


# --- tests -----------------------------------------------------------------------------------------
def test_a_breach_retrains_once_then_cooldown_and_max_per_day_hold_back(
    kube: FakeKube, clock: ManualClock, controller: MonitorPolicyController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_ctr_falls_breach_after_for_one_retrain_then_cooldown and the maxPerDay half of
    test_mid_canary_max_per_day_and_history_limit."""
    target(kube)
    mp = policy(kube)
    first = evaluate(controller)
    assert first.result == "breached" and first.created is not None
    [job] = retrains(kube)
    meta = job["metadata"]
    assert meta["name"] == first.created and meta["ownerReferences"][0]["uid"] == mp["metadata"]["uid"]
    assert meta["labels"][LINEAGE_LABEL] == "ranker"
    dataset = job["spec"]["dataset"]
    assert (dataset["uri"], dataset["since"]) == (EVENT_LOG, "2026-12-01T02:00:00Z")  # dataWindow 6h
    assert status(kube)["lastRetrain"]["fineTuneJob"] == first.created
    assert conditions(kube)[c.RETRAINING]["status"] == "True" and ("Normal", c.RETRAIN_STARTED) in posted
    assert conditions(kube)[c.HEALTHY]["reason"] == c.RULE_BREACHED

    clock.advance(10)
    assert evaluate(controller).created is None and len(retrains(kube)) == 1  # one in flight
    finish(kube, first.created)
    clock.advance(10)
    held = evaluate(controller)
    assert held.created is None and len(retrains(kube)) == 1  # cooldown 1h
    assert conditions(kube)[c.RETRAINING]["reason"] == c.RETRAIN_FINISHED and ("Normal", c.RETRAIN_FINISHED) in posted
    assert ("Normal", "RetrainSkipped") in posted

    clock.advance(3600)
    second = evaluate(controller)
    assert second.created is not None and second.created != first.created and len(retrains(kube)) == 2
    finish(kube, second.created)
    clock.advance(3700)
    assert evaluate(controller).created is None and len(retrains(kube)) == 2  # maxPerDay 2
    clock.advance(24 * 3600)
    assert evaluate(controller).created is not None  # a new day


def test_a_rule_breaches_only_after_for_and_pending_never_retrains(
    kube: FakeKube, clock: ManualClock, controller: MonitorPolicyController,
) -> None:
    target(kube)
    policy(kube, for_="20s")
    assert evaluate(controller).created is None
    assert status(kube)["rules"][0]["state"] == "Pending" and retrains(kube) == []
    clock.advance(10)
    assert evaluate(controller).created is None
    clock.advance(11)
    assert evaluate(controller).created is not None and status(kube)["rules"][0]["state"] == "Breached"


def test_mid_canary_holds_back_and_history_limit_prunes_the_oldest_finished(
    kube: FakeKube, clock: ManualClock, controller: MonitorPolicyController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_mid_canary_max_per_day_and_history_limit."""
    target(kube, phase="Canary", canary={"modelUri": "/models/shop/ranker-2", "modelVersion": "ranker-2"})
    policy(kube, historyLimit=1, cooldown="1m", maxPerDay=10)
    assert evaluate(controller).created is None and retrains(kube) == []  # mid-canary
    kube.set_status("RecModelDeployment", NS, "ranker", {"phase": "Serving", "canary": None})
    names = []
    for _ in range(3):
        clock.advance(61)
        created = evaluate(controller).created
        assert created is not None
        names.append(created)
        finish(kube, created)
    clock.advance(61)
    result = evaluate(controller)
    kept = [o["metadata"]["name"] for o in retrains(kube)]
    assert names[0] not in kept and names[-1] in kept and len(kept) == 2  # historyLimit 1 finished + new one
    assert ("Normal", "RetrainPruned") in posted and result.created in kept


def test_too_little_traffic_is_insufficient_data_and_never_retrains(
    kube: FakeKube, controller: MonitorPolicyController, prometheus: FakePrometheus,
) -> None:
    """Mirrors test_too_little_traffic_is_insufficient_data_and_never_retrains."""
    target(kube)
    policy(kube)
    prometheus.values = {"ctr": 0.0, "impressions": 12.0}
    assert evaluate(controller).created is None
    assert status(kube)["rules"][0]["state"] == "InsufficientData" and retrains(kube) == []


def test_prometheus_down_is_metrics_unavailable_and_never_retrains(
    kube: FakeKube, clock: ManualClock, controller: MonitorPolicyController, prometheus: FakePrometheus,
    posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_prometheus_stopped_is_metrics_unavailable_and_never_retrains."""
    target(kube)
    policy(kube)
    prometheus.fail = "cannot query Prometheus at http://prometheus:9090: connection refused"
    result = evaluate(controller)
    assert result.result == "metrics_unavailable" and result.created is None and retrains(kube) == []
    unavailable = conditions(kube)[c.METRICS_UNAVAILABLE]
    assert unavailable["status"] == "True" and "connection refused" in unavailable["message"]
    assert ("Warning", c.QUERY_FAILED) in posted
    prometheus.fail = None
    clock.advance(10)
    assert evaluate(controller).created is not None  # back: the breach is seen and acted on
    assert conditions(kube)[c.METRICS_UNAVAILABLE]["status"] == "False"


def test_a_missing_target_is_a_clear_condition_and_the_policy_waits(
    kube: FakeKube, controller: MonitorPolicyController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_missing_target_is_a_clear_condition_and_the_policy_waits."""
    policy(kube)
    assert evaluate(controller).result == "target_not_found"
    assert conditions(kube)[c.READY]["reason"] == c.TARGET_NOT_FOUND and ("Warning", c.TARGET_NOT_FOUND) in posted
    target(kube)
    assert evaluate(controller).created is not None


def test_status_is_written_once_per_evaluation_and_not_when_nothing_changed(
    kube: FakeKube, clock: ManualClock, controller: MonitorPolicyController, prometheus: FakePrometheus,
) -> None:
    target(kube)
    policy(kube, cooldown="1h")
    prometheus.values = {"ctr": 0.5, "impressions": 500.0}  # healthy
    evaluate(controller)
    assert len(kube.writes_of("MonitorPolicy", sub="status")) == 1
    assert all(w[4] == "status" for w in kube.writes_of("MonitorPolicy"))  # the user's object is never written
    assert conditions(kube)[c.HEALTHY]["status"] == "True" and status(kube)["observedGeneration"] == 1
    assert not evaluate(controller).status_written  # the same second, the same answers: nothing to write
    clock.advance(10)
    assert evaluate(controller).status_written  # lastEvaluationTime moved
    assert len(kube.writes_of("MonitorPolicy", sub="status")) == 2
