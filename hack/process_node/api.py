"""A minimal stdlib Kubernetes REST client (the kubeconfig's client certificate)."""

from __future__ import annotations

import http.client
import http.server
import json
import ssl
import urllib.parse
from pathlib import Path
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:300]}")
        self.status = status


class Api:
    """Minimal Kubernetes REST client using the kubeconfig's client certificate."""

    def __init__(self, kubeconfig: str):
        cfg = json.loads(Path(kubeconfig).read_text())  # hack/cluster writes JSON kubeconfigs
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port
        self.ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        self.ca_file = cluster["certificate-authority"]

    def conn(self, timeout: float = 30) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> Any:
        c = self.conn()
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={"Content-Type": content_type, "Accept": "application/json"})
            r = c.getresponse()
            text = r.read().decode()
            if r.status >= 400:
                raise ApiError(r.status, text)
            return json.loads(text) if text else None
        finally:
            c.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def watch(self, path: str):
        """Yield watch events (dicts) until the server ends the stream."""
        c = self.conn(timeout=330)
        try:
            c.request("GET", path, headers={"Accept": "application/json"})
            r = c.getresponse()
            if r.status >= 400:
                raise ApiError(r.status, r.read().decode())
            while True:
                line = r.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            c.close()


# ================================================================ helpers
