"""Per-object serialisation of reconcile passes without blocking worker threads.

Many triggers (the FineTuneJob's own handlers, its Job's and pods' events, the resync loop)
may ask for a pass on the same object at once. Only one pass per object runs at a time;
requests arriving meanwhile collapse into one more pass after it, which re-reads everything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class Coalescer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()

    def run(self, key: Hashable, work: Callable[[], T]) -> T | None:
        """Run `work` for `key`, or mark it to run again if a pass for `key` is under way.

        Returns the result of the last pass this call ran, or None when it only marked.
        Exceptions propagate; a re-run asked for meanwhile is dropped (the caller's retry or the
        resync loop runs the next pass).
        """
        with self._lock:
            if key in self._running:
                self._again.add(key)
                return None
            self._running.add(key)
        try:
            while True:
                result = work()
                with self._lock:
                    if key in self._again:
                        self._again.discard(key)
                        continue
                    self._running.discard(key)
                    return result
        except BaseException:
            with self._lock:
                self._running.discard(key)
                self._again.discard(key)
            raise

    def busy(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._running
