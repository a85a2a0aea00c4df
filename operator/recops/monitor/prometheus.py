"""A small Prometheus HTTP API client (instant queries), async for the operator's event loop.

Authentication (`PrometheusAuth`) comes from files only (a mounted Secret key or a projected
ServiceAccount token), never from a value in a spec; the token and password files are read on each
query, so a rotated token is used as soon as the kubelet writes it.
"""

from __future__ import annotations

import json
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


@dataclass(frozen=True)
class PrometheusAuth:
    """How the operator authenticates to its Prometheus (flags --prometheus-*); every secret is a file."""

    bearer_token_file: str | None = None
    username: str | None = None  # basic auth, with the password in password_file
    password_file: str | None = None
    ca_file: str | None = None  # PEM bundle that signs the server's certificate (https)
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. X-Scope-OrgID of Mimir or Cortex

    def request_headers(self) -> dict[str, str]:
        """The headers of one request, with the credential files read now (they rotate)."""
        headers = dict(self.headers)
        if self.bearer_token_file:
            headers["Authorization"] = f"Bearer {_read_secret(self.bearer_token_file, 'bearer token')}"
        elif self.username:
            password = _read_secret(self.password_file, "password") if self.password_file else ""
            headers["Authorization"] = aiohttp.encode_basic_auth(self.username, password)
        return headers

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.ca_file:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as err:
            raise PrometheusError(f"cannot load the Prometheus CA bundle {self.ca_file}: {err}") from err

    @property
    def configured(self) -> bool:
        return bool(self.bearer_token_file or self.username or self.ca_file or self.headers)


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as err:
        raise PrometheusError(f"cannot read the Prometheus {what} file {path}: {err.strerror or err}") from err


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs name the same scheme, host and port (where credentials may be sent)."""
    x, y = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (x.scheme, (x.hostname or "").lower(), x.port or default.get(x.scheme)) == \
        (y.scheme, (y.hostname or "").lower(), y.port or default.get(y.scheme))


def auth_for(url: str, default_url: str | None, auth: PrometheusAuth | None) -> PrometheusAuth | None:
    """The operator's credentials go only to the operator's own Prometheus: a MonitorPolicy naming another
    URL must not receive them (anyone who may create a policy could otherwise collect the token)."""
    if auth is None or not default_url or not same_origin(url, default_url):
        return None
    return auth


def _refusal(status: int, reason: str | None, text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    what = f"HTTP {status} {reason or ''}".strip() + (f": {first[:200]}" if first else "")
    if status in (401, 403):
        what += " (check the operator's Prometheus credentials: --prometheus-bearer-token-file, " \
                "--prometheus-username/--prometheus-password-file)"
    return what


class Prometheus:
    def __init__(self, url: str, timeout_seconds: float = 10.0, auth: PrometheusAuth | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.auth = auth or PrometheusAuth()

    async def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        headers, context = self.auth.request_headers(), self.auth.ssl_context()
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, session.post(
                f"{self.url}/api/v1/query", data={"query": promql}, headers=headers,
                ssl=context if context is not None else True,
            ) as response:
                text = await response.text()
                if response.status in (401, 403, 407) or (response.status >= 300 and not text.lstrip().startswith("{")):
                    raise PrometheusError(f"Prometheus at {self.url} refused the query: "
                                          f"{_refusal(response.status, response.reason, text)}")
                body = json.loads(text)
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
