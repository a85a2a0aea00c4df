"""The operator's own Prometheus metrics, served on /metrics (prometheus_client)."""

from __future__ import annotations

import threading
from collections import Counter as CountOf

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")


class OperatorMetrics:
    """recops_operator_* series: reconciles, errors and durations per kind; FineTuneJobs by phase."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        if registry is None:
            # process_resident_memory_bytes, cpu seconds, open fds: the operator's own footprint.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.reconciles = Counter(
            "recops_operator_reconciles_total", "Reconcile passes, by kind and trigger.", ["kind", "trigger"],
            registry=self.registry,
        )
        self.errors = Counter(
            "recops_operator_reconcile_errors_total", "Reconcile passes that raised, by kind and error type.",
            ["kind", "error"], registry=self.registry,
        )
        self.duration = Histogram(
            "recops_operator_reconcile_duration_seconds", "Duration of one reconcile pass, by kind.", ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry,
        )
        self.status_writes = Counter(
            "recops_operator_status_writes_total", "Status subresource patches, by kind.", ["kind"],
            registry=self.registry,
        )
        self.rollbacks = Counter(
            "recops_operator_rollbacks_total",
            "Canaries rolled back after failing analysis or passing their progress deadline, by RecModelDeployment.",
            ["namespace", "deployment"], registry=self.registry,
        )
        self.finetunejobs = Gauge(
            "recops_operator_finetunejobs", "FineTuneJobs the operator watches, by phase.", ["phase"],
            registry=self.registry,
        )
        # Every replica serves /metrics, a standby too (its scrape target is up, not down): this says which acts.
        self.leader = Gauge(
            "recops_operator_leader", "1 when this replica acts (it holds the leader Lease, or runs standalone), "
            "0 while it stands by.", registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.finetunejobs.labels(phase=phase).set(0)

    def set_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record a FineTuneJob's phase (None: it is gone)."""
        with self._lock:
            key = (namespace, name)
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = CountOf(self._phases.values())
            for known in set(PHASES) | set(counts):
                self.finetunejobs.labels(phase=known).set(counts.get(known, 0))

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
