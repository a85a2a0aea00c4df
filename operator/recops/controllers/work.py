"""How passes run: one at a time per object, in worker threads, with async I/O on the operator's loop.

Every pass of every kind is a plain function run in a worker thread of the one pool (Kopf's executor,
also the loop's default). Many triggers (an object's own handlers, its children's events, the resync
loops) may ask for a pass on the same object at once: only one pass per object runs at a time (`Coalescer`);
requests arriving meanwhile collapse into one more pass after it, which re-reads everything. The only
async I/O, Prometheus queries, runs on the operator's event loop (`on_loop`), so one loop and one pool
serve everything.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


def on_loop(coroutine: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None, timeout_s: float) -> T:
    """Run `coroutine` from a pass's worker thread on the operator's event loop and wait for it; with no loop
    (tests, tools) on a loop of its own."""
    if loop is None:
        return asyncio.run(coroutine)
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout_s)


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
