"""Fixtures of the controller tests (tests/unit/test_controller_*.py): the in-memory API, its clock, and the
Events a controller posted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

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


@pytest.fixture(params=["own-loop", "operator-loop"])
def operator_loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop | None]:
    """A controller's `loop` for its Prometheus queries; each test using it runs twice: on a loop of their own
    (None), and, as in the operator, on an event loop running in another thread while the pass runs in this one."""
    if request.param == "own-loop":
        yield None
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
