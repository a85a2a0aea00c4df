"""Fuzz a real `recops serve`: hypothesis-generated requests, valid and not, against every route.

    .venv/bin/python benchmarks/fuzz_serve.py                  # 10,000 requests (about a minute)
    .venv/bin/python benchmarks/fuzz_serve.py --requests 50000

The server runs the tiny test model with an event log and an exploration slice, small limits (so
that "too large" is reachable) and 16 concurrent clients. Prints the status codes seen per route
and the 5xx count, which must be 0: every bad request is the client's fault (4xx) and no request
fails for another's. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUTES = ["/v1/rank", "/v1/feedback", "/v1/embed", "/v2/models/ranker/infer", "/v2/models/other/infer"]


def requests_strategy() -> Any:
    from hypothesis import strategies as st

    text = st.text(max_size=40) | st.sampled_from(["\ud800", "x\udfff", "", " ", "wool socks", "a" * 300])
    ids = text | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=True)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
        max_leaves=12,
    )
    candidate = st.fixed_dictionaries({"id": ids, "text": text | json_values}) | json_values
    rank = st.fixed_dictionaries(
        {"candidates": st.lists(candidate, max_size=30) | json_values},
        optional={"query": text | json_values, "user": st.fixed_dictionaries({}, optional={"id": ids,
                  "context": text | json_values}) | json_values, "topK": st.integers(-2, 40) | json_values},
    )
    feedback = st.fixed_dictionaries({"requestId": text | json_values, "itemId": ids,
                                      "event": st.sampled_from(["click", "add_to_cart", "purchase", "view"]) | text})
    infer = st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["query", "candidates", "texts", "user_context"]) | text,
        "datatype": st.sampled_from(["BYTES", "FP32"]) | text,
        "shape": st.lists(st.integers(-1, 40), max_size=2) | json_values,
        "data": st.lists(text, max_size=30) | json_values}), max_size=4) | json_values})
    # Well-formed requests with fuzzed text (unicode, surrogates, lengths), so that scoring, batching, tokens and
    # the event log are exercised as well as validation.
    valid_rank = st.fixed_dictionaries(
        {"candidates": st.lists(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=30),
                                                       "text": st.text(max_size=60)}),
                                min_size=1, max_size=20, unique_by=lambda c: c["id"])},
        optional={"query": st.text(max_size=60), "user": st.fixed_dictionaries({"id": st.text(min_size=1, max_size=20),
                                                                               "context": st.text(max_size=60)}),
                  "topK": st.integers(1, 25)})
    valid_infer = st.fixed_dictionaries({"inputs": st.tuples(text, st.lists(text, min_size=1, max_size=20)).map(
        lambda qc: [{"name": "query", "datatype": "BYTES", "shape": [1], "data": [qc[0]]},
                    {"name": "candidates", "datatype": "BYTES", "shape": [len(qc[1])], "data": qc[1]}])})
    body = (valid_rank | valid_rank | valid_infer | rank | feedback | infer | json_values).map(
        lambda value: json.dumps(value).encode())
    raw = st.binary(max_size=200) | st.sampled_from([b"[" * 50_000 + b"]" * 50_000, b"{", b"\xff\xfe", b"null"])
    return st.tuples(st.sampled_from([*ROUTES, "/v2/health/ready", "/nope"]),
                     st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]), body | raw)


def generate(n: int, seed: int) -> list[tuple[str, str, bytes]]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    out: list[tuple[str, str, bytes]] = []

    @hypothesis_seed(seed)
    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests_strategy())
    def collect(request: tuple[str, str, bytes]) -> None:
        out.append(request)

    collect()
    return out


async def send(base: str, requests: list[tuple[str, str, bytes]], valid_tokens: list[str],
               concurrency: int) -> tuple[Counter[tuple[str, int]], list[str]]:
    import aiohttp

    seen: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path, method, body = queue.get_nowait()
            if path == "/v1/feedback" and valid_tokens and body[:1] == b"{" and len(body) % 3 == 0:
                # Some feedback carries a real token, so verification and the event log are exercised too.
                try:
                    document = json.loads(body)
                    if isinstance(document, dict):
                        document["requestId"] = valid_tokens[len(body) % len(valid_tokens)]
                        body = json.dumps(document).encode()
                except ValueError:
                    pass
            try:
                async with session.request(method, base + path, data=body,
                                           headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    seen[(path, response.status)] += 1
                    if response.status >= 500:
                        errors.append(f"{method} {path} {body[:200]!r} -> {response.status}")
            except aiohttp.ClientError as error:
                seen[(path, 0)] += 1
                errors.append(f"{method} {path} {body[:200]!r} -> {type(error).__name__}: {error}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return seen, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from tests.support.models import tiny_served_model
    from tests.support.serving import ServeProcess, candidates

    started = time.monotonic()
    requests = generate(args.requests, args.seed)
    generated = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="recops-fuzz-") as tmp:
        model = tiny_served_model(Path(tmp) / "model", "click-through", version="fuzz")
        server = ServeProcess(model, "--model-name", "ranker", "--max-candidates", "20", "--max-text-length", "200",
                              "--event-log", str(Path(tmp) / "events"), "--exploration", "0.2",
                              env={"RECOPS_PSEUDONYM_SALT": "fuzz-salt"})
        try:
            server.wait_ready()
            tokens = []
            for i in range(20):
                status, answer = server.post("/v1/rank", {"query": f"q{i}", "candidates": candidates(6)})
                assert status == 200, answer
                tokens.append(answer["requestId"])
            began = time.monotonic()
            seen, errors = asyncio.run(send(server.base, requests, tokens, args.concurrency))
            seconds = time.monotonic() - began
            alive = server.request("GET", "/v2/health/live")[0] == 200
        finally:
            log = server.log
            server.stop()
    by_route: dict[str, dict[int, int]] = {}
    for (path, status), count in sorted(seen.items()):
        by_route.setdefault(path, {})[status] = count
    five_xx = sum(count for (_, status), count in seen.items() if status >= 500 or status == 0)
    print(f"recops serve fuzz: {len(requests)} hypothesis-generated requests (seed {args.seed}, generated in "
          f"{generated:.0f}s), {args.concurrency} concurrent clients, sent in {seconds:.0f}s")
    for path, statuses in by_route.items():
        print(f"  {path:28} " + "  ".join(f"{status}: {count}" for status, count in sorted(statuses.items())))
    print(f"5xx or dropped: {five_xx}; server alive afterwards: {alive}")
    for line in errors[:10]:
        print(f"  {line}")
    if five_xx and "Traceback" in log:
        print(log[-3000:])
    print(f"reproduce: .venv/bin/python benchmarks/fuzz_serve.py --requests {args.requests} --seed {args.seed}")
    print(json.dumps({"requests": len(requests), "statuses": {p: {str(k): v for k, v in s.items()}
                                                              for p, s in by_route.items()},
                      "five_xx": five_xx, "alive": alive}))
    return 0 if five_xx == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
