"""The HTTP server of `recops serve` (aiohttp).

Routes (KServe / Open Inference Protocol v2 conventions):
  POST /v1/rank, POST /v1/embed, POST /v1/feedback, GET /metrics,
  GET /v2, GET /v2/health/live, GET /v2/health/ready, GET /v2/models/{name}[/versions/{version}],
  GET /v2/models/{name}[/versions/{version}]/ready, POST /v2/models/{name}[/versions/{version}]/infer.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

import recops
from recops.api.contracts import context_text
from recops.serve.batcher import BatcherStopped, DynamicBatcher, QueueFull
from recops.serve.cache import ScoreCache
from recops.serve.connections import ConnectionGuard
from recops.serve.eventlog import EventLog, feedback_record, impression_records, pseudonymous_user
from recops.serve.exploration import Exploration
from recops.serve.metrics import Identity, ServingMetrics
from recops.serve.settings import ServeSettings
from recops.serve.tokens import DuplicateFilter, TokenRejected, TokenSigner, new_request_id
from recops.serve.validation import (
    ApiError,
    Limits,
    parse_embed,
    parse_feedback,
    parse_infer,
    parse_json,
    parse_rank,
)

log = logging.getLogger("recops.serve")

# Probes and scrapes are not API traffic: counting them would dilute error rates.
UNCOUNTED_ROUTES = {"/metrics", "/v2/health/live", "/v2/health/ready", "/v2"}
# Requests whose work a graceful shutdown waits for.
DRAINED_ROUTES = {"/v1/rank", "/v1/embed", "/v1/feedback", "/v2/models/{name}/infer",
                  "/v2/models/{name}/versions/{version}/infer"}
FEEDBACK_STATUS = {"invalid": 400, "malformed": 400, "forged": 403, "foreign": 403, "expired": 410,
                   "not_shown": 422, "duplicate": 409}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


# The largest request body read, whatever maxCandidates x maxTextLength would allow: one request never
# holds more of a replica's memory than this (bigger ones get 413).
MAX_BODY_BYTES = 64 << 20


def body_limit(settings: ServeSettings) -> int:
    """As large as the limits allow (ids and texts, JSON-escaped, up to 12 bytes a character), up to MAX_BODY_BYTES."""
    wanted = settings.max_candidates * (12 * settings.max_text_length + 64) + (64 << 10)
    return min(max(1 << 20, wanted), MAX_BODY_BYTES)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


class Server:
    """State of one serving process; the model is attached by `attach_model` once loaded."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.limits = Limits(settings.max_candidates, settings.max_text_length)
        self.signer = TokenSigner(settings.feedback_key, settings.feedback_token_ttl_s,
                                  settings.namespace, settings.deployment)
        self.duplicates = DuplicateFilter(settings.feedback_token_ttl_s)
        self.metrics: ServingMetrics | None = None  # once the manifest is read
        self.model_version = settings.model_version or ""
        self.task = ""
        self.architecture = ""
        self.embedding_dim = 0
        self.scorer: Any = None
        self.batcher: DynamicBatcher | None = None
        self.cache: ScoreCache | None = None  # once the model version is known
        self.event_log = EventLog(settings.event_log_uri, settings.pod_name) if settings.event_log_uri else None
        self.exploration = Exploration(settings.exploration)
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self.connections: ConnectionGuard | None = None  # set by the command once the runner exists
        self.downloaded_dir: str | None = None
        self.app = web.Application(middlewares=[self._middleware], client_max_size=body_limit(settings))
        self._routes()

    # --- lifecycle -----------------------------------------------------------------------
    def attach_manifest(self, model_version: str, task: str, architecture: str) -> None:
        if self.settings.model_version and self.settings.model_version != model_version:
            log.warning("RECOPS_MODEL_VERSION=%s but recops.json says %s; metrics use the environment's",
                        self.settings.model_version, model_version)
        self.model_version = self.settings.model_version or model_version
        self.task, self.architecture = task, architecture
        identity = Identity(self.settings.namespace, self.settings.deployment, self.settings.track, self.model_version)
        self.metrics = ServingMetrics(identity, self.settings.model_uri, task)
        self.cache = ScoreCache(self.model_version, self.settings.score_cache_entries, self.settings.score_cache_ttl_s)

    def attach_scorer(self, scorer: Any) -> None:
        """Start batching on this loop; call warm_up before marking ready."""
        self.scorer = scorer
        self.embedding_dim = scorer.embedding_dim
        metrics = self.metrics
        assert metrics is not None
        metrics.serving(scorer.format)
        batch_histogram = metrics.batch_size.labels(**metrics.own)
        depth_gauge = metrics.queue_depth.labels(**metrics.own)
        self.batcher = DynamicBatcher(
            scorer.run_batch, max_batch_size=self.settings.max_batch_size, max_wait_s=self.settings.max_batch_wait_s,
            max_queue=self.settings.max_queue, on_batch=batch_histogram.observe, on_depth=depth_gauge.set,
        )
        self.batcher.start()

    def warm_up(self) -> None:
        """One real inference on the inference thread (blocking): the first one pays for lazy init."""
        assert self.batcher is not None
        self.batcher.run_alone("score", [("warm up", "a product to warm up with")])
        if self.architecture != "cross-encoder":
            self.batcher.run_alone("embed", ["warm up"])

    async def drain(self) -> None:
        """Refuse new work, wait for in-flight requests (up to the drain timeout), stop."""
        self.draining = True
        self.ready = False
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.in_flight:
            log.warning("drain timeout: %d requests still in flight", self.in_flight)
        if self.batcher is not None:
            await self.batcher.stop()

    def close(self) -> None:
        if self.event_log is not None:
            self.event_log.close()
        if self.downloaded_dir:
            shutil.rmtree(self.downloaded_dir, ignore_errors=True)

    # --- plumbing ------------------------------------------------------------------------
    def _routes(self) -> None:
        add_get, add_post = self.app.router.add_get, self.app.router.add_post
        add_post("/v1/rank", self.rank)
        add_post("/v1/embed", self.embed)
        add_post("/v1/feedback", self.feedback)
        add_get("/metrics", self.metrics_text)
        add_get("/v2", self.server_metadata)
        add_get("/v2/health/live", self.live)
        add_get("/v2/health/ready", self.server_ready)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            add_get(prefix, self.model_metadata)
            add_get(f"{prefix}/ready", self.model_ready)
            add_post(f"{prefix}/infer", self.infer)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = route_label(request)
        drained = route in DRAINED_ROUTES
        if drained:
            self.in_flight += 1
        busy = self.connections.busy if self.connections is not None else set()
        busy.add(request.protocol)  # a connection with a request in progress is never shed
        try:
            try:
                response = await handler(request)
            except ApiError as err:
                response = json_response({"error": err.message}, err.status,
                                         {"Retry-After": "1"} if err.status == 503 else None)
            except web.HTTPException as err:  # routing (404, 405) and body size (413)
                if err.status < 400:
                    raise
                message = {404: f"no route {request.method} {request.path}",
                           405: f"{request.method} is not allowed on {request.path}"}.get(err.status, err.text or err.reason)
                response = json_response({"error": message}, err.status)
            except Exception as err:  # a request never takes the process down
                log.exception("%s %s failed", request.method, request.path)
                response = json_response({"error": f"internal error: {type(err).__name__}: {err}"}, 500)
        finally:
            busy.discard(request.protocol)
            if drained:
                self.in_flight -= 1
        if self.metrics is not None and route not in UNCOUNTED_ROUTES:
            self.metrics.observe_request(route, response.status, time.perf_counter() - started)
        return response

    def _require_ready(self) -> ServingMetrics:
        if self.draining:
            raise ApiError(503, "the server is shutting down; retry on another replica")
        if not self.ready or self.metrics is None:
            raise ApiError(503, "the model is not loaded yet")
        return self.metrics

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await asyncio.wait_for(request.read(), self.settings.read_timeout_s)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.settings.read_timeout_s:g}s") from None
        return parse_json(body)

    async def _submit(self, kind: str, payload: Any) -> Any:
        assert self.batcher is not None
        try:
            return await self.batcher.submit(kind, payload)
        except QueueFull as err:
            raise ApiError(503, str(err)) from None
        except BatcherStopped as err:
            raise ApiError(503, str(err)) from None

    async def _scores(self, context: str, candidates: list[tuple[str, str | None]],
                      ratings: tuple[tuple[str, float], ...] = ()) -> list[float]:
        """Each (text, id) candidate's score for `context` and the user's earlier events (`ratings`): kept ones from
        the cache, the rest in one batch item."""
        assert self.cache is not None and self.metrics is not None
        keys = self.cache.keys(context, candidates, ratings)
        scores = self.cache.get(keys)
        missing = [i for i, score in enumerate(scores) if score is None]
        if missing:
            fresh: list[float] = await self._submit("score", [
                (context, text, item_id, ratings) if ratings else
                (context, text, item_id) if item_id is not None else (context, text)
                for text, item_id in (candidates[i] for i in missing)])
            for i, score in zip(missing, fresh, strict=True):
                scores[i] = score
            self.cache.put([keys[i] for i in missing], fresh)
        self.metrics.count_cache(hits=len(candidates) - len(missing), misses=len(missing))
        return cast(list[float], scores)  # every miss was filled in above

    def _check_model_name(self, request: web.Request) -> None:
        name = request.match_info["name"]
        if name != self.settings.model_name:
            raise ApiError(404, f"unknown model {name!r}: this server serves {self.settings.model_name!r}")
        version = request.match_info.get("version")
        if version is not None and version != self.model_version:
            raise ApiError(404, f"unknown version {version!r} of {name!r}: this server serves {self.model_version!r}")

    def _require_embedding_model(self, what: str) -> None:
        if self.architecture == "cross-encoder":
            raise ApiError(400, f"{what} needs an embedding model; this server serves a cross-encoder "
                                f"({self.task}), which only scores (context, item) pairs")

    # --- the API -------------------------------------------------------------------------
    async def rank(self, request: web.Request) -> web.Response:
        metrics = self._require_ready()
        ranked = parse_rank(await self._body(request), self.limits)
        context = context_text(ranked.query, ranked.user_context)
        scores = await self._scores(context, [(c.text, c.id) for c in ranked.candidates], ranked.user_ratings)
        metrics.observe_scores(scores)
        # Highest score first; ties keep the caller's order.
        ranking = sorted(range(len(scores)), key=lambda i: -scores[i])
        n, k = len(ranking), ranked.top_k
        # Only a logged response is explored: the slice exists to make the log unbiased.
        display, explored = self.exploration.display_order(n, k) if self.event_log is not None else (
            list(range(k)), False)
        order = [ranking[j] for j in display]
        request_id = new_request_id()
        shown = [ranked.candidates[i] for i in order]
        track = self.settings.track
        token = self.signer.issue(request_id, track, self.model_version, [c.id for c in shown])
        metrics.impressions.labels(**metrics.own).inc(len(shown))
        if self.event_log is not None:
            self.event_log.append(impression_records(
                ts=time.time(), request_id=request_id, query=ranked.query,
                user_id=pseudonymous_user(ranked.user_id, self.settings.pseudonym_salt),
                user_context=ranked.user_context,
                items=[(c.id, c.text, scores[i], self.exploration.propensity(j, p, n, k))
                       for p, (c, i, j) in enumerate(zip(shown, order, display, strict=True))],
                explored=explored, track=track, model_version=self.model_version,
                deployment=self.settings.deployment, namespace=self.settings.namespace,
            ))
        if explored:
            metrics.explored.labels(**metrics.own).inc()
        return json_response({
            "requestId": token, "modelVersion": self.model_version, "track": track,
            "items": [{"id": c.id, "score": scores[i], "rank": r} for r, (c, i) in enumerate(zip(shown, order, strict=True), 1)],
        })

    async def embed(self, request: web.Request) -> web.Response:
        self._require_ready()
        self._require_embedding_model("/v1/embed")
        texts = parse_embed(await self._body(request), self.limits)
        embeddings = await self._submit("embed", texts)
        return json_response({"modelVersion": self.model_version, "dimension": self.embedding_dim,
                              "embeddings": embeddings})

    async def feedback(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        if metrics is None:
            raise ApiError(503, "the model is not loaded yet")
        try:
            wanted = parse_feedback(await self._body(request))
        except ApiError:
            metrics.reject_feedback("invalid")
            raise
        try:
            token = self.signer.verify(wanted.token)
        except TokenRejected as err:
            metrics.reject_feedback(err.reason)
            raise ApiError(FEEDBACK_STATUS[err.reason], str(err)) from None
        reason, message = None, ""
        if not token.showed(wanted.item_id):
            reason, message = "not_shown", f"item {wanted.item_id!r} was not among the items this response showed"
        elif not self.duplicates.first_time((token.request_id, wanted.item_id, wanted.event)):
            reason, message = "duplicate", f"{wanted.event} on item {wanted.item_id!r} of this response was already recorded"
        if reason is not None:
            metrics.reject_feedback(reason, token.track, token.model_version)
            raise ApiError(FEEDBACK_STATUS[reason], message)
        metrics.count_feedback(wanted.event, token.track, token.model_version)
        if self.event_log is not None:
            self.event_log.append([feedback_record(
                ts=time.time(), event=wanted.event, request_id=token.request_id, product_id=wanted.item_id,
                track=token.track, model_version=token.model_version, deployment=token.deployment,
                namespace=token.namespace,
            )])
        return json_response({"status": "accepted", "track": token.track, "modelVersion": token.model_version})

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            raise ApiError(503, "the model is not loaded yet")
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def server_ready(self, request: web.Request) -> web.Response:
        ready = self.ready and not self.draining
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response({"name": "recops", "version": recops.__version__, "extensions": []})

    def _tensor_metadata(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        inputs = [{"name": "query", "datatype": "BYTES", "shape": [1]},
                  {"name": "user_context", "datatype": "BYTES", "shape": [1]},
                  {"name": "candidates", "datatype": "BYTES", "shape": [-1]}]
        outputs = [{"name": "scores", "datatype": "FP32", "shape": [-1]}]
        if self.architecture and self.architecture != "cross-encoder":
            inputs.append({"name": "texts", "datatype": "BYTES", "shape": [-1]})
            outputs.append({"name": "embeddings", "datatype": "FP32", "shape": [-1, self.embedding_dim]})
        return inputs, outputs

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._check_model_name(request)
        inputs, outputs = self._tensor_metadata()
        return json_response({
            "name": self.settings.model_name, "versions": [self.model_version] if self.model_version else [],
            "platform": "recops_pytorch", "task": self.task, "architecture": self.architecture,
            "modelUri": self.settings.model_uri, "inputs": inputs, "outputs": outputs,
        })

    async def model_ready(self, request: web.Request) -> web.Response:
        self._check_model_name(request)
        ready = self.ready and not self.draining
        return json_response({"name": self.settings.model_name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: web.Request) -> web.Response:
        self._check_model_name(request)
        metrics = self._require_ready()
        wanted = parse_infer(await self._body(request), self.limits)
        outputs: list[dict[str, Any]]
        if wanted.candidates is not None:
            context = context_text(wanted.query, wanted.user_context)
            scores = await self._scores(context, [(text, None) for text in wanted.candidates])
            metrics.observe_scores(scores)
            outputs = [{"name": "scores", "datatype": "FP32", "shape": [len(scores)], "data": scores}]
        else:
            assert wanted.texts is not None
            self._require_embedding_model("the 'texts' input")
            embeddings = await self._submit("embed", wanted.texts)
            outputs = [{"name": "embeddings", "datatype": "FP32", "shape": [len(embeddings), self.embedding_dim],
                        "data": [value for row in embeddings for value in row]}]
        response: dict[str, Any] = {"model_name": self.settings.model_name, "model_version": self.model_version,
                                    "outputs": outputs}
        if wanted.id is not None:
            response["id"] = wanted.id
        return json_response(response)
