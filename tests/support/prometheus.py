"""A real Prometheus (Debian's package) for tests: scrapes static targets and file_sd files."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

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
