"""An in-memory Prometheus for controller tests: answers the PromQL that recops builds.

It answers by what a query asks for (as a real Prometheus would for these expressions), not by the
query's exact text: `ctr` (clicks over impressions), `impressions`, `errorRate` (5xx over requests),
`requests`, `p99LatencyMs`; a query of any other shape is looked up verbatim. Values are per track
(`tracks["canary"]["ctr"]`), else from `values`. Passed to a controller as its `prometheus_factory`
(calling the instance with a URL returns it and records the URL).
"""

from __future__ import annotations

import re
from typing import Any

from recops.monitor.prometheus import PrometheusError


def asked_for(promql: str) -> str:
    """What a query built by recops.monitor.promql measures."""
    if promql.startswith("sum(increase(recops_clicks_total"):
        return "ctr"
    if "histogram_quantile" in promql:
        return "p99LatencyMs"
    if promql.startswith("sum(increase(recops_impressions_total"):
        return "impressions"
    if promql.startswith("sum(increase(recops_requests_total") and 'code=~"5.."' in promql:
        return "errorRate"
    if promql.startswith(("sum(increase(recops_requests_total", "sum(increase(recops_request_duration_seconds_count")):
        return "requests"
    return promql


class FakePrometheus:
    def __init__(self, values: dict[str, float | None] | None = None,
                 histogram: tuple[list[float], list[float]] | None = None, fail: str | None = None,
                 tracks: dict[str, dict[str, float | None]] | None = None) -> None:
        self.values = values or {}
        self.tracks = tracks or {}
        self.hist = histogram or ([], [])
        self.fail = fail
        self.asked: list[str] = []
        self.urls: list[str] = []

    def __call__(self, url: str, **_: Any) -> FakePrometheus:
        self.urls.append(url)
        return self

    async def value(self, promql: str) -> float | None:
        self.asked.append(promql)
        if self.fail:
            raise PrometheusError(self.fail)
        track = re.search(r'track="([^"]+)"', promql)
        source = self.tracks.get(track.group(1), self.values) if track else self.values
        return source.get(asked_for(promql))

    async def histogram(self, promql: str) -> tuple[list[float], list[float]]:
        self.asked.append(promql)
        if self.fail:
            raise PrometheusError(self.fail)
        return self.hist
