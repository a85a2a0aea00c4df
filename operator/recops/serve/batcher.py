"""Dynamic batching across concurrent requests.

Requests are admitted into a bounded queue (`max_queue` counts requests admitted and not yet
answered: waiting, being batched, or being scored), so overload answers 503 at once instead of
growing latency without bound. One asyncio task forms batches: it takes the oldest request
and up to `max_batch_size - 1` more of the same kind, waiting at most until the oldest has
waited `max_wait_s`; the batch then runs on a single inference thread, off the event loop.
While it runs, the next batch fills.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# run_batch(kind, payloads) -> one result per payload; called on the inference thread.
BatchRunner = Callable[[str, list[Any]], list[Any]]


class QueueFull(Exception):
    pass


class BatcherStopped(Exception):
    pass


@dataclass
class _Job:
    kind: str
    payload: Any
    future: asyncio.Future[Any]
    enqueued_at: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(self, run_batch: BatchRunner, *, max_batch_size: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None,
                 on_depth: Callable[[int], None] | None = None) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._waiting: collections.deque[_Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._admitted = 0  # waiting + in the batch being formed or scored
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recops-inference")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def admitted(self) -> int:
        return self._admitted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="recops-batcher")

    def run_alone(self, kind: str, payload: Any) -> Any:
        """Run one payload on the inference thread, bypassing the queue (warm-up); blocking."""
        return self._executor.submit(self._run_batch, kind, [payload]).result()[0]

    async def submit(self, kind: str, payload: Any) -> Any:
        if self._stopping:
            raise BatcherStopped("the server is shutting down")
        if self._admitted >= self.max_queue:
            raise QueueFull(f"the server is at capacity ({self.max_queue} requests queued or being scored)")
        job = _Job(kind, payload, asyncio.get_running_loop().create_future())
        self._admitted += 1
        self._depth_changed()
        self._waiting.append(job)
        self._wakeup.set()
        try:
            return await asyncio.shield(job.future)
        finally:
            self._admitted -= 1
            self._depth_changed()

    def _depth_changed(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._admitted)

    async def stop(self) -> None:
        """Score what was admitted, then stop the batching task and the inference thread."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _next_job(self, deadline: float | None) -> _Job | None:
        """The oldest waiting job; waits until `deadline` (monotonic; None: for ever)."""
        while not self._waiting:
            if self._stopping:
                return None
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return None
        return self._waiting.popleft()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next_job(None)
            if first is None:
                return  # stopping and nothing waits
            batch = [first]
            deadline = first.enqueued_at + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if self._waiting and self._waiting[0].kind != first.kind:
                    break  # batches are of one kind; the other kind goes next
                job = await self._next_job(deadline)
                if job is None:
                    break
                batch.append(job)
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                results = await self._run(loop, first.kind, batch)
            except Exception as err:  # one bad batch must not stop the server
                if len(batch) == 1:
                    _settle(first, error=err)
                else:  # nor one request's input fail the others: each alone, so only its own fails
                    for job in batch:
                        await self._run_alone(loop, job)
                continue
            for job, result in zip(batch, results, strict=True):
                _settle(job, result)

    async def _run(self, loop: asyncio.AbstractEventLoop, kind: str, batch: list[_Job]) -> list[Any]:
        results = await loop.run_in_executor(self._executor, self._run_batch, kind, [job.payload for job in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"the model returned {len(results)} results for {len(batch)} requests")
        return results

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        try:
            [result] = await self._run(loop, job.kind, [job])
        except Exception as err:
            _settle(job, error=err)
            return
        _settle(job, result)


def _settle(job: _Job, result: Any = None, error: Exception | None = None) -> None:
    if job.future.done():  # the caller went away
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)
