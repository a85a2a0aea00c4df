"""Probes (startup, readiness, liveness; httpGet, tcpSocket, exec) as the kubelet runs them."""

from __future__ import annotations

import http.client
import http.server
import signal
import socket
import ssl
import subprocess
import threading
from typing import TYPE_CHECKING, Any

from .common import proc_wait

if TYPE_CHECKING:
    from .pod import Container


class Probes:
    """PodRunner's probes."""

    def probe_loop(self, c: Container, kind: str, probe: dict, proc: subprocess.Popen,
                   stop: threading.Event, env: dict) -> None:
        period = probe.get("periodSeconds", 10)
        success_th, failure_th = probe.get("successThreshold", 1), probe.get("failureThreshold", 3)
        ok_run = fail_run = 0
        if kind != "startupProbe":
            while not c.startup_ok.wait(0.2):
                if stop.is_set():
                    return
        if stop.wait(probe.get("initialDelaySeconds", 0)):
            return
        while not stop.is_set() and proc.poll() is None and not self.deleting:
            ok = self.probe_once(probe, c, proc, env)
            ok_run, fail_run = (ok_run + 1, 0) if ok else (0, fail_run + 1)
            if kind == "startupProbe" and ok_run >= 1:
                c.started = True
                c.ready = not c.spec.get("readinessProbe")
                c.startup_ok.set()
                self.log(f"container {c.name} started (startup probe)")
                self.push_status()
                return
            if kind == "readinessProbe":
                ready = c.ready
                if ok_run >= success_th:
                    ready = True
                elif fail_run >= failure_th:
                    ready = False
                if ready != c.ready:
                    c.ready = ready
                    self.log(f"container {c.name} ready={ready}")
                    self.push_status()
            elif fail_run >= failure_th:
                self.log(f"container {c.name} failed {kind}; killing")
                self.signal_container(c, proc, signal.SIGTERM)
                if proc_wait(proc, self.pod["spec"].get("terminationGracePeriodSeconds", 30)) is None:
                    self.signal_container(c, proc, signal.SIGKILL)
                return
            if stop.wait(period):
                return

    def probe_once(self, probe: dict, c: Container, proc: subprocess.Popen, env: dict) -> bool:
        timeout = probe.get("timeoutSeconds", 1)
        try:
            if "httpGet" in probe:
                g = probe["httpGet"]
                port = self.port_number(c, g["port"])
                host = g.get("host") or self.ip
                cls = http.client.HTTPSConnection if g.get("scheme") == "HTTPS" else http.client.HTTPConnection
                kw = {"context": ssl._create_unverified_context()} if cls is http.client.HTTPSConnection else {}
                conn = cls(host, port, timeout=timeout, **kw)
                try:
                    conn.request("GET", g.get("path", "/"),
                                 headers={h["name"]: h["value"] for h in g.get("httpHeaders", [])})
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "tcpSocket" in probe:
                port = self.port_number(c, probe["tcpSocket"]["port"])
                with socket.create_connection((probe["tcpSocket"].get("host") or self.ip, port), timeout):
                    return True
            if "exec" in probe:
                # Run inside the container, with its environment.
                exec_argv, exec_env = self.exec_argv(c, proc, probe["exec"]["command"])
                # `podman exec` itself takes a moment on a busy machine: not the command's time.
                res = subprocess.run(exec_argv, env=exec_env, capture_output=True,
                                     timeout=timeout + (10 if c.podman_name else 0))
                return res.returncode == 0
        except Exception:
            return False
        return False

    @staticmethod
    def port_number(c: Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown named port {port}")

    # ------------------------------------------------------------ volumes
