"""Progress a person can follow in the log, and the progress lines the operator copies into
`status.progress` of the FineTuneJob (the Contracts' PROGRESS_MARKER)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from recops.api.common import format_time
from recops.api.contracts import ENV_FTJ_NAME, PROGRESS_MARKER, progress_record

log = logging.getLogger("recops.train")

DEFAULT_INTERVAL_S = 5.0
ENV_PROGRESS_INTERVAL = "RECOPS_PROGRESS_INTERVAL"  # seconds between progress lines (tests shorten it)


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    epoch: float

    @property
    def percent(self) -> float:
        return round(min(100.0, 100.0 * self.step / self.total_steps), 1) if self.total_steps else 0.0

    def record(self) -> str:
        """The progress line of the Contracts, stamped now."""
        return progress_record(self.step, self.total_steps, self.epoch, self.percent,
                               format_time(datetime.now(UTC)))


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


class ProgressReporter:
    """Prints the progress line of the Contracts (`recops-progress {...}`) at most every `interval_s`
    seconds, and the newest one on close (the final 100%). The operator copies the newest it finds in
    the pod's log into status.progress: the trainer itself calls no API and holds no credentials."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.stream = stream
        self.clock = clock
        self._pending: Progress | None = None
        self._last_sent: float | None = None
        self.sent = 0

    @classmethod
    def from_environment(cls) -> ProgressReporter | None:
        """A reporter when the operator runs this trainer (it names the FineTuneJob), else None."""
        if not os.environ.get(ENV_FTJ_NAME):
            return None
        interval = float(os.environ.get(ENV_PROGRESS_INTERVAL, DEFAULT_INTERVAL_S))
        log.info("progress: a %s line every %.0fs at most, for the operator", PROGRESS_MARKER.strip(), interval)
        return cls(interval)

    def report(self, progress: Progress) -> None:
        self._pending = progress
        now = self.clock()
        if self._last_sent is None or now - self._last_sent >= self.interval_s:
            self._send(now)

    def close(self) -> None:
        """Print the newest value not printed yet (the final step)."""
        if self._pending is not None:
            self._send(self.clock())

    def _send(self, now: float) -> None:
        progress, self._pending = self._pending, None
        if progress is None:
            return
        self._last_sent = now
        stream = self.stream or sys.stderr
        # One write of a whole line, flushed: the operator reads the log while training runs.
        stream.write(progress.record() + "\n")
        stream.flush()
        self.sent += 1
