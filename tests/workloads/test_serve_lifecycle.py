"""`recops serve` processes: refusing incomplete models, feedback across replicas and tracks,
overload, graceful shutdown, and models on S3."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recops.api.contracts import MODEL_MANIFEST
from tests.support.local_servers import free_port
from tests.support.models import tiny_served_model
from tests.support.serving import ServeProcess, candidates

pytestmark = [pytest.mark.workload, pytest.mark.timeout(600)]

SHARED = {"RECOPS_NAMESPACE": "shop", "RECOPS_DEPLOYMENT": "ranker"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_served_model(tmp_path_factory.mktemp("model") / "m", "click-through", version="v-stable")


def run_to_exit(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
    full_env.update({"RECOPS_SERVE_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1",
                     "RECOPS_FEEDBACK_KEY": "test-feedback-key-0123456789abcdef", **(env or {})})
    return subprocess.run([sys.executable, "-m", "recops", "serve", "--port", str(free_port()), *args],
                          env=full_env, capture_output=True, text=True, timeout=timeout_s)


def test_an_incomplete_model_is_refused(model: Path, tmp_path: Path) -> None:
    incomplete = tmp_path / "incomplete"
    shutil.copytree(model, incomplete)
    (incomplete / MODEL_MANIFEST).unlink()
    result = run_to_exit("--model", str(incomplete))
    assert result.returncode != 0
    assert "incomplete" in result.stderr and MODEL_MANIFEST in result.stderr

    missing = run_to_exit("--model", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "no such model directory" in missing.stderr


def test_no_feedback_key_is_refused_unless_explicitly_insecure(model: Path) -> None:
    result = run_to_exit("--model", str(model), env={"RECOPS_FEEDBACK_KEY": ""})
    assert result.returncode == 2 and "RECOPS_FEEDBACK_KEY" in result.stderr
    short = run_to_exit("--model", str(model), env={"RECOPS_FEEDBACK_KEY": "short"})
    assert short.returncode == 2 and "too short" in short.stderr
    bad_duration = run_to_exit("--model", str(model), "--max-batch-wait", "5 ms")
    assert bad_duration.returncode == 2 and "--max-batch-wait" in bad_duration.stderr


@pytest.fixture(scope="module")
def stable_and_canary(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    canary_model = tiny_served_model(tmp_path_factory.mktemp("canary") / "m", "click-through",
                                     version="v-canary", seed=1)
    stable = ServeProcess(model, "--track", "stable", env=SHARED)
    canary = ServeProcess(canary_model, env={**SHARED, "RECOPS_TRACK": "canary"})
    try:
        stable.wait_ready()
        canary.wait_ready()
        yield stable, canary
    finally:
        stable.stop()
        canary.stop()


def test_feedback_on_another_replica_is_credited_to_the_tokens_track(
        stable_and_canary: tuple[ServeProcess, ServeProcess]) -> None:
    stable, canary = stable_and_canary
    status, answer = canary.post("/v1/rank", {"query": "shoes", "candidates": candidates(5), "topK": 2})
    assert status == 200 and answer["track"] == "canary" and answer["modelVersion"] == "v-canary"
    shown = answer["items"][0]["id"]
    status, credited = stable.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": shown,
                                                    "event": "click"})
    assert status == 200 and credited == {"status": "accepted", "track": "canary", "modelVersion": "v-canary"}
    assert stable.metric("recops_clicks_total", track="canary", model_version="v-canary") == 1
    assert stable.metric("recops_clicks_total", track="stable") == 0
    assert canary.metric("recops_impressions_total", track="canary") == 2
    # The canary replica counts feedback of the stable track the same way.
    status, answer = stable.post("/v1/rank", {"query": "socks", "candidates": candidates(3)})
    assert status == 200 and answer["track"] == "stable"
    assert canary.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": answer["items"][2]["id"],
                                        "event": "purchase"})[0] == 200
    assert canary.metric("recops_purchases_total", track="stable", model_version="v-stable") == 1
    assert canary.metric("recops_purchases_total", track="canary") == 0


async def post_all(base: str, bodies: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async def one(body: dict[str, Any]) -> tuple[int, Any]:
            async with session.post(base + "/v1/rank", json=body) as response:
                return response.status, await response.json()
        return await asyncio.gather(*(one(body) for body in bodies))


def test_load_beyond_the_queue_gets_503_and_no_crash(model: Path) -> None:
    # Requests wait up to 1s for their batch, so the first three fill the queue.
    server = ServeProcess(model, "--max-queue", "3", "--max-batch-size", "64", "--max-batch-wait", "1s")
    try:
        server.wait_ready()
        answers = asyncio.run(post_all(server.base, [{"query": f"q{i}", "candidates": candidates(20)}
                                                     for i in range(20)]))
        statuses = [status for status, _ in answers]
        assert set(statuses) == {200, 503}, statuses
        assert statuses.count(200) >= 3
        assert all("capacity" in body["error"] for status, body in answers if status == 503)
        assert server.metric("recops_requests_total", route="/v1/rank", code="503") == statuses.count(503)
        assert server.process.poll() is None
        assert server.request("GET", "/v2/health/ready")[0] == 200
        assert server.post("/v1/rank", {"query": "after", "candidates": candidates(3)})[0] == 200
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(model: Path, tmp_path: Path) -> None:
    server = ServeProcess(model, "--max-batch-size", "64", "--max-batch-wait", "2s", "--event-log", str(tmp_path),
                          env={"RECOPS_POD_NAME": "draining-pod"})
    try:
        server.wait_ready()

        async def scenario() -> tuple[list[tuple[int, Any]], tuple[int, Any], int]:
            in_flight = asyncio.ensure_future(post_all(server.base, [{"query": f"q{i}", "candidates": candidates(4)}
                                                                     for i in range(3)]))
            deadline = time.monotonic() + 10
            while server.metric("recops_queue_depth") < 3:  # admitted, waiting for their batch
                assert time.monotonic() < deadline, "requests were not admitted"
                await asyncio.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            ready = server.request("GET", "/v2/health/ready")[0]
            refused = await post_all(server.base, [{"query": "late", "candidates": candidates(2)}])
            return await in_flight, refused[0], ready

        finished, refused, ready = asyncio.run(scenario())
        assert [status for status, _ in finished] == [200, 200, 200]
        assert ready == 503
        assert refused[0] == 503 and "shutting down" in refused[1]["error"]
        assert server.wait_exit(30) == 0
        # The event log was flushed before exiting: every impression of the finished requests.
        lines = [json.loads(line) for path in tmp_path.glob("dt=*/hour=*/draining-pod.jsonl")
                 for line in path.read_text().splitlines()]
        assert len([r for r in lines if r["event"] == "impression"]) == 12
    finally:
        server.stop()


# --- models on S3 (moto as the S3-compatible store: the s3_store fixture) --------------------
def test_models_on_s3_are_downloaded_and_incomplete_ones_refused(model: Path, s3_store: dict[str, str]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_store["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="models")
    for path in model.iterdir():
        s3.upload_file(str(path), "models", f"shop/v-stable/{path.name}")
        if path.name != MODEL_MANIFEST:
            s3.upload_file(str(path), "models", f"shop/half-written/{path.name}")

    refused = run_to_exit("--model", "s3://models/shop/half-written", env=s3_store)
    assert refused.returncode != 0 and "incomplete" in refused.stderr

    server = ServeProcess("s3://models/shop/v-stable", env=s3_store)
    try:
        server.wait_ready()
        status, answer = server.post("/v1/rank", {"query": "q", "candidates": candidates(3)})
        assert status == 200 and answer["modelVersion"] == "v-stable"
        assert server.metric("recops_model_info", model_uri="s3://models/shop/v-stable") == 1
    finally:
        server.stop()


def test_stalled_and_idle_connections_are_closed_and_probes_answered_under_a_flood(model: Path) -> None:
    """Issue 19: under a descriptor limit of 256, 300 stalled sockets made the liveness probe time out."""
    import socket

    server = ServeProcess(model, "--idle-timeout", "3s", "--read-timeout", "2s", fd_limit=256).wait_ready()
    flood: list[socket.socket] = []
    try:
        for i in range(300):  # nothing sent, or headers that never end: all within the idle timeout
            try:
                conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            except OSError:
                continue
            if i % 2:
                conn.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\n")
            flood.append(conn)
        for _ in range(5):
            started = time.monotonic()
            assert server.request("GET", "/v2/health/live")[0] == 200
            assert time.monotonic() - started < 5  # before the fix: no answer at all
        # A body that never completes gets 408 after the read timeout, not a socket held for ever.
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n{\"candidates\": ")
        started = time.monotonic()
        answer = stalled.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 2s" in answer
        assert 1.5 < time.monotonic() - started < 15
        stalled.close()
        # An idle connection is closed by the server after the idle timeout.
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        started = time.monotonic()
        assert idle.recv(1) == b""
        assert 2 < time.monotonic() - started < 15
        idle.close()
        assert "closed" in server.log and "idle ones" in server.log  # the flood was shed, and said so
    finally:
        for conn in flood:
            conn.close()
        server.stop()
