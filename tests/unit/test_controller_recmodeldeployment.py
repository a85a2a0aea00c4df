"""The RecModelDeployment controller's sequencing against the in-memory API and an in-memory Prometheus.

Tests play the Deployment controller (`ready`: the Deployment's status) and the trainer (FineTuneJobs with a
status), run `reconcile` passes on a manual clock, and check Deployments, status and Events. Mirrors
tests/cluster/test_recmodeldeployment.py (named per test); real pods, real metrics and real Prometheus
queries stay there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from recops.api import conditions as c
from recops.api.contracts import LINEAGE_LABEL, RETRY_MODEL_ANNOTATION
from recops.builders import recmodeldeployment as builders
from recops.builders.common import BuilderSettings
from recops.controllers import rollout
from recops.controllers.recmodeldeployment import RecModelDeploymentController
from tests.support.fake_kube import FakeKube, ManualClock
from tests.support.fake_prometheus import FakePrometheus

NS = "shop"
NAME = "ranker"
GOOD = {"ctr": 0.2, "impressions": 200.0, "errorRate": 0.0, "requests": 200.0}
WORSE = {"ctr": 0.05, "impressions": 200.0, "errorRate": 0.0, "requests": 200.0}


@pytest.fixture
def prometheus() -> FakePrometheus:
    return FakePrometheus(tracks={"stable": dict(GOOD), "canary": dict(GOOD)})


@pytest.fixture
def controller(kube: FakeKube, clock: ManualClock, prometheus: FakePrometheus, posted: list[tuple[str, str]],
               operator_loop: asyncio.AbstractEventLoop | None) -> RecModelDeploymentController:
    controller = RecModelDeploymentController(
        kube, BuilderSettings(), post_event=lambda _, t, reason, __: posted.append((t, reason)),
        prometheus_url="http://prometheus:9090", now=clock, prometheus_factory=prometheus)
    controller.loop = operator_loop
    return controller


def canary_rollout(**canary: Any) -> dict[str, Any]:
    return {"strategy": "Canary", "canary": {
        "steps": [{"weight": 50, "pause": "4s"}],
        "analysis": {"interval": "2s", "window": "2m", "minImpressions": 30,
                     "rules": [{"metric": "ctr", "threshold": {"relativeDecrease": 0.3}},
                               {"metric": "errorRate", "threshold": {"above": 0.5}}]},
        "failureLimit": 2, "progressDeadlineSeconds": 30, **canary}}


def rmd(kube: FakeKube, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment",
                     "metadata": {"name": NAME, "namespace": NS}, "spec": {"model": model, **spec}})


def trained(kube: FakeKube, name: str, completed: str, *, phase: str = "Succeeded",
            lineage: str | None = "ranker") -> dict[str, Any]:
    """A FineTuneJob as the FineTuneJob controller leaves it when its model passed its gate."""
    ready = "True" if phase == "Succeeded" else "False"
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": c.READY, "status": ready, "reason": "x"}]}
    if phase == "Succeeded":
        status.update(model={"uri": f"/models/{NS}/{name}", "version": name}, completionTime=completed)
    return kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
                     "metadata": {"name": name, "namespace": NS, "labels": {LINEAGE_LABEL: lineage} if lineage else {}},
                     "spec": {"task": "click-through", "dataset": {"uri": "/d"}, "output": {"uri": "/models"}},
                     "status": status})


def deployment(kube: FakeKube, track: str) -> dict[str, Any] | None:
    return kube.obj("Deployment", NS, builders.deployment_name(NAME, track))


def version(kube: FakeKube, track: str) -> str | None:
    found = deployment(kube, track)
    return None if found is None else found["metadata"]["annotations"][builders.MODEL_VERSION_LABEL]


def ready(kube: FakeKube, track: str) -> None:
    """The Deployment controller: every replica of the current template is ready."""
    found = deployment(kube, track)
    assert found is not None
    n = int(found["spec"].get("replicas") or 1)
    kube.set_status("Deployment", NS, found["metadata"]["name"], {
        "observedGeneration": found["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
        "readyReplicas": n, "availableReplicas": n})


def status(kube: FakeKube) -> dict[str, Any]:
    found = kube.obj("RecModelDeployment", NS, NAME)
    assert found is not None
    return found.get("status") or {}


def conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in status(kube).get("conditions") or []}


def serving(kube: FakeKube, clock: ManualClock, controller: RecModelDeploymentController) -> None:
    """From nothing to ranker-1 serving all traffic from the stable track."""
    rmd(kube, {"lineage": "ranker"}, rollout=canary_rollout())
    trained(kube, "ranker-1", "2026-12-01T07:00:00Z")
    controller.reconcile(NS, NAME, apply_children=True)
    ready(kube, "stable")
    assert controller.reconcile(NS, NAME).phase == "Serving"


def canary_ready(kube: FakeKube, clock: ManualClock, controller: RecModelDeploymentController) -> None:
    """ranker-2 succeeds; its canary starts and its pods become ready."""
    clock.advance(60)
    trained(kube, "ranker-2", clock.text())
    assert controller.reconcile(NS, NAME).phase == "Canary"
    ready(kube, "canary")


# --- tests -----------------------------------------------------------------------------------------
def test_a_pinned_uri_serves_from_a_stable_deployment_and_service(
    kube: FakeKube, controller: RecModelDeploymentController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_pinned_uri_rolling_update_printer_columns_and_deletion."""
    body = rmd(kube, {"uri": "/models/shop/ranker-a"})
    first = controller.reconcile(NS, NAME, apply_children=True)
    assert first.phase == "Progressing" and first.active
    assert version(kube, "stable") == "ranker-a" and deployment(kube, "canary") is None
    service = kube.obj("Service", NS, builders.service_name(NAME))
    assert service is not None and service["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert kube.obj("Secret", NS, builders.feedback_secret_name(NAME)) is not None
    ready(kube, "stable")
    second = controller.reconcile(NS, NAME)
    assert second.phase == "Serving" and not second.active and conditions(kube)[c.READY]["status"] == "True"
    assert status(kube)["stable"]["readyReplicas"] == 1 and ("Normal", c.PROMOTED) in posted

    writes = len(kube.writes)
    assert not controller.reconcile(NS, NAME).status_written and len(kube.writes) == writes  # idle: no writes
    kube.patch("RecModelDeployment", NS, NAME, {"spec": {"model": {"uri": "/models/shop/ranker-b"}}})
    assert controller.reconcile(NS, NAME, apply_children=True).phase == "Progressing"  # a rolling update
    assert version(kube, "stable") == "ranker-b" and ("Normal", c.ROLLING_UPDATE) in posted
    assert [p["modelVersion"] for p in status(kube)["promotions"]] == ["ranker-a", "ranker-b"]


def test_waits_for_a_lineage_then_a_newer_model_canaries_and_is_promoted(
    kube: FakeKube, clock: ManualClock, controller: RecModelDeploymentController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_waits_for_a_lineage_then_canary_promotes."""
    rmd(kube, {"lineage": "ranker"}, rollout=canary_rollout())
    assert controller.reconcile(NS, NAME, apply_children=True).phase == "Pending"
    assert conditions(kube)[c.READY]["reason"] == c.WAITING_FOR_MODEL and deployment(kube, "stable") is None
    trained(kube, "ranker-0", "2026-12-01T06:00:00Z", phase="Failed")  # not a candidate
    trained(kube, "ranker-1", "2026-12-01T07:00:00Z")
    controller.reconcile(NS, NAME)
    assert version(kube, "stable") == "ranker-1"  # the first model serves at once: nothing to compare with
    ready(kube, "stable")
    assert controller.reconcile(NS, NAME).phase == "Serving"

    canary_ready(kube, clock, controller)
    assert version(kube, "canary") == "ranker-2" and version(kube, "stable") == "ranker-1"
    assert ("Normal", rollout.CANARY_STARTED) in posted
    judged = controller.reconcile(NS, NAME)  # analysis passes; the step's pause has 4 s to go
    assert judged.phase == "Canary" and [r["state"] for r in status(kube)["lastAnalysis"]] == ["Pass", "Pass"]
    assert 'track="canary"' in " ".join(prometheus_asked(controller)) and "next step in 4s" in \
        conditions(kube)[c.PROGRESSING]["message"]
    clock.advance(1)
    controller.reconcile(NS, NAME)  # analysis not due yet: the last judgement stands
    assert status(kube)["canary"]["modelVersion"] == "ranker-2"
    clock.advance(4)
    promoted = controller.reconcile(NS, NAME)
    assert promoted.phase == "Progressing" and deployment(kube, "canary") is None
    assert version(kube, "stable") == "ranker-2" and status(kube)["promotions"][-1]["by"] == "analysis"
    ready(kube, "stable")
    assert controller.reconcile(NS, NAME).phase == "Serving"


def prometheus_asked(controller: RecModelDeploymentController) -> list[str]:
    factory = controller.prometheus_factory
    assert isinstance(factory, FakePrometheus)
    return factory.asked


def test_a_worse_canary_is_rolled_back_and_not_retried_until_asked(
    kube: FakeKube, clock: ManualClock, controller: RecModelDeploymentController, prometheus: FakePrometheus,
    posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_worse_canary_rolled_back_not_retried_until_asked."""
    serving(kube, clock, controller)
    prometheus.tracks["canary"] = dict(WORSE)
    canary_ready(kube, clock, controller)
    controller.reconcile(NS, NAME)
    assert status(kube)["analysisFailures"] == 1 and ("Warning", rollout.ANALYSIS_FAILED) in posted
    clock.advance(2)
    rolled_back = controller.reconcile(NS, NAME)
    assert rolled_back.phase == "Failed" and deployment(kube, "canary") is None
    assert version(kube, "stable") == "ranker-1" and ("Warning", c.ROLLED_BACK) in posted
    assert [r["modelVersion"] for r in status(kube)["rejectedModels"]] == ["ranker-2"]
    assert conditions(kube)[c.DEGRADED]["status"] == "True"
    for _ in range(3):
        clock.advance(10)
        controller.reconcile(NS, NAME)
    assert deployment(kube, "canary") is None  # a rejected model is not tried again

    kube.patch("RecModelDeployment", NS, NAME, {"metadata": {"annotations": {RETRY_MODEL_ANNOTATION: "ranker-2"}}})
    prometheus.tracks["canary"] = dict(GOOD)
    assert controller.reconcile(NS, NAME).phase == "Canary" and version(kube, "canary") == "ranker-2"
    assert conditions(kube)[c.DEGRADED]["status"] == "False"
    assert status(kube)["handledAnnotations"] == {RETRY_MODEL_ANNOTATION: "ranker-2"}
    annotations = kube.obj("RecModelDeployment", NS, NAME)["metadata"]["annotations"]  # type: ignore[index]
    assert annotations == {RETRY_MODEL_ANNOTATION: "ranker-2"}  # the user's object is left as applied


@pytest.mark.parametrize("canary_pods_ready", [True, False], ids=["no-metrics", "pods-never-ready"])
def test_a_canary_without_a_verdict_is_rolled_back_at_its_progress_deadline(
    kube: FakeKube, clock: ManualClock, controller: RecModelDeploymentController, prometheus: FakePrometheus,
    posted: list[tuple[str, str]], canary_pods_ready: bool,
) -> None:
    """Mirrors test_a_canary_without_metrics_is_rolled_back_at_its_progress_deadline."""
    serving(kube, clock, controller)
    prometheus.tracks["canary"] = {}  # no series: Inconclusive
    clock.advance(60)
    trained(kube, "ranker-2", clock.text())
    controller.reconcile(NS, NAME)
    if canary_pods_ready:
        ready(kube, "canary")
    for _ in range(14):  # 28 s: within the deadline
        clock.advance(2)
        assert controller.reconcile(NS, NAME).phase == "Canary"
    clock.advance(3)
    assert controller.reconcile(NS, NAME).phase == "Failed"
    assert conditions(kube)[c.DEGRADED]["reason"] == c.PROGRESS_DEADLINE_EXCEEDED
    assert ("Warning", c.PROGRESS_DEADLINE_EXCEEDED) in posted and deployment(kube, "canary") is None


def test_a_pinned_fine_tune_job_is_waited_for(kube: FakeKube, controller: RecModelDeploymentController) -> None:
    """Mirrors test_pinned_fine_tune_job_waits_for_it."""
    rmd(kube, {"fineTuneJobRef": {"name": "ranker-1"}})
    controller.reconcile(NS, NAME, apply_children=True)
    assert conditions(kube)[c.READY]["reason"] == c.MODEL_NOT_FOUND
    trained(kube, "ranker-1", "", phase="Running", lineage=None)
    controller.reconcile(NS, NAME)
    assert conditions(kube)[c.READY]["reason"] == c.WAITING_FOR_MODEL and deployment(kube, "stable") is None
    kube.set_status("FineTuneJob", NS, "ranker-1", {
        "phase": "Succeeded", "model": {"uri": "/models/shop/ranker-1", "version": "ranker-1"},
        "completionTime": "2026-12-01T08:00:00Z", "conditions": [{"type": c.READY, "status": "True", "reason": "x"}]},
        manager="recops")
    controller.reconcile(NS, NAME)
    assert version(kube, "stable") == "ranker-1"


def test_the_operator_leaves_hpa_replicas_alone(kube: FakeKube, controller: RecModelDeploymentController) -> None:
    """Mirrors test_operator_leaves_hpa_replicas_alone: server-side apply leaves fields it does not apply."""
    rmd(kube, {"uri": "/models/shop/ranker-a"}, autoscaling={"minReplicas": 1, "maxReplicas": 4})
    controller.reconcile(NS, NAME, apply_children=True)
    assert kube.obj("HorizontalPodAutoscaler", NS, builders.deployment_name(NAME, "stable")) is not None
    kube.patch("Deployment", NS, builders.deployment_name(NAME, "stable"), {"spec": {"replicas": 3}},
               manager="horizontal-pod-autoscaler")
    controller.reconcile(NS, NAME, apply_children=True)
    assert deployment(kube, "stable")["spec"]["replicas"] == 3  # type: ignore[index]


def test_a_spec_that_cannot_be_built_is_invalid_once_not_retried(
    kube: FakeKube, controller: RecModelDeploymentController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_a_spec_that_cannot_be_built_is_invalid_once_not_retried."""
    rmd(kube, {"uri": "/models/shop/ranker-a"})
    kube.fail_next("PATCH", "Deployment", 422, "Deployment.apps is invalid: spec.template.spec.volumes[0].name")
    assert controller.reconcile(NS, NAME, apply_children=True).phase == "Pending"
    assert conditions(kube)[c.READY]["reason"] == c.INVALID_SPEC
    assert posted.count(("Warning", c.INVALID_SPEC)) == 1
    writes = len(kube.writes)
    for _ in range(3):
        controller.reconcile(NS, NAME)
    assert len(kube.writes) == writes and posted.count(("Warning", c.INVALID_SPEC)) == 1
    assert controller.reconcile(NS, NAME, apply_children=True).phase == "Progressing"  # a restart tries again


def test_an_absolute_bound_needs_only_the_canarys_traffic_and_no_5xx_is_no_error(
    kube: FakeKube, clock: ManualClock, controller: RecModelDeploymentController, prometheus: FakePrometheus,
) -> None:
    """The one rule judge (recops.monitor.rules): the stable track is the reference of relative bounds only, and
    requests without any 5xx series are an error rate of 0 (PromQL's ratio is empty)."""
    absolute = canary_rollout(analysis={"interval": "2s", "window": "2m", "minImpressions": 30, "rules": [
        {"metric": "ctr", "threshold": {"below": 0.1}}, {"metric": "errorRate", "threshold": {"above": 0.5}}]})
    rmd(kube, {"lineage": "ranker"}, rollout=absolute)
    trained(kube, "ranker-1", "2026-12-01T07:00:00Z")
    controller.reconcile(NS, NAME, apply_children=True)
    ready(kube, "stable")
    controller.reconcile(NS, NAME)
    prometheus.tracks["stable"] = {"ctr": 0.2, "impressions": 10.0, "requests": 10.0}  # fewer than minImpressions
    prometheus.tracks["canary"] = {"ctr": 0.2, "impressions": 200.0, "requests": 200.0}  # no 5xx series
    canary_ready(kube, clock, controller)
    controller.reconcile(NS, NAME)
    analysis = status(kube)["lastAnalysis"]
    assert [(r["metric"], r["state"]) for r in analysis] == [("ctr", "Pass"), ("errorRate", "Pass")]
    assert analysis[1]["canary"] == 0.0
    clock.advance(4)
    assert controller.reconcile(NS, NAME).phase == "Progressing" and version(kube, "stable") == "ranker-2"
