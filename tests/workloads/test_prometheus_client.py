"""recops.monitor.prometheus against a real Prometheus scraping itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recops.monitor.prometheus import Prometheus, PrometheusError
from tests.support.local_servers import free_port
from tests.support.prometheus import running_prometheus


def test_queries_values_histograms_and_errors(tmp_path: Path) -> None:
    with running_prometheus(tmp_path) as prom:
        prom.wait_for_targets(1)
        client = Prometheus(prom.url)
        assert asyncio.run(client.value('sum(up{job="prometheus"})')) == 1.0
        assert asyncio.run(client.value('sum(up{job="nothing-here"})')) is None
        bounds, counts = asyncio.run(client.histogram(
            "sum by (le) (prometheus_http_request_duration_seconds_bucket)"))
        assert bounds == sorted(bounds) and bounds[-1] == float("inf")
        assert counts == sorted(counts) and counts[-1] > 0
        with pytest.raises(PrometheusError, match="bad_data"):
            asyncio.run(client.value("sum(rate(up[5m]"))
        with pytest.raises(PrometheusError, match="series"):
            asyncio.run(client.value("up or vector(2)"))


def test_unreachable_prometheus_is_a_one_line_error() -> None:
    client = Prometheus(f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    with pytest.raises(PrometheusError, match=r"cannot query Prometheus at http://127\.0\.0\.1"):
        asyncio.run(client.value("up"))
