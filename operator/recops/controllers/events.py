"""The one way the operator posts Events about its objects: core/v1 Events, created by a background thread.

Every controller calls the same `EventPoster` signature; in the operator that is an `EventRecorder`. A pass only
queues the Event, so it never waits for the request (a burst of FineTuneJobs posts hundreds), and posting
works from any thread or loop (Kopf's `kopf.event` needs its per-object context). An Event is worth a log
line, never a failed pass: a refused or failed post is logged and dropped, as is one beyond a full queue.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from recops.api.common import API_VERSION, format_time
from recops.controllers.kube import Kube, resource_path

log = logging.getLogger("recops.controllers.events")

COMPONENT = "recops-operator"  # source.component and reportingComponent: what `kubectl describe` shows as From
MAX_QUEUED = 10_000


def event_manifest(body: dict[str, Any], type_: str, reason: str, message: str, instance: str,
                   now: datetime) -> dict[str, Any]:
    """A core/v1 Event about a recops object, as `kubectl describe` shows them."""
    meta = body["metadata"]
    stamp = format_time(now)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"recops-{meta['name'][:200]}-", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind"),
                           "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": instance[:128],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


class EventRecorder:
    """An EventPoster: `recorder(body, type, reason, message)` queues the Event; one daemon thread creates them."""

    def __init__(self, kube: Kube, instance: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.kube, self.instance, self.clock = kube, instance, clock
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        manifest = event_manifest(body, type_, reason, message, self.instance, self.clock())
        try:
            self._queue.put_nowait(manifest)
        except queue.Full:
            log.warning("Event %s on %s dropped: %d Events queued", reason, body["metadata"].get("name"), MAX_QUEUED)
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._post_forever, name="recops-events", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Wait until every queued Event has been posted (or dropped)."""
        self._queue.join()

    def _post_forever(self) -> None:
        while True:
            manifest = self._queue.get()
            try:
                self.kube.create(resource_path("v1", "events", manifest["metadata"]["namespace"]), manifest)
            except Exception as error:
                log.warning("cannot post Event %s on %s: %s", manifest["reason"], manifest["involvedObject"]["name"],
                            error)
            finally:
                self._queue.task_done()
