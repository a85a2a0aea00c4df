"""The operator's one Events poster (controllers/events.py), against the in-memory API."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from recops.controllers.events import EventRecorder
from tests.support.fake_kube import FakeKube, ManualClock

BODY = {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "ranker", "namespace": "shop", "uid": "u-1"}}


def test_events_are_posted_from_a_background_thread_and_a_failure_loses_only_that_event(
        kube: FakeKube, clock: ManualClock) -> None:
    recorder = EventRecorder(kube, "op-0", clock=clock)
    kube.fail_next("POST", "Event", 403, "events is forbidden")
    recorder(BODY, "Normal", "Refused", "the first post is refused")
    recorder(BODY, "Normal", "JobCreated", "created Job ranker")
    recorder(BODY, "Warning", "Unschedulable", "m" * 2000)
    recorder.flush()
    assert sorted(kube.events_of("ranker")) == [("Normal", "JobCreated"), ("Warning", "Unschedulable")]
    event, long = sorted(kube.all("Event", "shop"), key=lambda e: e["reason"])
    assert event["involvedObject"] == {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "name": "ranker",
                                       "namespace": "shop", "uid": "u-1"}
    assert event["reportingComponent"] == "recops-operator" and event["reportingInstance"] == "op-0"
    assert event["lastTimestamp"] == clock.text()
    assert len(long["message"]) == 1024


def test_every_controller_posts_through_the_operators_one_recorder(kube: FakeKube) -> None:
    from recops.controllers.main import Operator, OperatorConfig
    from recops.controllers.metrics import OperatorMetrics

    operator = Operator(OperatorConfig(), kube=kube, metrics=OperatorMetrics(CollectorRegistry()))
    assert operator.finetunejobs.post_event is operator.events and operator.monitor.post_event is operator.events
    operator.rmds.post_event({**BODY, "kind": "RecModelDeployment"}, "Warning", "RolledBack", "canary lost")
    operator.events.flush()
    assert kube.events_of("ranker") == [("Warning", "RolledBack")]
    assert operator.metrics.rollbacks.labels(namespace="shop", deployment="ranker")._value.get() == 1
