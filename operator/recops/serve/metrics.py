"""The serving metrics of the Contracts, in a private registry.

Every series carries recops_namespace, recops_deployment, track and model_version (from the
environment the builders set). Feedback counters carry the track and model version named by
the feedback token, which may be another replica's.
"""

from __future__ import annotations

from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from recops.api.contracts import FEEDBACK_EVENTS, IDENTITY_LABELS, METRIC_PREFIX
from recops.serve.tokens import REJECT_REASONS

# 20 buckets of 0.05 over [0, 1]: MonitorPolicy computes score drift (PSI) from them.
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FEEDBACK_COUNTERS = {"click": "clicks", "add_to_cart": "add_to_carts", "purchase": "purchases"}
assert tuple(FEEDBACK_COUNTERS) == FEEDBACK_EVENTS

# _created series double the series count for nothing the controllers use.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Identity:
    namespace: str
    deployment: str
    track: str
    model_version: str

    def labels(self, track: str | None = None, model_version: str | None = None) -> dict[str, str]:
        return {
            "recops_namespace": self.namespace,
            "recops_deployment": self.deployment,
            "track": track or self.track,
            "model_version": model_version or self.model_version,
        }


class ServingMetrics:
    def __init__(self, identity: Identity, model_uri: str, task: str) -> None:
        self.identity = identity
        self.registry = CollectorRegistry(auto_describe=True)
        ids = list(IDENTITY_LABELS)
        p = METRIC_PREFIX
        reg = self.registry
        self.requests = Counter(f"{p}requests", "HTTP requests answered, by route and status code.",
                                [*ids, "route", "code"], registry=reg)
        self.request_duration = Histogram(f"{p}request_duration_seconds", "Time to answer a request, by route.",
                                          [*ids, "route"], buckets=LATENCY_BUCKETS, registry=reg)
        self.batch_size = Histogram(f"{p}batch_size", "Requests scored together in one batch.",
                                    ids, buckets=BATCH_BUCKETS, registry=reg)
        self.score = Histogram(f"{p}score", "Scores of ranked candidates, mapped to [0, 1].",
                               ids, buckets=SCORE_BUCKETS, registry=reg)
        self.impressions = Counter(f"{p}impressions", "Items returned in ranked responses.", ids, registry=reg)
        self.explored = Counter(f"{p}explored_responses", "Ranked responses showing random candidates in a random order "
                                "(the exploration slice of the event log).", ids, registry=reg)
        self.feedback = {
            event: Counter(f"{p}{name}", f"Accepted {event} feedback, credited to the token's track and model.",
                           ids, registry=reg)
            for event, name in FEEDBACK_COUNTERS.items()
        }
        self.feedback_rejected = Counter(f"{p}feedback_rejected", "Feedback refused, by reason.",
                                         [*ids, "reason"], registry=reg)
        self.model_info = Gauge(f"{p}model_info", "The model this process serves (always 1), and in which format "
                                "(torch, torch-int8, onnx-int8, onnx-none) once loaded.",
                                [*ids, "model_uri", "task", "format"], registry=reg)
        self.cache_hits = Counter(f"{p}score_cache_hits", "Candidates whose score came from the score cache.", ids,
                                  registry=reg)
        self.cache_misses = Counter(f"{p}score_cache_misses", "Candidates the model scored (not in the score cache).",
                                    ids, registry=reg)
        self.queue_depth = Gauge(f"{p}queue_depth", "Requests admitted and not yet answered.", ids, registry=reg)

        own = identity.labels()
        self.model_uri, self.task = model_uri, task
        # Zero-valued series from the start, so rates and ratios exist before the first event.
        self.batch_size.labels(**own)
        self.score.labels(**own)
        self.impressions.labels(**own)
        self.explored.labels(**own)
        self.cache_hits.labels(**own)
        self.cache_misses.labels(**own)
        for counter in self.feedback.values():
            counter.labels(**own)
        for reason in REJECT_REASONS:
            self.feedback_rejected.labels(**own, reason=reason)
        self.queue_depth.labels(**own).set(0)

    def serving(self, format_: str) -> None:
        self.model_info.labels(**self.own, model_uri=self.model_uri, task=self.task, format=format_).set(1)

    @property
    def own(self) -> dict[str, str]:
        return self.identity.labels()

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(**self.own, route=route, code=str(code)).inc()
        self.request_duration.labels(**self.own, route=route).observe(seconds)

    def count_cache(self, hits: int, misses: int) -> None:
        self.cache_hits.labels(**self.own).inc(hits)
        self.cache_misses.labels(**self.own).inc(misses)

    def observe_scores(self, scores: list[float]) -> None:
        histogram = self.score.labels(**self.own)
        for value in scores:
            histogram.observe(value)

    def count_feedback(self, event: str, track: str, model_version: str) -> None:
        self.feedback[event].labels(**self.identity.labels(track, model_version)).inc()

    def reject_feedback(self, reason: str, track: str | None = None, model_version: str | None = None) -> None:
        self.feedback_rejected.labels(**self.identity.labels(track, model_version), reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
