"""Running `recops serve` as a real process in tests, on a free loopback port."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.local_servers import free_port

FEEDBACK_KEY = "test-feedback-key-0123456789abcdef"


class ServeProcess:
    def __init__(self, model: str | Path, *args: str, env: dict[str, str] | None = None,
                 feedback_key: str | None = FEEDBACK_KEY, fd_limit: int | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="recops-serve-", suffix=".log", delete=False)  # noqa: SIM115
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
        full_env.update({"RECOPS_SERVE_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                         "RECOPS_TORCH_THREADS": "1"})
        if feedback_key is not None:
            full_env["RECOPS_FEEDBACK_KEY"] = feedback_key
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recops", "serve", "--model", str(model), "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))) if fd_limit else None,
        )

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 180.0) -> ServeProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"recops serve exited with {self.process.returncode}:\n{self.log}")
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"recops serve was not ready after {timeout_s}s:\n{self.log}")

    def wait_exit(self, timeout_s: float = 60.0) -> int:
        return self.process.wait(timeout_s)

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        text = payload.decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Sample name -> [(labels, value)], parsed with the Prometheus client's parser."""
        status, text = self.request("GET", "/metrics")
        assert status == 200, text
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(value for sample_labels, value in self.metrics().get(name, [])
                   if all(sample_labels.get(k) == v for k, v in labels.items()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def candidates(n: int, prefix: str = "item") -> list[dict[str, str]]:
    words = ["red", "blue", "running", "shoes", "wool", "socks", "leather", "bag", "summer", "dress", "garden",
             "chair", "steel", "kettle", "cotton", "shirt"]
    return [{"id": f"{prefix}-{i}", "text": " ".join(words[(i * k + 3) % len(words)] for k in range(1, 2 + i % 5))}
            for i in range(n)]
