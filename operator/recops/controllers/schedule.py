"""When each object's next timed pass falls due: one table for every kind.

Watch events start passes at once, except a FineTuneJob's Job and pod events: they batch into one pass
a second later (`soon`, which comes before a pending retry too; `take_due(held=...)` lets the operator keep
them back while a burst of new FineTuneJobs waits for its Jobs). Everything timed is an entry here: a
FineTuneJob's resync and progress reads, a RecModelDeployment's rollout ticks and resyncs, a
MonitorPolicy's interval, and the retry of any failed pass (5 s, 10 s, 20 s, ... at most 5 minutes,
never in a storm). After each pass the kind says when the next one is due (`arm`); one loop
(`Operator.schedule_forever`) takes what is due and runs it. An entry is kept while its object exists,
timed or not, so it also says whether the operator has seen the object since it started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Key = tuple[str, str, str]  # kind, namespace, name
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
RETRY = "retry"  # the trigger of a failed pass's next try


def retry_delay(failures: int) -> float:
    """After the first failure 5 s, then 10 s, 20 s, ... at most 5 minutes."""
    return float(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(failures, 16)))


@dataclass
class Entry:
    due: float | None = None  # monotonic time of the next pass; None: nothing timed
    trigger: str = ""
    failures: int = 0  # failed passes in a row: while > 0 the entry is a retry, and keeps its time


class Schedule:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()  # passes end in worker threads; the loop and handlers read on the event loop
        self._entries: dict[Key, Entry] = {}

    def knows(self, key: Key) -> bool:
        with self._lock:
            return key in self._entries

    def backing_off(self, key: Key) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.failures > 0

    def arm(self, key: Key, delay: float | None, trigger: str) -> None:
        """The next pass of `key` is due within `delay` seconds (an earlier time already set stands); None:
        nothing timed. A pending retry keeps its time: a timed pass would only repeat what failed."""
        with self._lock:
            entry = self._entries.setdefault(key, Entry())
            if entry.failures:
                return
            if delay is None:
                entry.due = None
                return
            self._sooner(entry, delay, trigger)

    def soon(self, key: Key, delay: float, trigger: str) -> None:
        """A pass of `key` within `delay` seconds, before a pending retry too: something it reads changed (a
        child's event), so it may now succeed, and what it would report must not wait out the backoff."""
        with self._lock:
            self._sooner(self._entries.setdefault(key, Entry()), delay, trigger)

    def _sooner(self, entry: Entry, delay: float, trigger: str) -> None:
        due = self.clock() + delay
        if entry.due is None or due < entry.due:
            entry.due, entry.trigger = due, trigger

    def passed(self, key: Key, delay: float | None, trigger: str) -> None:
        """A pass of `key` succeeded: no retry is pending any more, and the next pass is due within `delay`."""
        with self._lock:
            entry = self._entries.setdefault(key, Entry())
            if entry.failures:
                entry.failures, entry.due = 0, None
        self.arm(key, delay, trigger)

    def failed(self, key: Key) -> tuple[int, float]:
        """A pass of `key` failed: it is tried again after a growing delay. Returns (failures in a row, delay)."""
        with self._lock:
            entry = self._entries.setdefault(key, Entry())
            delay = retry_delay(entry.failures)
            entry.failures += 1
            entry.due, entry.trigger = self.clock() + delay, RETRY
            return entry.failures, delay

    def forget(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def take_due(self, held: Callable[[str, float], bool] = lambda trigger, late: False) -> list[tuple[Key, str]]:
        """Every (key, trigger) due now, soonest first, but those `held(trigger, seconds overdue)` keeps for a
        later tick; each is untimed until its pass arms it again (a retry keeps its failure count, so a pass that
        fails again waits longer)."""
        now = self.clock()
        with self._lock:
            due = sorted((entry.due, key, entry.trigger) for key, entry in self._entries.items()
                         if entry.due is not None and entry.due <= now and not held(entry.trigger, now - entry.due))
            for _, key, _ in due:
                self._entries[key].due = None
        return [(key, trigger) for _, key, trigger in due]
