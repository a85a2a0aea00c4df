"""The dynamic batcher with a stand-in model: batch formation, bounded queue, failures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from recops.serve.batcher import BatcherStopped, DynamicBatcher, QueueFull


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[tuple[str, list[Any]]] = []
        self.gate = gate
        self.threads: set[str] = set()

    def __call__(self, kind: str, payloads: list[Any]) -> list[Any]:
        if self.gate is not None:
            self.gate.wait(5)
        self.threads.add(threading.current_thread().name)
        self.batches.append((kind, payloads))
        if any(p == "boom" for p in payloads):
            raise RuntimeError("model failed")
        return [f"{kind}:{p}" for p in payloads]


def test_concurrent_requests_share_batches_up_to_the_limit() -> None:
    recorder = Recorder()
    sizes: list[int] = []

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(recorder, max_batch_size=4, max_wait_s=0.2, max_queue=100, on_batch=sizes.append)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit("score", i) for i in range(10)))
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [f"score:{i}" for i in range(10)]
    assert sizes == [4, 4, 2]
    assert [p for _, batch in recorder.batches for p in batch] == list(range(10))  # first come, first served
    assert len(recorder.threads) == 1 and next(iter(recorder.threads)).startswith("recops-inference")


def test_batches_hold_one_kind() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(recorder, max_batch_size=8, max_wait_s=0.05, max_queue=100)
        batcher.start()
        await asyncio.gather(batcher.submit("score", 1), batcher.submit("embed", 2), batcher.submit("score", 3))
        await batcher.stop()

    asyncio.run(scenario())
    assert all(len({kind}) == 1 for kind, _ in recorder.batches)
    assert sorted(kind for kind, _ in recorder.batches) == ["embed", "score", "score"]


def test_a_full_queue_refuses_at_once_and_recovers() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)

    async def scenario() -> tuple[list[Any], int]:
        batcher = DynamicBatcher(recorder, max_batch_size=1, max_wait_s=0, max_queue=2)
        batcher.start()
        admitted = [asyncio.ensure_future(batcher.submit("score", i)) for i in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit("score", 99)
        depth = batcher.admitted
        gate.set()
        results = await asyncio.gather(*admitted)
        results.append(await batcher.submit("score", 3))
        await batcher.stop()
        return results, depth

    results, depth = asyncio.run(scenario())
    assert results == ["score:0", "score:1", "score:3"] and depth == 2


def test_a_failing_request_fails_alone_and_stop_refuses_new_work() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(recorder, max_batch_size=8, max_wait_s=0.05, max_queue=10)
        batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit("score", p) for p in ["a", "boom", "b", "c"]),
                                        return_exceptions=True)
        # The batch failed; each member was scored alone, so only the bad request fails.
        assert outcomes[0] == "score:a" and outcomes[2:] == ["score:b", "score:c"]
        assert isinstance(outcomes[1], RuntimeError)
        assert recorder.batches[0] == ("score", ["a", "boom", "b", "c"])
        assert [payloads for _, payloads in recorder.batches[1:]] == [["a"], ["boom"], ["b"], ["c"]]
        assert await batcher.submit("score", "fine") == "score:fine"
        await batcher.stop()
        with pytest.raises(BatcherStopped):
            await batcher.submit("score", "late")

    asyncio.run(scenario())
