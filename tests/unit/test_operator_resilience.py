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
    delays = [main.retry_delay(retry) for retry in range(12)]
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert delays == sorted(delays) and max(delays) == main.RETRY_MAX_SECONDS == 300.0
    assert main.retry_delay(10_000) == 300.0


def test_lease_times_are_micro_times() -> None:
    from datetime import UTC, datetime

    assert micro_time(datetime(2026, 11, 29, 8, 0, 1, 2345, tzinfo=UTC)) == "2026-11-29T08:00:01.002345Z"
