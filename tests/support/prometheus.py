"""A real Prometheus (Debian's package) for tests: scrapes static targets and file_sd files; and an
authenticating reverse proxy to put in front of it."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from tests.support.local_servers import free_port, stop_process, wait_for_http


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, object]]:
        data = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as resp:
            body = json.load(resp)
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def wait_for_targets(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:
                active = json.load(resp)["data"]["activeTargets"]
            if sum(t["health"] == "up" for t in active) >= count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"fewer than {count} Prometheus targets up after {timeout}s: {self.log.read_text()[-2000:]}")


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus is not installed: run hack/system-packages (Debian's package; `make test` runs it)")
    return path


@contextmanager
def running_prometheus(
    workdir: Path,
    *,
    static_targets: Sequence[str] = (),
    file_sd: Sequence[Path] = (),
    scrape_interval: str = "1s",
) -> Iterator[PrometheusServer]:
    """Start Prometheus on a free loopback port; stop it (and wait) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    jobs = [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    if static_targets:
        jobs.append({"job_name": "static", "static_configs": [{"targets": list(static_targets)}]})
    if file_sd:
        jobs.append({
            "job_name": "recops-pods",
            "file_sd_configs": [{"files": [str(p) for p in file_sd], "refresh_interval": "1s"}],
        })
    config = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
              "scrape_configs": jobs}
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [prometheus_binary(), f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log)
    try:
        if not wait_for_http(f"{server.url}/-/ready", process, timeout=30, request_timeout=2):
            raise RuntimeError(f"Prometheus did not start: {log.read_text()[-2000:]}")
        yield server
    finally:
        stop_process(process, timeout=10)


@dataclass
class TokenProxy:
    """A reverse proxy in front of Prometheus that forwards only requests carrying an accepted credential,
    as an authenticating gateway (kube-rbac-proxy, a Mimir or managed-Prometheus frontend) would."""

    url: str
    tokens: set[str]  # accepted bearer tokens; change it to rotate
    basic: tuple[str, str] | None = None  # an accepted (user, password)
    required_headers: dict[str, str] = field(default_factory=dict)
    seen: list[dict[str, str]] = field(default_factory=list)  # the headers of each request

    def allowed(self, headers: Mapping[str, str]) -> bool:
        auth = headers.get("Authorization", "")
        if any(headers.get(k) != v for k, v in self.required_headers.items()):
            return False
        if auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.tokens:
            return True
        if auth.startswith("Basic ") and self.basic is not None:
            return base64.b64decode(auth.removeprefix("Basic ")).decode() == ":".join(self.basic)
        return False


def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with openssl; the certificate is its own CA bundle."""
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@contextmanager
def token_proxy(upstream: str, tokens: Sequence[str] = (), *, basic: tuple[str, str] | None = None,
                required_headers: Mapping[str, str] | None = None,
                tls: tuple[Path, Path] | None = None) -> Iterator[TokenProxy]:
    """Run the proxy on a free loopback port in a thread with its own event loop (https with `tls`)."""
    port = free_port()
    proxy = TokenProxy(f"{'https' if tls else 'http'}://127.0.0.1:{port}", set(tokens), basic,
                       dict(required_headers or {}))
    loop = asyncio.new_event_loop()
    runner_box: list[web.AppRunner] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        proxy.seen.append(dict(request.headers))
        if not proxy.allowed(request.headers):
            return web.Response(status=401, text="Unauthorized: a valid bearer token is required\n",
                                headers={"WWW-Authenticate": "Bearer"})
        body = await request.read()
        async with aiohttp.ClientSession() as session, session.request(
            request.method, upstream + request.rel_url.path_qs, data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "")},
        ) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                content_type=answer.content_type)

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        runner_box.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
