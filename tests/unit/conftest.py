"""Fixtures of the controller tests (tests/unit/test_controller_*.py): the in-memory API, its clock, and the
Events a controller posted."""

from __future__ import annotations

import pytest

from tests.support.fake_kube import FakeKube, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kube(clock: ManualClock) -> FakeKube:
    return FakeKube(clock)


@pytest.fixture
def posted() -> list[tuple[str, str]]:
    return []
