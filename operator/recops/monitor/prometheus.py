"""A small Prometheus HTTP API client (instant queries), async for the operator's event loop."""

from __future__ import annotations

import math
from typing import Any

import aiohttp


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused the query; str() is one line."""


def parse_vector(body: dict[str, Any]) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) pairs of an instant-query answer (vector or scalar)."""
    if body.get("status") != "success":
        raise PrometheusError(f"{body.get('errorType', 'error')}: {body.get('error', 'unknown error')}")
    data = body.get("data", {})
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return [({}, float(result[1]))]
    if result_type == "vector":
        return [(item.get("metric", {}), float(item["value"][1])) for item in result]
    raise PrometheusError(f"unexpected result type {result_type!r}")


def single_value(pairs: list[tuple[dict[str, str], float]]) -> float | None:
    """One number from a query meant to return one series; None for no data (or NaN)."""
    if not pairs:
        return None
    if len(pairs) > 1:
        raise PrometheusError(f"query returned {len(pairs)} series; aggregate it to one (e.g. with sum)")
    value = pairs[0][1]
    return None if math.isnan(value) or math.isinf(value) else value


class Prometheus:
    def __init__(self, url: str, timeout_seconds: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, session.post(
                f"{self.url}/api/v1/query", data={"query": promql}
            ) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise PrometheusError(f"cannot query Prometheus at {self.url}: {err or type(err).__name__}") from err
        return parse_vector(body)

    async def value(self, promql: str) -> float | None:
        return single_value(await self.query(promql))

    async def histogram(self, promql: str) -> tuple[list[float], list[float]]:
        """(upper bounds, cumulative counts) of a `sum by (le)` query, sorted by bound."""
        pairs = await self.query(promql)
        rows = sorted((float(labels["le"]), value) for labels, value in pairs if "le" in labels)
        return [b for b, _ in rows], [c for _, c in rows]
