"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.

Several operator replicas may run (a Deployment with `replicas: 2`, or a rolling update); only
the one holding the Lease acts. A replica waits until the Lease is free or has not been
renewed for `lease_seconds` (judged by the local clock from when this replica last saw the
record change, so clock skew between nodes does not matter), takes it with an optimistic-
concurrency update (`resourceVersion`: of two replicas racing, one gets 409), and renews it
every `lease_seconds / 3`. A leader that cannot renew within `renew_deadline` stops the process
at once (it must not act while another replica may already lead): every Lease request is bounded
by the renew deadline, and a watchdog that waits on no request checks the deadline, so a request
that hangs (an API server that accepts and never answers) cannot keep a stale leader acting. On a
clean shutdown it releases the Lease so a standby takes over without waiting for it to expire.

Chosen over Kopf peering, which needs Kopf's own cluster-wide CRDs (KopfPeering,
ClusterKopfPeering) installed and RBAC on them, and which pauses replicas rather than
guaranteeing a single writer: a Lease is a built-in kind, namespaced, and simple to ship in a chart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from recops.controllers.kube import ApiError, Kube, resource_path

log = logging.getLogger("recops.leader")

LEASE_API_VERSION = "coordination.k8s.io/v1"


def lease_client(kube: Kube, lease_seconds: float) -> Kube:
    """A client for the Lease alone whose requests time out within the renew deadline (the operator's own may take
    longer)."""
    return Kube(kube.api_client, kube.field_manager, request_timeout=lease_seconds / 3)


def micro_time(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *, lease_seconds: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.renew_deadline = lease_seconds * 2 / 3
        self.kube = kube  # its requests should time out within the renew deadline (lease_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = max(lease_seconds / 3, 0.2)
        self.retry_seconds = max(lease_seconds / 7, 0.2)
        self.clock = clock
        self._observed: tuple[str | None, str | None] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._last_renewed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return resource_path(LEASE_API_VERSION, "leases", self.namespace, self.name)

    # --- one attempt ------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        now = datetime.now(UTC)
        lease = self.kube.get(self.path)
        if lease is None:  # a 409: another replica created it first
            return self._written(lambda: self.kube.create(resource_path(LEASE_API_VERSION, "leases", self.namespace),
                                                          self._lease(now, None)))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = self.clock() - self._observed_at > duration
        if holder not in (None, self.identity) and not expired:
            return False
        updated = self._lease(now, lease)
        if holder == self.identity:
            updated["spec"]["acquireTime"] = spec.get("acquireTime") or updated["spec"]["acquireTime"]
            updated["spec"]["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        return self._written(lambda: self.kube.replace(self.path, updated))  # a 409: someone else wrote it meanwhile

    def _written(self, write: Callable[[], object]) -> bool:
        """Write the Lease; False when another replica's write won (409 Conflict)."""
        try:
            write()
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        self._last_renewed = self.clock()
        return True

    def _lease(self, now: datetime, current: dict[str, Any] | None) -> dict[str, Any]:
        spec = (current or {}).get("spec") or {}
        lease: dict[str, Any] = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_seconds)),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if current is not None else 0),
            },
        }
        if current is not None:
            lease["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return lease

    # --- the loops --------------------------------------------------------------------------
    def acquire(self) -> None:
        """Block until this replica leads."""
        logged = False
        while not self._stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    log.info("leading: Lease %s/%s held by %s", self.namespace, self.name, self.identity)
                    return
            except Exception as error:  # the API server may be unreachable for a while
                log.warning("leader election: %s", error)
            if not logged:
                log.info("standing by: Lease %s/%s is held by %s", self.namespace, self.name,
                         (self._observed or (None,))[0])
                logged = True
            self._stop.wait(self.retry_seconds)

    def keep_renewing(self, on_lost: Callable[[], None]) -> None:
        """Renew in a daemon thread; call `on_lost` (once) when the Lease is taken or was not renewed within the
        renew deadline, whether or not a renewal request is still hanging."""
        lost = threading.Lock()

        def lose(why: str) -> None:
            if lost.acquire(blocking=False) and not self._stop.is_set():
                log.error("leader election: %s", why)
                on_lost()

        def renew() -> None:
            while not self._stop.wait(self.renew_seconds):
                try:
                    if not self.try_acquire_or_renew():
                        lose(f"the Lease was taken by {(self._observed or (None,))[0]}")
                        return
                except Exception as error:
                    log.warning("leader election: renewing failed: %s", error)

        def watch() -> None:
            while not self._stop.wait(min(self.retry_seconds, self.renew_deadline / 4)):
                if self.clock() - self._last_renewed > self.renew_deadline:
                    lose(f"the Lease was not renewed for {self.renew_deadline:.1f}s")
                    return

        self._thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        self._thread.start()
        threading.Thread(target=watch, name="lease-deadline", daemon=True).start()

    def release(self) -> None:
        """Stop renewing and hand the Lease back (best effort), so a standby need not wait."""
        self._stop.set()
        try:
            lease = self.kube.get(self.path)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["leaseDurationSeconds"] = 1
                self.kube.replace(self.path, lease)
                log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as error:
            log.warning("leader election: releasing failed: %s", error)
