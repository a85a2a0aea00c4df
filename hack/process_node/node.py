"""The Node: registration and heartbeats, the pod watch, pod IPs, the Prometheus file_sd, the logs endpoint."""

from __future__ import annotations

import argparse
import fcntl
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .api import Api, ApiError
from .common import IP_BLOCK_LOCKS, MARKER, log, micro_now, now
from .pod import PodRunner
from .podman import ApiserverProxy, Podman


class Node:
    def __init__(self, args: argparse.Namespace):
        self.api = Api(args.kubeconfig)
        self.name = args.node_name
        self.state = Path(args.state_dir).resolve()
        self.pods_dir = self.state / "pods"
        self.pvc_dir = self.state / "pvcs"
        self.sd_file = Path(args.sd_file) if args.sd_file else self.state / "prometheus-sd.json"
        self.taint = args.taint
        self.apiserver_port = args.apiserver_port or self.api.port
        self.pods: dict[str, PodRunner] = {}  # by uid
        # Containers whose image is in local podman storage run from it; the others as processes.
        self.podman = Podman() if not args.no_images else None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ips_in_use: set[str] = set()
        self.ip_block = 0
        self.service_ip: str | None = None  # the `kubernetes` Service's address for containers from images
        self.port, self.tls = args.port, (args.tls_cert, args.tls_key)

    # ------------------------------------------------------------ registration

    def node_status(self) -> dict:
        t = now()
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        capacity = {"cpu": str(os.cpu_count()), "memory": f"{mem // 1024}Ki", "pods": "110",
                    "ephemeral-storage": f"{shutil.disk_usage(self.state).total // 1024}Ki"}
        conds = [("Ready", "True", "KubeletReady", "recops process node is ready"),
                 ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
                 ("PIDPressure", "False", "KubeletHasSufficientPID", "")]
        return {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": ty, "status": st, "reason": r, "message": m,
                            "lastHeartbeatTime": t, "lastTransitionTime": t} for ty, st, r, m in conds],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"kubeletVersion": "recops-process-node", "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "process://local",
                         "kernelVersion": os.uname().release, "osImage": "local processes",
                         "machineID": "", "systemUUID": "", "bootID": ""},
        }

    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "type": "process", "recops.dev/process-node": "true"}
        taints = [{"key": "recops.dev/process-node", "value": "true", "effect": "NoSchedule"}] if self.taint else []
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {"taints": taints}, "status": self.node_status()}
        try:
            self.api.request("POST", "/api/v1/nodes", node)
            log(f"registered node {self.name}")
        except ApiError as e:
            if e.status != 409:
                raise
            self.api.request("PATCH", f"/api/v1/nodes/{self.name}",
                             {"metadata": {"labels": labels}, "spec": {"taints": taints or None}},
                             "application/merge-patch+json")
            self.api.request("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": self.node_status()},
                             "application/merge-patch+json")
            log(f"node {self.name} exists; updated")

    def heartbeat(self) -> None:
        """Renew the node Lease every 10s and the Ready condition every 30s, so the node
        lifecycle controller keeps the node Ready and untainted."""
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        last_status = 0.0
        while not self.stopping.is_set():
            try:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": micro_now()}}
                try:
                    self.api.request("PATCH", lease_path + "?fieldManager=recops-process-node&force=true", body,
                                     "application/apply-patch+yaml")
                except ApiError as e:
                    log(f"lease renew failed: {e}")
                if time.time() - last_status > 30:
                    self.api.request("PATCH", f"/api/v1/nodes/{self.name}/status",
                                     {"status": {"conditions": self.node_status()["conditions"]}},
                                     "application/strategic-merge-patch+json")
                    last_status = time.time()
            except Exception as e:
                log(f"heartbeat error: {e}")
            self.stopping.wait(10)

    # ------------------------------------------------------------ logs endpoint

    def serve_logs(self) -> None:
        """The kubelet's /containerLogs endpoint, so `kubectl logs` (through the apiserver)
        works for pods of this node. Loopback only; a development tool."""
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404)
                    return
                _, ns, name, container = parts
                q = urllib.parse.parse_qs(url.query)
                with node.lock:
                    runner = next((r for r in node.pods.values() if (r.ns, r.name) == (ns, name)), None)
                c = runner and next((c for c in runner.containers if c.name == container), None)
                if not runner or not c:
                    self.send_error(404, f"container {container} of pod {ns}/{name} not on this node")
                    return
                restart = c.restart_count - (1 if q.get("previous") == ["true"] else 0)
                path = runner.dir / "logs" / f"{c.name}-{restart}.log"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                data = path.read_bytes() if path.exists() else b""
                if "tailLines" in q:
                    data = b"".join(data.splitlines(keepends=True)[-int(q["tailLines"][0]):])
                self.wfile.write(data)
                if q.get("follow") != ["true"]:
                    return
                offset = path.stat().st_size if path.exists() else 0
                while c.proc and c.proc.poll() is None and c.restart_count == restart:
                    time.sleep(0.5)
                    with open(path, "rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                    if chunk:
                        offset += len(chunk)
                        self.wfile.write(chunk)
                        self.wfile.flush()

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.serve_forever()

    # ------------------------------------------------------------ pod IPs and discovery

    def claim_ip_block(self) -> None:
        """Loopback addresses are shared by the whole machine, and other clusters (other
        cluster dirs, CI beside a dev cluster) run process nodes too: each node holds an
        flock on one 127.N.0.0/16 block for its lifetime and gives pod IPs only from it."""
        IP_BLOCK_LOCKS.mkdir(parents=True, exist_ok=True)
        start = random.randint(2, 254)
        for n in [*range(start, 255), *range(2, start)]:
            f = open(IP_BLOCK_LOCKS / f"127.{n}.lock", "a+")  # noqa: SIM115 - held open for the lifetime
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.truncate(0)
            f.write(f"{os.getpid()} {self.state}\n")
            f.flush()
            self.ip_block, self.ip_block_lock = n, f
            log(f"pod IPs from 127.{n}.0.0/16")
            return
        raise RuntimeError("no free 127.N.0.0/16 block for pod IPs")

    def start_service_proxy(self) -> None:
        """kubernetes.default.svc:443 for containers from images: the last address of this node's block."""
        ip = f"127.{self.ip_block}.255.254"
        try:
            ApiserverProxy(ip, (self.api.host, self.api.port)).start()
        except OSError as e:
            log(f"no kubernetes.default.svc for containers from images ({ip}:{ApiserverProxy.PORT}: {e})")
            return
        self.service_ip = ip
        self.ips_in_use.add(ip)
        log(f"kubernetes.default.svc is {ip}:{ApiserverProxy.PORT} (relayed to the apiserver)")

    def allocate_ip(self, wanted: str | None = None) -> str:
        with self.lock:
            if wanted and wanted.startswith(f"127.{self.ip_block}.") and wanted not in self.ips_in_use:
                self.ips_in_use.add(wanted)
                return wanted
            for i in range(1, 256 * 256):
                ip = f"127.{self.ip_block}.{i // 256}.{i % 256}"
                if i % 256 in (0, 255) or ip in self.ips_in_use:
                    continue
                self.ips_in_use.add(ip)
                return ip
        raise RuntimeError("no free loopback pod IP")

    def release_ip(self, ip: str | None) -> None:
        with self.lock:
            self.ips_in_use.discard(ip or "")

    def write_sd(self) -> None:
        """Prometheus file_sd: one target group per running pod with prometheus.io/scrape=true."""
        groups = []
        with self.lock:
            runners = list(self.pods.values())
        for r in runners:
            pod = r.pod
            ann = pod["metadata"].get("annotations") or {}
            if ann.get("prometheus.io/scrape") != "true" or not r.ip or r.terminal or r.deleting:
                continue
            port = ann.get("prometheus.io/port") or next(
                (str(p["containerPort"]) for c in pod["spec"]["containers"] for p in c.get("ports", [])), None)
            if not port:
                continue
            labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in (pod["metadata"].get("labels") or {}).items()}
            labels.update({"__metrics_path__": ann.get("prometheus.io/path", "/metrics"),
                           "__scheme__": ann.get("prometheus.io/scheme", "http"),
                           "namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"],
                           "node": self.name})
            groups.append({"targets": [f"{r.ip}:{port}"], "labels": labels})
        groups.sort(key=lambda g: g["targets"][0])
        text = json.dumps(groups, indent=2) + "\n"
        with self.lock:
            if self.sd_file.exists() and self.sd_file.read_text() == text:
                return
            tmp = self.sd_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.rename(self.sd_file)  # atomic, as Prometheus expects

    # ------------------------------------------------------------ pod watch

    def handle(self, pod: dict, deleted: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            runner = self.pods.get(uid)
        if deleted:
            if runner:
                runner.on_deleted()
            return
        if runner:
            runner.update(pod)
            return
        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            if pod["metadata"].get("deletionTimestamp"):
                self.finalize_delete(pod)
            return
        runner = PodRunner(self, pod)
        with self.lock:
            self.pods[uid] = runner
        runner.start()

    def finalize_delete(self, pod: dict) -> None:
        """What the kubelet does last: remove the pod object once nothing runs."""
        meta = pod["metadata"]
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": meta["uid"]}})
        except ApiError as e:
            if e.status not in (404, 409):
                log(f"delete {meta['namespace']}/{meta['name']}: {e}")

    def forget(self, uid: str) -> None:
        with self.lock:
            self.pods.pop(uid, None)
        self.write_sd()

    def watch_pods(self) -> None:
        selector = urllib.parse.quote(f"spec.nodeName={self.name}")
        base = f"/api/v1/pods?fieldSelector={selector}"
        while not self.stopping.is_set():
            try:
                listing = self.api.get(base)
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.handle(pod)
                with self.lock:
                    gone = [r for uid, r in self.pods.items() if uid not in seen]
                for r in gone:
                    r.on_deleted()
                rv = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for ev in self.api.watch(f"{base}&watch=1&resourceVersion={rv}&timeoutSeconds=300"
                                             "&allowWatchBookmarks=true"):
                        obj = ev["object"]
                        if ev["type"] == "ERROR":
                            raise ApiError(obj.get("code", 500), obj.get("message", ""))
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            self.handle(obj, deleted=ev["type"] == "DELETED")
            except Exception as e:
                if not self.stopping.is_set():
                    log(f"pod watch: {e}; relisting")
                    time.sleep(1)

    def sweep_leftovers(self) -> None:
        """Kill container processes a previous agent of this state dir left behind."""
        marker = f"{MARKER}={self.state}".encode()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker in environ.read_bytes().split(b"\0"):
                    os.kill(int(environ.parent.name), signal.SIGKILL)
                    log(f"killed leftover process {environ.parent.name}")
            except OSError:
                pass

    def run(self) -> None:
        if os.geteuid() != 0:
            sys.exit("process_node: must run as root (it bind-mounts volumes in per-pod mount namespaces)")
        self.state.mkdir(parents=True, exist_ok=True)
        self.sweep_leftovers()
        self.claim_ip_block()
        if self.podman:
            for name in self.podman.remove_labelled(str(self.state)):
                log(f"removed leftover container {name}")
            self.start_service_proxy()
        self.write_sd()
        self.register()

        def on_term(signum, frame):
            self.stopping.set()
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        if self.port:
            threading.Thread(target=self.serve_logs, daemon=True).start()
        threading.Thread(target=self.heartbeat, daemon=True).start()
        threading.Thread(target=self.watch_pods, daemon=True).start()
        while not self.stopping.is_set():
            self.stopping.wait(1)
        # Shutting down: stop every pod's processes (pod objects are left as they are).
        log("stopping: killing pod processes")
        with self.lock:
            runners = list(self.pods.values())
        threads = [threading.Thread(target=r.kill_all, args=(2,)) for r in runners]
        for t in threads:  # all pods at once, so `hack/cluster down` stays quick
            t.start()
        for t in threads:
            t.join()
        log("stopped")


# ================================================================ one pod

