"""PromQL for the built-in metrics of the serving contract, per track of a RecModelDeployment.

Canary analysis and MonitorPolicy both measure through these expressions, so a metric means
the same thing in both places. Every expression aggregates with `sum` so that any number of
replicas (and pod restarts) add up.
"""

from __future__ import annotations

from dataclasses import dataclass

from recops.api.contracts import METRIC_PREFIX

RANK_ROUTE = "/v1/rank"


@dataclass(frozen=True)
class TrackSelector:
    namespace: str
    deployment: str
    track: str = "stable"
    model_version: str | None = None

    def matchers(self, *extra: str) -> str:
        parts = [
            f'recops_namespace="{_escape(self.namespace)}"',
            f'recops_deployment="{_escape(self.deployment)}"',
            f'track="{_escape(self.track)}"',
        ]
        if self.model_version:
            parts.append(f'model_version="{_escape(self.model_version)}"')
        return "{" + ",".join([*parts, *extra]) + "}"


@dataclass(frozen=True)
class MetricQuery:
    """A value expression and the expression counting the samples behind it."""

    value: str
    samples: str | None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _increase(metric: str, sel: TrackSelector, window: str, *extra: str) -> str:
    return f"sum(increase({METRIC_PREFIX}{metric}{sel.matchers(*extra)}[{window}]))"


def builtin_query(metric: str, sel: TrackSelector, window: str) -> MetricQuery:
    """PromQL for ctr, conversionRate, p99LatencyMs or errorRate of one track over a window."""
    impressions = _increase("impressions_total", sel, window)
    if metric == "ctr":
        return MetricQuery(f"{_increase('clicks_total', sel, window)} / {impressions}", impressions)
    if metric == "conversionRate":
        return MetricQuery(f"{_increase('purchases_total', sel, window)} / {impressions}", impressions)
    if metric == "p99LatencyMs":
        route = f'route="{RANK_ROUTE}"'
        buckets = f"sum by (le) (rate({METRIC_PREFIX}request_duration_seconds_bucket{sel.matchers(route)}[{window}]))"
        return MetricQuery(
            f"1000 * histogram_quantile(0.99, {buckets})",
            _increase("request_duration_seconds_count", sel, window, route),
        )
    if metric == "errorRate":
        requests = _increase("requests_total", sel, window)
        server_errors = _increase("requests_total", sel, window, 'code=~"5.."')
        return MetricQuery(f"{server_errors} / {requests}", requests)
    raise ValueError(f"no built-in query for metric {metric!r}")


def score_histogram_query(sel: TrackSelector, window: str) -> str:
    """Per-bucket increase of the score histogram (cumulative by `le`), for drift."""
    return f"sum by (le) (increase({METRIC_PREFIX}score_bucket{sel.matchers()}[{window}]))"


def score_count_query(sel: TrackSelector, window: str) -> str:
    return _increase("score_count", sel, window)
