"""The serving event log (Contracts: `recops.api.contracts`, event log).

Impressions and feedback are appended as jsonl under
<uri>/dt=YYYY-MM-DD/hour=HH/<pod>.jsonl, one record per impression (an item returned in a
ranked response) or feedback event, with exactly the fields of contracts.EVENT_LOG_FIELDS.

A background thread writes, so requests never wait on the disk or the network. Local paths
(plain, file://, pvc://) are appended to and flushed every second. Object stores (s3://)
cannot append: each hour's file is spooled locally and the whole file is uploaded again every
`upload_interval_s`, when the hour changes, and on close, so the object is always a complete
prefix of the hour's events.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recops.api.contracts import EVENT_LOG_FIELDS, event_log_path, pseudonymise
from recops.uris import filesystem, local_path

log = logging.getLogger("recops.serve.eventlog")

Record = dict[str, Any]


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hour_of(ts: float) -> tuple[str, str]:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")


def pseudonymous_user(user_id: str | None, salt: str | None) -> str | None:
    """User ids are logged only pseudonymised; without a salt they are not logged at all."""
    if not user_id or not salt:
        return None
    return pseudonymise(user_id, salt)


def impression_records(
    *, ts: float, request_id: str, query: str | None, user_id: str | None, user_context: str | None,
    items: Sequence[tuple[str, str, float, float]], explored: bool, track: str, model_version: str,
    deployment: str, namespace: str,
) -> list[Record]:
    """One record per returned item; items are (product_id, text, unit score, propensity) in display order."""
    when = iso_utc(ts)
    return [
        {
            "ts": when, "event": "impression", "request_id": request_id, "product_id": product_id,
            "query": query or None, "user_id": user_id, "user_context": user_context or None, "title": text,
            "position": position, "score": score, "explored": explored, "propensity": propensity, "track": track,
            "model_version": model_version, "deployment": deployment, "namespace": namespace,
        }
        for position, (product_id, text, score, propensity) in enumerate(items)
    ]


def feedback_record(
    *, ts: float, event: str, request_id: str, product_id: str, track: str, model_version: str,
    deployment: str, namespace: str,
) -> Record:
    """Feedback carries no text: the trainer joins it to its impression on (request_id, product_id)."""
    return {
        "ts": iso_utc(ts), "event": event, "request_id": request_id, "product_id": product_id, "query": None,
        "user_id": None, "user_context": None, "title": None, "position": None, "score": None, "explored": None, "propensity": None, "track": track,
        "model_version": model_version, "deployment": deployment, "namespace": namespace,
    }


_STOP = object()


class EventLog:
    """Appends records from any thread; a writer thread does the I/O."""

    def __init__(self, uri: str, pod: str, upload_interval_s: float = 30.0) -> None:
        self.uri = uri.rstrip("/")
        self.pod = pod
        self._local_root = local_path(self.uri)
        self._upload_interval_s = upload_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._spool: Path | None = None
        if self._local_root is None:
            self._fs, self._remote_root = filesystem(self.uri)
            self._spool = Path(tempfile.mkdtemp(prefix="recops-eventlog-"))
        self._dirty: set[str] = set()  # remote hour files with unuploaded records
        self._last_upload = time.monotonic()
        self.written = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="recops-event-log", daemon=True)
        self._thread.start()

    def append(self, records: list[Record]) -> None:
        for record in records:
            assert record.keys() == EVENT_LOG_FIELDS.keys(), sorted(record)
        self._queue.put(records)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write and upload everything appended so far."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)

    # --- writer thread -------------------------------------------------------------------
    def _relative_path(self, record: Record) -> str:
        ts: str = record["ts"]  # YYYY-MM-DDTHH:...
        return event_log_path("", (ts[:10], ts[11:13]), self.pod).lstrip("/")

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Record] = []
            try:
                item = self._queue.get(timeout=1.0)
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    batch.extend(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if batch:
                self._write(batch)
            if self._spool is not None and self._dirty and (
                stopping or time.monotonic() - self._last_upload >= self._upload_interval_s
            ):
                self._upload()

    def _write(self, records: list[Record]) -> None:
        by_file: dict[str, list[str]] = {}
        for record in records:
            by_file.setdefault(self._relative_path(record), []).append(json.dumps(record, separators=(",", ":")))
        for relative, lines in by_file.items():
            root = Path(self._local_root) if self._local_root is not None else self._spool
            assert root is not None
            target = root / relative
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("a", encoding="utf-8") as out:
                    out.write("\n".join(lines) + "\n")
                self.written += len(lines)
                if self._spool is not None:
                    self._dirty.add(relative)
            except OSError as err:
                self.errors += 1
                log.error("event log: could not append %d records to %s: %s", len(lines), target, err)

    def _upload(self) -> None:
        assert self._spool is not None
        now = time.time()
        # Records of the last two hours may still arrive (they are stamped before queueing).
        recent = {event_log_path("", hour_of(ts), self.pod).lstrip("/") for ts in (now, now - 3600)}
        for relative in sorted(self._dirty):
            remote = f"{self._remote_root.rstrip('/')}/{relative}"
            try:
                self._fs.put_file(str(self._spool / relative), remote)
                self._dirty.discard(relative)
                if relative not in recent:  # a finished hour: its spool is no longer needed
                    (self._spool / relative).unlink(missing_ok=True)
            except Exception as err:  # keep spooling; the next upload retries
                self.errors += 1
                log.error("event log: could not upload %s: %s", remote, err)
        self._last_upload = time.monotonic()
