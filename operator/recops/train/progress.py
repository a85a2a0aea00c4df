"""Progress a person can follow in the log, and in `status.progress` of the FineTuneJob.

The status patch goes through the per-job ServiceAccount (it may patch only this job's
status). It runs on a background thread that keeps only the newest value, so a slow or
refusing API server never slows or stops training.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recops.api.common import GROUP, VERSION
from recops.api.contracts import ENV_FTJ_NAME, ENV_FTJ_NAMESPACE
from recops.api.finetunejob import PLURAL

log = logging.getLogger("recops.train")

DEFAULT_INTERVAL_S = 5.0
ENV_PROGRESS_INTERVAL = "RECOPS_PROGRESS_INTERVAL"  # seconds between status patches (tests shorten it)
_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    epoch: float

    @property
    def percent(self) -> float:
        return round(min(100.0, 100.0 * self.step / self.total_steps), 1) if self.total_steps else 0.0

    def status_patch(self) -> dict[str, Any]:
        return {
            "status": {
                "progress": {
                    "step": self.step,
                    "totalSteps": self.total_steps,
                    "epoch": round(self.epoch, 3),
                    "percent": self.percent,
                    "updatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            }
        }


def format_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_line(progress: Progress, loss: float | None, elapsed_s: float, eta_s: float | None) -> str:
    parts = [
        f"step {progress.step}/{progress.total_steps}",
        f"({progress.percent:.0f}%)",
        f"epoch {progress.epoch:.2f}",
    ]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    parts.append(f"elapsed {format_duration(elapsed_s)}")
    parts.append(f"left {format_duration(eta_s) if eta_s is not None else '?'}")
    return " ".join(parts)


def _load_kubernetes_api() -> Any | None:
    """A CustomObjectsApi when credentials are present (in-cluster or a kubeconfig), else None."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(_SERVICE_ACCOUNT_TOKEN):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    elif os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        return None
    return client.CustomObjectsApi()


class StatusReporter:
    """Merge-patches status.progress of one FineTuneJob, at most every `interval_s` seconds."""

    def __init__(self, namespace: str, name: str, interval_s: float = DEFAULT_INTERVAL_S, api: Any = None) -> None:
        self.namespace, self.name, self.interval_s = namespace, name, interval_s
        self._api = api
        self._pending: Progress | None = None
        self._last_sent = 0.0
        self._failures = 0
        self.sent = 0
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="recops-progress", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls) -> StatusReporter | None:
        namespace, name = os.environ.get(ENV_FTJ_NAMESPACE), os.environ.get(ENV_FTJ_NAME)
        if not namespace or not name:
            return None
        try:
            api = _load_kubernetes_api()
        except Exception as err:  # a broken kubeconfig must not stop training
            log.warning("progress: not reporting to FineTuneJob %s/%s: %s", namespace, name, err)
            return None
        if api is None:
            log.info("progress: no Kubernetes credentials; reporting to the log only")
            return None
        interval = float(os.environ.get(ENV_PROGRESS_INTERVAL, DEFAULT_INTERVAL_S))
        log.info("progress: reporting to FineTuneJob %s/%s every %.0fs at most", namespace, name, interval)
        return cls(namespace, name, interval, api)

    def report(self, progress: Progress) -> None:
        with self._wake:
            self._pending = progress
            self._wake.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Send the newest value now (the final 100%), then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closing:
                    self._wake.wait()
                if self._pending is None and self._closing:
                    return
                wait = self._last_sent + self.interval_s - time.monotonic()
                if wait > 0 and not self._closing:
                    self._wake.wait(wait)
                    continue
                progress, self._pending = self._pending, None
            if progress is not None:
                self._send(progress)

    def _send(self, progress: Progress) -> None:
        self._last_sent = time.monotonic()
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, progress.status_patch(),
                _content_type="application/merge-patch+json", _request_timeout=10,
            )
            self.sent += 1
        except Exception as err:
            self._failures += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:
                reason = getattr(err, "reason", None) or str(err).splitlines()[0]
                log.warning("progress: patching FineTuneJob %s/%s failed (%d so far): %s",
                            self.namespace, self.name, self._failures, reason)
