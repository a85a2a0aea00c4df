"""Leader election against an API server that accepts requests and never answers (issue 19): the leader must stop
acting within the renew deadline, not after the client's request timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from recops.controllers.kube import Kube
from recops.controllers.leader import LeaseElector, lease_client


@pytest.fixture
def hung_api_server() -> Iterator[str]:
    """A TCP server that accepts every connection and answers nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def test_a_leader_whose_renewals_hang_stops_within_the_renew_deadline(hung_api_server: str) -> None:
    configuration = client.Configuration()
    configuration.host = hung_api_server
    operator_kube = Kube(client.ApiClient(configuration), request_timeout=60)  # the operator's own: long
    lease_seconds = 1.5
    elector = LeaseElector(lease_client(operator_kube, lease_seconds), "recops-system", "recops-operator", "me",
                           lease_seconds=lease_seconds)
    assert elector.kube.request_timeout <= elector.renew_deadline
    elector._last_renewed = elector.clock()  # it led until now
    lost = threading.Event()
    started = time.monotonic()
    elector.keep_renewing(lost.set)
    try:
        assert lost.wait(10), "the leader kept acting"
        # Stopped once the renew deadline (1.0s) passed, not after the operator client's 60s request timeout.
        assert elector.renew_deadline <= time.monotonic() - started < 10
    finally:
        elector._stop.set()


def test_losing_is_reported_once() -> None:
    class TakenLease:
        """An API server on which another replica holds the Lease."""

        def get(self, path: str) -> dict[str, object]:
            return {"metadata": {"resourceVersion": "1"},
                    "spec": {"holderIdentity": "other", "renewTime": str(time.monotonic()), "leaseDurationSeconds": 60}}

    elector = LeaseElector(TakenLease(), "ns", "lease", "me", lease_seconds=0.6)  # type: ignore[arg-type]
    elector._last_renewed = elector.clock()
    calls: list[float] = []
    elector.keep_renewing(lambda: calls.append(time.monotonic()))
    time.sleep(2.0)
    elector._stop.set()
    assert len(calls) == 1
