"""`recops serve` as a real process on tiny models: every endpoint, the metrics of the
Contracts, feedback tokens, batching and the event log."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recops.api.contracts import EVENT_LOG_FIELDS, IDENTITY_LABELS, pseudonymise
from recops.serve.tokens import TokenSigner
from tests.support.models import tiny_served_model
from tests.support.serving import FEEDBACK_KEY, ServeProcess, candidates

pytestmark = [pytest.mark.workload, pytest.mark.timeout(600)]

NAMESPACE, DEPLOYMENT, SALT, VERSION = "shop", "ranker", "pepper", "ranker-ft-1a2b3c4d"
IDENTITY = {"RECOPS_NAMESPACE": NAMESPACE, "RECOPS_DEPLOYMENT": DEPLOYMENT, "RECOPS_PSEUDONYM_SALT": SALT,
            "RECOPS_POD_NAME": "ranker-stable-0"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    # The embedding model lies on a "claim" mounted under $RECOPS_PVC_ROOT, served as pvc://.
    (root / "pvc" / "models-claim" / "shop").mkdir(parents=True)
    return {
        "click-through": tiny_served_model(root / "ctr", "click-through", version=VERSION),
        "embedding": tiny_served_model(root / "pvc" / "models-claim" / "shop" / "emb", "embedding",
                                       version="emb-00000001"),
        "pvc-root": root / "pvc",
    }


@pytest.fixture(scope="module")
def event_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("events")


@pytest.fixture(scope="module")
def servers(models: dict[str, Path], event_log_dir: Path) -> Iterator[dict[str, ServeProcess]]:
    # Started together: their imports and loads overlap.
    started = {
        "ranker": ServeProcess(
            models["click-through"], "--model-name", "ranker", "--max-candidates", "50", "--max-text-length", "300",
            "--max-batch-size", "16", "--max-batch-wait", "100ms", "--max-pairs-per-pass", "64",
            "--event-log", str(event_log_dir), "--score-cache-entries", "0", env=IDENTITY),  # batching is under test
        "embedder": ServeProcess("pvc://models-claim/shop/emb", "--model-name", "embedder", "--track", "canary",
                                 env={"RECOPS_NAMESPACE": NAMESPACE, "RECOPS_DEPLOYMENT": "embedder",
                                      "RECOPS_PVC_ROOT": str(models["pvc-root"])}),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def ranker(servers: dict[str, ServeProcess]) -> ServeProcess:
    return servers["ranker"]


@pytest.fixture(scope="module")
def embedder(servers: dict[str, ServeProcess]) -> ServeProcess:
    return servers["embedder"]


def rank(server: ServeProcess, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = server.post("/v1/rank", body)
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


# --- health and metadata -------------------------------------------------------------------
def test_health_and_model_metadata(ranker: ServeProcess) -> None:
    assert ranker.request("GET", "/v2/health/live") == (200, {"live": True})
    assert ranker.request("GET", "/v2/health/ready") == (200, {"ready": True})
    assert ranker.request("GET", "/v2/models/ranker/ready") == (200, {"name": "ranker", "ready": True})
    status, meta = ranker.request("GET", "/v2/models/ranker")
    assert status == 200
    assert meta["name"] == "ranker" and meta["versions"] == [VERSION] and meta["task"] == "click-through"
    assert {t["name"] for t in meta["inputs"]} >= {"query", "candidates"}
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1]}]
    assert ranker.request("GET", f"/v2/models/ranker/versions/{VERSION}")[0] == 200
    status, server_meta = ranker.request("GET", "/v2")
    assert status == 200 and server_meta["name"] == "recops"


def test_unknown_model_name_is_404(ranker: ServeProcess) -> None:
    for method, path in [("GET", "/v2/models/nope"), ("GET", "/v2/models/nope/ready"),
                         ("POST", "/v2/models/nope/infer"), ("GET", "/v2/models/ranker/versions/v0")]:
        status, answer = ranker.request(method, path, {"inputs": []} if method == "POST" else None)
        assert status == 404, (path, answer)
        assert "unknown" in answer["error"]


# --- ranking -------------------------------------------------------------------------------
def test_rank_returns_the_top_k_by_score_with_a_signed_request_id(ranker: ServeProcess) -> None:
    items = candidates(20)
    full = rank(ranker, {"query": "red running shoes", "candidates": items})
    assert full["modelVersion"] == VERSION and full["track"] == "stable"
    assert [entry["rank"] for entry in full["items"]] == list(range(1, 21))
    scores = [entry["score"] for entry in full["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert {entry["id"] for entry in full["items"]} == {c["id"] for c in items}
    assert full["requestId"].startswith("rt1.")

    top = rank(ranker, {"query": "red running shoes", "candidates": items, "topK": 5})
    assert [e["id"] for e in top["items"]] == [e["id"] for e in full["items"][:5]]
    for a, b in zip(top["items"], full["items"][:5], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_rank_scores_match_the_open_inference_protocol_route(ranker: ServeProcess) -> None:
    items = candidates(7)
    ranked = rank(ranker, {"query": "wool socks", "candidates": items})
    by_id = {e["id"]: e["score"] for e in ranked["items"]}
    status, answer = ranker.post("/v2/models/ranker/infer", {
        "id": "req-1",
        "inputs": [{"name": "query", "shape": [1], "datatype": "BYTES", "data": ["wool socks"]},
                   {"name": "candidates", "shape": [7], "datatype": "BYTES", "data": [c["text"] for c in items]}],
    })
    assert status == 200, answer
    assert answer["id"] == "req-1" and answer["model_version"] == VERSION
    [output] = answer["outputs"]
    assert output["name"] == "scores" and output["datatype"] == "FP32" and output["shape"] == [7]
    for c, score in zip(items, output["data"], strict=True):
        assert score == pytest.approx(by_id[c["id"]], abs=1e-5)
    status, versioned = ranker.post(f"/v2/models/ranker/versions/{VERSION}/infer", {
        "inputs": [{"name": "candidates", "shape": [1], "datatype": "BYTES", "data": ["wool socks"]}]})
    assert status == 200 and versioned["outputs"][0]["shape"] == [1] and "id" not in versioned


def test_user_context_without_a_query_is_ranked(ranker: ServeProcess) -> None:
    answer = rank(ranker, {"user": {"id": "user-42", "context": "likes gardening"}, "candidates": candidates(4)})
    assert len(answer["items"]) == 4


def test_bad_input_fails_only_its_own_request(ranker: ServeProcess) -> None:
    """A lone surrogate (the tokenizer's failure in issue 19) and JSON nested 100k deep, sent among 20 good
    requests at once: each bad one gets 400 naming its cause, every good one its ranking."""
    good = [{"query": f"wool socks {i}", "candidates": candidates(6)} for i in range(20)]
    bad_text = json.dumps({"query": "socks", "candidates": [{"id": "x", "text": "ok"}, {"id": "y", "text": "\ud800"}]})
    deep = b"[" * 100_000 + b"]" * 100_000

    async def all_at_once() -> list[tuple[int, dict[str, Any]]]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async def one(data: bytes) -> tuple[int, dict[str, Any]]:
                async with session.post(ranker.base + "/v1/rank", data=data,
                                        headers={"Content-Type": "application/json"}) as response:
                    return response.status, await response.json()
            bodies = [json.dumps(body).encode() for body in good]
            return await asyncio.gather(*(one(data) for data in [*bodies[:10], bad_text.encode(), deep, *bodies[10:]]))

    answers = asyncio.run(all_at_once())
    assert answers[10] == (400, {"error": "candidates[1].text is not valid Unicode text: surrogates not allowed "
                                          "at character 0"})
    assert answers[11] == (400, {"error": "malformed JSON: nested too deeply"})
    assert [status for status, _ in answers[:10] + answers[12:]] == [200] * 20


def test_every_token_issued_verifies_however_long_the_item_ids(ranker: ServeProcess) -> None:
    long_ids = [{"id": f"{i:03d}-" + "p" * 290, "text": "wool socks"} for i in range(50)]  # the ranker's limits
    answer = rank(ranker, {"query": "socks", "candidates": long_ids})
    assert len(answer["requestId"]) < 3000
    for item in (answer["items"][0]["id"], answer["items"][-1]["id"]):
        assert ranker.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": item, "event": "click"})[0] == 200
    status, refused = ranker.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": "999-x", "event": "click"})
    assert status == 422 and "was not among the items" in refused["error"]


def test_batched_scores_equal_unbatched_ones_under_concurrency(ranker: ServeProcess) -> None:
    bodies = [{"query": f"query number {i} about shoes" + " and socks" * (i % 4), "candidates": candidates(5 + i % 7)}
              for i in range(12)]
    alone = [{e["id"]: e["score"] for e in rank(ranker, body)["items"]} for body in bodies]
    batches_before = ranker.metrics()["recops_batch_size_bucket"]

    async def all_at_once() -> list[dict[str, Any]]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async def one(body: dict[str, Any]) -> dict[str, Any]:
                async with session.post(ranker.base + "/v1/rank", json=body) as response:
                    assert response.status == 200
                    return await response.json()  # type: ignore[no-any-return]
            return await asyncio.gather(*(one(body) for body in bodies))

    together = asyncio.run(all_at_once())
    for single, batched in zip(alone, together, strict=True):
        assert {e["id"]: pytest.approx(e["score"], abs=1e-5) for e in batched["items"]} == single
    # And they really were batched: some batch held more than one request.
    batches_after = ranker.metrics()["recops_batch_size_bucket"]
    def count(samples: list[tuple[dict[str, str], float]], le: str) -> float:
        return sum(v for labels, v in samples if labels["le"] == le)
    multi_before = count(batches_before, "+Inf") - count(batches_before, "1.0")
    multi_after = count(batches_after, "+Inf") - count(batches_after, "1.0")
    assert multi_after > multi_before


def test_repeated_queries_are_scored_once_from_the_cache(models: dict[str, Path]) -> None:
    server = ServeProcess(models["click-through"], "--model-name", "ranker", env=IDENTITY)  # the default cache
    try:
        server.wait_ready()
        body = {"query": "red running shoes", "candidates": candidates(8), "topK": 8}
        first = {e["id"]: e["score"] for e in rank(server, body)["items"]}
        assert server.metric("recops_score_cache_misses_total") == 8
        assert server.metric("recops_score_cache_hits_total") == 0
        assert {e["id"]: e["score"] for e in rank(server, body)["items"]} == first
        assert server.metric("recops_score_cache_hits_total") == 8
        # A changed text or another query is scored afresh.
        changed = [{**c, "text": c["text"] + " (new)"} if i == 0 else c for i, c in enumerate(body["candidates"])]
        rank(server, {**body, "candidates": changed})
        assert server.metric("recops_score_cache_hits_total") == 8 + 7
        rank(server, {**body, "query": "blue kettle"})
        assert server.metric("recops_score_cache_misses_total") == 8 + 1 + 8
    finally:
        server.stop()


# --- embeddings ----------------------------------------------------------------------------
def test_embed_returns_unit_vectors_and_cosine_ranks(embedder: ServeProcess) -> None:
    status, answer = embedder.post("/v1/embed", {"texts": ["red shoes", "blue hat", "red shoes"]})
    assert status == 200, answer
    vectors = answer["embeddings"]
    assert answer["dimension"] == 32 and len(vectors) == 3 and all(len(v) == 32 for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)

    assert embedder.metric("recops_model_info", model_uri="pvc://models-claim/shop/emb", task="embedding") == 1
    ranked = rank(embedder, {"query": "red shoes", "candidates": [{"id": "same", "text": "red shoes"},
                                                                  {"id": "other", "text": "garden chair"}]})
    assert ranked["track"] == "canary"
    scores = {e["id"]: e["score"] for e in ranked["items"]}
    assert scores["same"] == pytest.approx(1.0, abs=1e-4)  # cosine 1 -> unit score 1
    assert ranked["items"][0]["id"] == "same"

    status, infer = embedder.post("/v2/models/embedder/infer", {
        "inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["red shoes"]}]})
    assert status == 200, infer
    [output] = infer["outputs"]
    assert output["name"] == "embeddings" and output["shape"] == [1, 32]
    assert output["data"] == pytest.approx(vectors[0], abs=1e-5)


def test_embed_on_a_cross_encoder_is_a_clear_400(ranker: ServeProcess) -> None:
    status, answer = ranker.post("/v1/embed", {"texts": ["a"]})
    assert status == 400 and "embedding model" in answer["error"]


# --- bad input -----------------------------------------------------------------------------
BAD_RANK_BODIES = [
    (b'{"candidates": [', 400, "malformed JSON"),
    (b'[1, 2]', 400, "JSON object"),
    (b'{"query": "x"}', 400, "candidates is required"),
    (b'{"candidates": []}', 400, "empty"),
    (b'{"candidates": [{"id": "a"}]}', 400, "candidates[0].text is required"),
    (b'{"candidates": [{"text": "a"}]}', 400, "candidates[0].id is required"),
    (b'{"candidates": [{"id": "a", "text": 3}]}', 400, "candidates[0].text must be a string"),
    (b'{"candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}', 400, "repeats"),
    (b'{"candidates": [{"id": "a", "text": "x"}], "topK": 0}', 400, "topK"),
    (b'{"candidates": [{"id": "a", "text": "x"}], "user": "bob"}', 400, "user must be an object"),
    (json.dumps({"candidates": candidates(51)}).encode(), 413, "too many candidates: 51; the limit is 50"),
    (json.dumps({"candidates": [{"id": "a", "text": "x" * 301}]}).encode(), 413, "301 characters"),
    (json.dumps({"query": "q" * 400, "candidates": [{"id": "a", "text": "x"}]}).encode(), 413, "query is 400"),
]


def test_bad_input_gets_a_4xx_json_error_counted_in_the_metrics(ranker: ServeProcess) -> None:
    before = {code: ranker.metric("recops_requests_total", route="/v1/rank", code=code) for code in ("400", "413")}
    for raw, status, message in BAD_RANK_BODIES:
        got_status, answer = ranker.request("POST", "/v1/rank", raw=raw)
        assert got_status == status, (raw[:80], answer)
        assert message in answer["error"], (raw[:80], answer)
    after = {code: ranker.metric("recops_requests_total", route="/v1/rank", code=code) for code in ("400", "413")}
    assert after["400"] - before["400"] == sum(1 for _, s, _ in BAD_RANK_BODIES if s == 400)
    assert after["413"] - before["413"] == sum(1 for _, s, _ in BAD_RANK_BODIES if s == 413)

    bad_infer = [
        ({"inputs": [{"name": "candidates", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, "shape"),
        ({"inputs": [{"name": "candidates", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "BYTES"),
        ({"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, "name must be"),
        ({"outputs": []}, "inputs is required"),
    ]
    for body, message in bad_infer:
        status, answer = ranker.post("/v2/models/ranker/infer", body)
        assert status == 400 and message in answer["error"], answer
    assert ranker.request("GET", "/v1/rank")[0] == 405
    status, answer = ranker.request("GET", "/no/such/route")
    assert status == 404 and "no route" in answer["error"]
    # Still serving.
    assert ranker.request("GET", "/v2/health/ready")[0] == 200


# --- feedback ------------------------------------------------------------------------------
def test_feedback_is_verified_counted_and_rejections_say_why(ranker: ServeProcess) -> None:
    answer = rank(ranker, {"query": "summer dress", "candidates": candidates(10), "topK": 3})
    token, shown = answer["requestId"], [e["id"] for e in answer["items"]]
    own = {"track": "stable", "model_version": VERSION}
    clicks = ranker.metric("recops_clicks_total", **own)
    purchases = ranker.metric("recops_purchases_total", **own)

    def feedback(body: dict[str, Any]) -> tuple[int, Any]:
        return ranker.post("/v1/feedback", body)

    assert feedback({"requestId": token, "itemId": shown[0], "event": "click"}) == (
        200, {"status": "accepted", "track": "stable", "modelVersion": VERSION})
    assert feedback({"requestId": token, "itemId": shown[0], "event": "purchase"})[0] == 200
    assert ranker.metric("recops_clicks_total", **own) == clicks + 1
    assert ranker.metric("recops_purchases_total", **own) == purchases + 1

    not_shown = next(c["id"] for c in candidates(10) if c["id"] not in shown)
    key = FEEDBACK_KEY.encode()
    expired = TokenSigner(key, 3600, NAMESPACE, DEPLOYMENT, clock=lambda: time.time() - 7200).issue(
        "r-old", "stable", VERSION, [shown[0]])
    foreign = TokenSigner(key, 3600, NAMESPACE, "another-deployment").issue("r-x", "stable", VERSION, [shown[0]])
    forged = TokenSigner(b"not-the-key-at-all-0000", 3600, NAMESPACE, DEPLOYMENT).issue(
        "r-y", "stable", VERSION, [shown[0]])
    cases = [
        ({"requestId": token, "itemId": shown[0], "event": "click"}, 409, "duplicate", "already recorded"),
        ({"requestId": token, "itemId": not_shown, "event": "click"}, 422, "not_shown", "not among the items"),
        ({"requestId": expired, "itemId": shown[0], "event": "click"}, 410, "expired", "expired"),
        ({"requestId": foreign, "itemId": shown[0], "event": "click"}, 403, "foreign", "another-deployment"),
        ({"requestId": forged, "itemId": shown[0], "event": "click"}, 403, "forged", "signature"),
        ({"requestId": "not-a-token", "itemId": shown[0], "event": "click"}, 400, "malformed", "not a rt1"),
        ({"requestId": token, "itemId": shown[0], "event": "like"}, 400, "invalid", "event must be one of"),
        ({"itemId": shown[0], "event": "click"}, 400, "invalid", "requestId is required"),
    ]
    for body, status, reason, message in cases:
        before = ranker.metric("recops_feedback_rejected_total", reason=reason)
        got_status, got = feedback(body)
        assert got_status == status and message in got["error"], (reason, got)
        assert ranker.metric("recops_feedback_rejected_total", reason=reason) == before + 1, reason
    assert ranker.metric("recops_clicks_total", **own) == clicks + 1


# --- metrics -------------------------------------------------------------------------------
CONTRACT_METRICS = {  # sample name -> labels beyond the identity labels
    "recops_requests_total": {"route", "code"},
    "recops_request_duration_seconds_bucket": {"route", "le"},
    "recops_request_duration_seconds_count": {"route"},
    "recops_request_duration_seconds_sum": {"route"},
    "recops_batch_size_bucket": {"le"},
    "recops_batch_size_count": set(),
    "recops_score_bucket": {"le"},
    "recops_score_count": set(),
    "recops_impressions_total": set(),
    "recops_clicks_total": set(),
    "recops_add_to_carts_total": set(),
    "recops_purchases_total": set(),
    "recops_feedback_rejected_total": {"reason"},
    "recops_model_info": {"model_uri", "task", "format"},
}


def test_metrics_carry_every_name_and_label_of_the_contracts(ranker: ServeProcess, models: dict[str, Path]) -> None:
    rank(ranker, {"query": "kettle", "candidates": candidates(6), "topK": 4})
    samples = ranker.metrics()
    identity = {"recops_namespace": NAMESPACE, "recops_deployment": DEPLOYMENT, "track": "stable",
                "model_version": VERSION}
    assert set(identity) == set(IDENTITY_LABELS)
    for name, extra in CONTRACT_METRICS.items():
        assert name in samples, name
        for labels, _ in samples[name]:
            assert set(labels) == set(IDENTITY_LABELS) | extra, (name, labels)
        assert any(all(labels[k] == v for k, v in identity.items()) for labels, _ in samples[name]), name
    [(info_labels, info)] = samples["recops_model_info"]
    assert info == 1 and info_labels["model_uri"] == str(models["click-through"])
    assert info_labels["task"] == "click-through" and info_labels["format"] == "torch"
    # The score histogram has 20 buckets of 0.05 over [0, 1] (MonitorPolicy's PSI uses them).
    bounds = sorted(float(labels["le"]) for labels, _ in samples["recops_score_bucket"] if labels["le"] != "+Inf")
    assert bounds == pytest.approx([0.05 * i for i in range(1, 21)])
    assert {labels["reason"] for labels, _ in samples["recops_feedback_rejected_total"]} >= {
        "forged", "expired", "foreign", "not_shown", "duplicate", "malformed", "invalid"}
    assert ranker.metric("recops_impressions_total") >= 4
    assert ranker.metric("recops_request_duration_seconds_count", route="/v1/rank") >= 1
    # Probes and scrapes are not API traffic.
    routes = {labels["route"] for labels, _ in samples["recops_requests_total"]}
    assert "/metrics" not in routes and "/v2/health/ready" not in routes and "/v1/rank" in routes


# --- event log -----------------------------------------------------------------------------
def read_event_log(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(root.glob("dt=*/hour=*/*.jsonl"))
            for line in path.read_text().splitlines()]


def wait_for_records(root: Path, predicate: Any, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_event_log(root)
        if predicate(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_event_log_holds_impressions_and_feedback_in_the_contract_shape(ranker: ServeProcess,
                                                                        event_log_dir: Path) -> None:
    answer = rank(ranker, {"query": "leather bag", "user": {"id": "user-7", "context": "commuter"},
                           "candidates": candidates(8), "topK": 3})
    clicked = answer["items"][1]["id"]
    assert ranker.post("/v1/feedback", {"requestId": answer["requestId"], "itemId": clicked,
                                        "event": "add_to_cart"})[0] == 200

    def complete(records: list[dict[str, Any]]) -> bool:
        return any(r["event"] == "add_to_cart" and r["product_id"] == clicked for r in records)

    records = wait_for_records(event_log_dir, complete)
    assert complete(records), records[-5:]
    files = list(event_log_dir.glob("dt=*/hour=*/*.jsonl"))
    assert files and all(f.name == "ranker-stable-0.jsonl" for f in files)
    for record in records:
        assert set(record) == set(EVENT_LOG_FIELDS)
    [feedback] = [r for r in records if r["event"] == "add_to_cart" and r["product_id"] == clicked]
    impressions = [r for r in records if r["event"] == "impression" and r["request_id"] == feedback["request_id"]]
    assert [r["product_id"] for r in impressions] == [e["id"] for e in answer["items"]]
    assert [r["position"] for r in impressions] == [0, 1, 2]
    first = impressions[0]
    assert first["query"] == "leather bag" and first["user_context"] == "commuter"
    assert first["user_id"] == pseudonymise("user-7", SALT) != "user-7"
    assert first["score"] == pytest.approx(answer["items"][0]["score"])
    assert first["title"] == next(c["text"] for c in candidates(8) if c["id"] == first["product_id"])
    assert (first["track"], first["model_version"], first["deployment"], first["namespace"]) == (
        "stable", VERSION, DEPLOYMENT, NAMESPACE)
    assert feedback["track"] == "stable" and feedback["model_version"] == VERSION and feedback["title"] is None
