"""Operator settings for several replicas and the back-off of failing handlers (no cluster)."""

from __future__ import annotations

import pytest

from recops.controllers import main
from recops.controllers.leader import micro_time
from tests.unit.test_operator import parse


def test_leader_election_is_off_by_default_and_set_by_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from recops.controllers import command

    config = command.config_from(parse([]))
    assert config.leader_election is False and config.leader_election_lease == "recops-operator"
    assert config.leader_election_lease_seconds == 15.0 and config.leader_election_namespace is None
    monkeypatch.setenv("RECOPS_LEADER_ELECT", "true")
    monkeypatch.setenv("RECOPS_LEADER_ELECTION_NAMESPACE", "ops")
    config = command.config_from(parse(["--leader-election-lease-seconds", "6"]))
    assert config.leader_election is True and config.leader_election_namespace == "ops"
    assert config.leader_election_lease_seconds == 6.0
    assert main.operator_namespace(config) == "ops"


def test_failing_handlers_back_off_exponentially_up_to_five_minutes() -> None:
    from recops.controllers import schedule

    delays = [schedule.retry_delay(retry) for retry in range(12)]
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert delays == sorted(delays) and max(delays) == schedule.RETRY_MAX_SECONDS == 300.0
    assert schedule.retry_delay(10_000) == 300.0


def test_lease_times_are_micro_times() -> None:
    from datetime import UTC, datetime

    assert micro_time(datetime(2026, 11, 29, 8, 0, 1, 2345, tzinfo=UTC)) == "2026-11-29T08:00:01.002345Z"


def test_child_events_that_change_nothing_a_pass_reads_are_skipped() -> None:
    from recops.controllers.main import Operator, OperatorConfig

    operator = Operator(OperatorConfig(), kube=object())  # type: ignore[arg-type]
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "n", "uid": "u", "finalizers": ["recops.dev/finalizer"]},
           "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert operator.child_changed(pod)  # the first event of an object always counts
    pod["status"]["podIP"] = "10.0.0.1"
    pod["status"]["conditions"].append({"type": "Ready", "status": "True"})
    assert not operator.child_changed(pod)  # IPs and readiness: nothing a pass reads
    pod["status"]["phase"] = "Running"
    assert operator.child_changed(pod)
    pod["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {"exitCode": 3}}}]
    assert operator.child_changed(pod)
    pod["metadata"]["finalizers"] = []
    assert operator.child_changed(pod)
    assert operator.child_changed(pod, deleted=True) and operator.child_changed(pod)  # DELETED, then new

    job = {"kind": "Job", "metadata": {"name": "j", "namespace": "n", "uid": "v"},
           "spec": {"suspend": False, "template": {}}, "status": {"active": 1}}
    assert operator.child_changed(job)
    job["status"].update(ready=1, uncountedTerminatedPods={"succeeded": ["x"]})
    assert not operator.child_changed(job)
    job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    assert operator.child_changed(job)
