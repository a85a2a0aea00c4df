"""recops.monitor.prometheus against a real Prometheus scraping itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recops.monitor.prometheus import Prometheus, PrometheusAuth, PrometheusError
from tests.support.local_servers import free_port
from tests.support.prometheus import running_prometheus, self_signed_certificate, token_proxy


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


def test_bearer_token_from_a_rotating_file_basic_auth_ca_and_headers_reach_prometheus_behind_a_proxy(
        tmp_path: Path) -> None:
    token_file, password_file = tmp_path / "token", tmp_path / "password"
    token_file.write_text("first-token\n")  # as a mounted Secret key may end
    password_file.write_text("s3cret")
    with running_prometheus(tmp_path / "prom") as prom:
        prom.wait_for_targets(1)
        with token_proxy(prom.url, ["first-token"], required_headers={"X-Scope-OrgID": "shop"}) as proxy:
            auth = PrometheusAuth(bearer_token_file=str(token_file), headers={"X-Scope-OrgID": "shop"})
            assert asyncio.run(Prometheus(proxy.url, auth=auth).value('sum(up{job="prometheus"})')) == 1.0
            assert proxy.seen[-1]["Authorization"] == "Bearer first-token"
            # Without the token: refused, with an error that says so and what to check.
            with pytest.raises(PrometheusError, match=r"refused the query: HTTP 401 Unauthorized: Unauthorized: "
                                                      r"a valid bearer token.*--prometheus-bearer-token-file"):
                asyncio.run(Prometheus(proxy.url, auth=PrometheusAuth(headers={"X-Scope-OrgID": "shop"})).value("up"))
            # The kubelet rotates a projected token: the next query reads the new one.
            proxy.tokens = {"second-token"}
            with pytest.raises(PrometheusError, match="HTTP 401"):
                asyncio.run(Prometheus(proxy.url, auth=auth).value("up"))
            token_file.write_text("second-token")
            assert asyncio.run(Prometheus(proxy.url, auth=auth).value('sum(up{job="prometheus"})')) == 1.0
            token_file.unlink()
            with pytest.raises(PrometheusError, match=r"cannot read the Prometheus bearer token file .*token"):
                asyncio.run(Prometheus(proxy.url, auth=auth).value("up"))
        # Basic auth over https, the server's certificate checked against the CA bundle.
        cert, key = self_signed_certificate(tmp_path)
        with token_proxy(prom.url, basic=("recops", "s3cret"), tls=(cert, key)) as proxy:
            basic = PrometheusAuth(username="recops", password_file=str(password_file), ca_file=str(cert))
            assert asyncio.run(Prometheus(proxy.url, auth=basic).value('sum(up{job="prometheus"})')) == 1.0
            with pytest.raises(PrometheusError, match=r"cannot query Prometheus at https://127\.0\.0\.1.*certificate"):
                asyncio.run(Prometheus(proxy.url, auth=PrometheusAuth(username="recops",
                                                                      password_file=str(password_file))).value("up"))
            password_file.write_text("wrong")
            with pytest.raises(PrometheusError, match="HTTP 401"):
                asyncio.run(Prometheus(proxy.url, auth=basic).value("up"))
