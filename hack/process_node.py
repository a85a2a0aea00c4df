#!/usr/bin/env python3
"""The local process node (issue 9): a tiny kubelet that runs pods as local processes.

It registers the Node `recops-local` and runs every pod bound to it: each container's
command as a local process (no image is pulled; a command that does not exist here fails
the pod with reason ExecutableNotFound). Each container runs in its own private mount
namespace (`unshare -m`), where the pod's volumes (emptyDir, configMap, secret, PVC,
projected service-account token, downwardAPI, hostPath) are bind-mounted at the paths
the pod asks for, together with the termination-message file (TMPDIR is per pod too); the
volume directories are per pod (per claim for PVCs), so two pods reading the same path
see their own data. Each pod gets its own loopback pod IP (127.0.0.x), passed to its
processes as RECOPS_SERVE_HOST. Probes (httpGet, tcpSocket, exec), restart policies,
termination messages and graceful deletion (SIGTERM, then SIGKILL after the grace
period) follow the kubelet. Logs are kept per container in files under the state dir.
Pods with prometheus.io/scrape annotations are listed in a Prometheus file_sd file.

A container whose image is in local podman storage (`make images`) runs from that image
instead, with podman (hack/podman_runtime.py): the image's filesystem and entrypoint, the
pod's volumes (the service-account token, CA and namespace among them), env and
securityContext, the host network; `--no-images` turns that off.

Started by `hack/cluster up --process-node`. Stdlib only. Must run as root (mounts).

    process_node.py --kubeconfig K --state-dir D [--node-name N] [--taint]
    process_node.py exec SPEC.json    (internal: runs inside a container's namespace)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from podman_runtime import NODE_LABEL, START_ERROR_CODES, ApiserverProxy, Podman, container_name, merged_security

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
IP_BLOCK_LOCKS = Path("/tmp/recops-pod-ip-blocks")  # machine-wide: one lock file per 127.N block
MARKER = "RECOPS_PROCESS_NODE_DIR"  # env var in every container process: lets `down` sweep leftovers


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(msg: str) -> None:
    print(f"{now()} {msg}", flush=True)


# ================================================================ API client (stdlib)


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


def quantity_to_float(q: str) -> float:
    """Kubernetes quantity -> float (cpu cores or bytes)."""
    units = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    m = re.fullmatch(r"([0-9.eE+-]+?)([a-zA-Z]*)", str(q))
    if not m:
        raise ValueError(q)
    return float(m.group(1)) * units.get(m.group(2), 1)


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: $(VAR) -> value if defined, $$ -> $."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, s)


def field_path(pod: dict, path: str) -> str:
    """Downward API fieldRef.fieldPath."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", "127.0.0.1"), "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
        "status.hostIPs": status.get("hostIP", "127.0.0.1"),
    }
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path}")
    return simple[path]


def resource_field(pod: dict, container_name: str, ref: dict) -> str:
    """Downward API resourceFieldRef (limits fall back to the node's capacity, as in k8s)."""
    name = ref.get("containerName") or container_name
    c = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    kind, res = ref["resource"].split(".", 1)
    value = (c.get("resources", {}).get(kind) or {}).get(res)
    if value is None:
        value = str(os.cpu_count()) if res == "cpu" else str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    divisor = quantity_to_float(ref.get("divisor", "1"))
    v = quantity_to_float(value) / divisor
    return str(int(-(-v // 1)))  # ceil, as the kubelet does


class NotReadyYet(Exception):
    """A referenced ConfigMap/Secret is missing: retry, as the kubelet does."""


# ================================================================ the node


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


class Container:
    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.restart_count = 0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.ready = False
        self.started = False
        self.done = threading.Event()  # terminated for good (no restart coming)
        self.startup_ok = threading.Event()
        self.env: dict[str, str] = {}
        self.podman_name: str | None = None  # set while it runs from its image with podman

    @property
    def container_id(self) -> str:
        if self.podman_name:
            return f"podman://{self.podman_name}"
        return f"process://{self.proc.pid}" if self.proc else ""

    def status(self) -> dict:
        s = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "", "containerID":
             self.container_id, "ready": self.ready,
             "restartCount": self.restart_count, "started": self.started, "state": self.state}
        if self.last_state:
            s["lastState"] = self.last_state
        return s


class PodRunner:
    def __init__(self, node: Node, pod: dict):
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid = meta["uid"]
        self.ns, self.name = meta["namespace"], meta["name"]
        self.dir = node.pods_dir / f"{self.ns}_{self.name}_{self.uid}"
        self.ip: str | None = (pod.get("status") or {}).get("podIP")
        self.lock = threading.RLock()
        self.containers = [Container(c, True) for c in pod["spec"].get("initContainers", [])] + \
                          [Container(c, False) for c in pod["spec"]["containers"]]
        self.deleting = False
        self.deleted = False
        self.terminal = False
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now()
        self.initialized = not pod["spec"].get("initContainers")
        self.last_status: str | None = None
        self.transitions: dict[str, str] = {}
        self.wake = threading.Event()
        self.mounts: dict[str, list[dict]] = {}

    # ------------------------------------------------------------ events from the watch

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"pod-{self.ns}/{self.name}", daemon=True).start()

    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp") and not self.deleting:
                self.deleting = True
                threading.Thread(target=self.terminate, daemon=True).start()

    def on_deleted(self) -> None:
        with self.lock:
            self.deleted = True
            self.deleting = True
        self.kill_all(grace=0)
        self.cleanup()

    # ------------------------------------------------------------ lifecycle

    def log(self, msg: str) -> None:
        log(f"pod {self.ns}/{self.name}: {msg}")

    def run(self) -> None:
        try:
            self.ip = self.node.allocate_ip(self.ip)
            self.dir.mkdir(parents=True, exist_ok=True)
            for sub in ("volumes", "logs", "termination", "tmp"):
                (self.dir / sub).mkdir(exist_ok=True)
            (self.dir / "tmp").chmod(0o1777)
            self.push_status()
            while True:  # volumes may reference objects that do not exist yet
                if self.deleting:
                    return
                try:
                    self.prepare_volumes()
                    break
                except NotReadyYet as e:
                    self.set_waiting("CreateContainerConfigError", str(e))
                    self.push_status()
                    time.sleep(2)
            for c in [c for c in self.containers if c.init]:
                if not self.run_container(c, wait=True):
                    return
            self.initialized = True
            mains = [c for c in self.containers if not c.init]
            threads = [threading.Thread(target=self.run_container, args=(c,), daemon=True) for c in mains]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.finish_if_done()
        except Exception as e:
            self.log(f"failed: {e!r}")
            self.fail("ProcessNodeError", str(e))

    def set_waiting(self, reason: str, message: str) -> None:
        for c in self.containers:
            if not c.proc:
                c.state = {"waiting": {"reason": reason, "message": message}}

    def fail(self, reason: str, message: str) -> None:
        with self.lock:
            self.phase, self.reason, self.message, self.terminal = "Failed", reason, message, True
        self.push_status()
        self.node.write_sd()

    def run_container(self, c: Container, wait: bool = False) -> bool:
        """Run one container, restarting it as the restart policy says. True if it ended
        successfully (or it is a long-running container that was stopped)."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        backoff = 1.0
        while True:
            if self.deleting:
                return False
            code, reason, message = self.start_and_wait(c)
            restart = not self.deleting and (policy == "Always" or (policy == "OnFailure" and code != 0))
            if reason == "ExecutableNotFound":
                restart = False
            if not restart:
                c.done.set()
                self.push_status()
                if c.init and code != 0:
                    self.fail("InitContainerFailed", f"init container {c.name} exited with {code}")
                elif reason == "ExecutableNotFound" or reason == "CreateContainerError":
                    self.fail(reason, message)
                return code == 0
            # Restart with back-off (short, since this serves tests).
            c.last_state, c.restart_count = c.state, c.restart_count + 1
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {backoff:.0f}s restarting failed container={c.name}"}}
            self.push_status()
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)

    def container_env(self, c: dict, local: bool = True) -> dict[str, str]:
        """The container's environment; a local process also gets the host's PATH, HOME and LANG
        and a per-pod TMPDIR (a container from an image has its image's)."""
        env: dict[str, str] = {
            "HOSTNAME": self.name,
            # Services' ClusterIPs are not routable here; point in-cluster clients at the apiserver
            # (at an address its certificate names: kubernetes.default.svc is the other way in).
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.node.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.node.apiserver_port),
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.node.apiserver_port}",
            "RECOPS_SERVE_HOST": self.ip or "127.0.0.1",
        }
        if local:
            env.update({
                "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/root"), "LANG": os.environ.get("LANG", "C.UTF-8"),
                # A per-pod temp dir (not a mount over /tmp, which would hide host paths such
                # as a checkout under /tmp from the process).
                "TMPDIR": str(self.dir / "tmp"),
            })
            venv_bin = REPO / ".venv" / "bin"
            if venv_bin.is_dir():  # the project's `recops` executable lives here
                env["PATH"] = f"{venv_bin}:{env['PATH']}"
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = self.read_object("configmaps", src["configMapRef"]["name"], src["configMapRef"].get("optional"))
                env.update({prefix + k: v for k, v in (data or {}).get("data", {}).items()})
            if "secretRef" in src:
                data = self.read_object("secrets", src["secretRef"]["name"], src["secretRef"].get("optional"))
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in (data or {}).get("data", {}).items()})
        for e in c.get("env", []):
            if "valueFrom" not in e:
                env[e["name"]] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = field_path(self.pod_with_ip(), vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[e["name"]] = resource_field(self.pod, c["name"], vf["resourceFieldRef"])
            elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind = "configmaps" if "configMapKeyRef" in vf else "secrets"
                ref = vf.get("configMapKeyRef") or vf["secretKeyRef"]
                obj = self.read_object(kind, ref["name"], ref.get("optional"))
                data = (obj or {}).get("data", {})
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise NotReadyYet(f"couldn't find key {ref['key']} in {kind[:-1]} {self.ns}/{ref['name']}")
                value = data[ref["key"]]
                env[e["name"]] = base64.b64decode(value).decode() if kind == "secrets" else value
        env[MARKER] = str(self.node.state)
        env["RECOPS_POD_UID"] = self.uid
        return env

    def pod_with_ip(self) -> dict:
        pod = json.loads(json.dumps(self.pod))
        pod.setdefault("status", {}).update(podIP=self.ip, podIPs=[{"ip": self.ip}], hostIP="127.0.0.1")
        return pod

    def read_object(self, kind: str, name: str, optional: bool | None) -> dict | None:
        try:
            return self.node.api.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        except ApiError as e:
            if e.status == 404:
                if optional:
                    return None
                raise NotReadyYet(f'{kind[:-1]} "{name}" not found') from None
            raise

    def start_and_wait(self, c: Container) -> tuple[int, str, str]:
        spec = c.spec
        from_image = bool(self.node.podman and self.node.podman.has_image(spec.get("image", "")))
        try:
            env = self.container_env(spec, local=not from_image)
        except NotReadyYet as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            self.push_status()
            time.sleep(2)
            return self.start_and_wait(c) if not self.deleting else (1, "Error", str(e))
        command = [expand(a, env) for a in spec.get("command", [])]
        args = [expand(a, env) for a in spec.get("args", [])]
        argv = command + args
        term_path = spec.get("terminationMessagePath", "/dev/termination-log")
        term_file = self.dir / "termination" / c.name
        term_file.write_text("")
        status_file = self.dir / "termination" / f"{c.name}.launch.json"
        status_file.unlink(missing_ok=True)
        if not command and not from_image:
            msg = (f"container {c.name} has no command: the process node runs commands locally "
                   f"and cannot use the entrypoint of image {spec.get('image')!r}")
            c.state = {"terminated": {"exitCode": 127, "reason": "ExecutableNotFound", "message": msg,
                                      "startedAt": now(), "finishedAt": now()}}
            return 127, "ExecutableNotFound", msg
        mounts = []
        for vm in spec.get("volumeMounts", []):
            src = Path(self.volume_dir(vm["name"]))
            if vm.get("subPath"):
                src = src / expand(vm["subPath"], env)
                if not src.exists():
                    src.mkdir(parents=True)
            mounts.append({"source": str(src), "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        mounts.append({"source": str(term_file), "target": term_path, "readOnly": False})
        if from_image:
            popen_argv, popen_env = self.podman_command(c, command, args, env, mounts)
        else:
            c.podman_name = None
            launch = {"argv": argv, "env": env, "mounts": mounts, "workingDir": spec.get("workingDir"),
                      "statusFile": str(status_file), "image": spec.get("image", "")}
            launch_file = self.dir / f"{c.name}.launch-spec.json"
            launch_file.write_text(json.dumps(launch))
            # A private mount namespace per container; `unshare` execs (no fork), so the
            # pid we hold is the container's process.
            popen_argv = [UNSHARE, "--mount", "--propagation", "private", sys.executable,
                          str(Path(__file__).resolve()), "exec", str(launch_file)]
            popen_env = {MARKER: str(self.node.state)}
        log_file = self.dir / "logs" / f"{c.name}-{c.restart_count}.log"
        with open(log_file, "ab") as out:
            # Own session, so the group can be signalled.
            proc = subprocess.Popen(popen_argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=popen_env)
        with self.lock:
            c.proc = proc
            started = now()
            c.state = {"running": {"startedAt": started}}
            # With a startup probe the container counts as started (and other probes
            # begin) only once that probe succeeds.
            c.started = not spec.get("startupProbe")
            c.ready = c.started and not spec.get("readinessProbe")
            c.env, c.startup_ok = env, threading.Event()
            if c.started:
                c.startup_ok.set()
        self.log(f"started container {c.name} {c.container_id}: {argv or spec.get('image')}")
        self.push_status()
        probes = threading.Event()
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if spec.get(kind):
                threading.Thread(target=self.probe_loop, args=(c, kind, spec[kind], proc, probes, env),
                                 daemon=True).start()
        code = proc.wait()
        probes.set()
        finished = now()
        reason, message = ("Completed" if code == 0 else "Error"), ""
        if code < 0:  # killed by a signal: report as a shell would
            code = 128 - code
        podman_error = self.podman_error(c, code, log_file)
        if status_file.exists():  # the launcher could not start the command
            info = json.loads(status_file.read_text())
            reason, message = info["reason"], info["message"]
        elif podman_error:
            reason, message = "StartError", podman_error
        else:
            message = term_file.read_bytes()[:4096].decode(errors="replace")
            if not message and code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                lines = log_file.read_bytes()[-2048:].decode(errors="replace").splitlines()[-80:]
                message = "\n".join(lines)
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished,
                "containerID": c.container_id}
        if message:
            term["message"] = message
        with self.lock:
            c.state = {"terminated": term}
            c.ready = False
        self.log(f"container {c.name} exited {code} ({reason})")
        return code, reason, message

    def podman_command(self, c: Container, command: list[str], args: list[str], env: dict[str, str],
                       mounts: list[dict]) -> tuple[list[str], dict[str, str]]:
        """`podman run` of a container whose image is in local storage, given what a kubelet gives it."""
        assert self.node.podman
        security = merged_security(self.pod["spec"], c.spec)
        # The termination-message file (the last mount) is written by the container's user, whoever it is.
        Path(mounts[-1]["source"]).chmod(0o666)
        if security.get("fsGroup") is not None:  # the pod's own volumes belong to its fsGroup, as in k8s
            volumes = self.dir / "volumes"
            for path in [volumes, *volumes.rglob("*")]:
                os.chown(path, -1, security["fsGroup"])
        c.podman_name = container_name(self.ns, self.name, c.name, self.uid)
        return self.node.podman.run_command(
            name=c.podman_name, image=c.spec["image"], command=command, args=args, env=env, mounts=mounts,
            working_dir=c.spec.get("workingDir"), security=security, hostname=self.name,
            service_ip=self.node.service_ip or "127.0.0.1", labels={NODE_LABEL: str(self.node.state)})

    @staticmethod
    def podman_error(c: Container, code: int, log_file: Path) -> str | None:
        """Podman's own words when it, not the container's command, ended the run."""
        if not c.podman_name or code not in START_ERROR_CODES or not log_file.exists():
            return None
        lines = log_file.read_bytes()[-4096:].decode(errors="replace").splitlines()
        return next((line for line in reversed(lines) if line.startswith("Error: ")), None)

    def signal_container(self, c: Container, proc: subprocess.Popen, sig: int) -> None:
        if not c.podman_name or proc.poll() is not None:
            self.signal_proc(proc, sig)
            return
        assert self.node.podman
        if sig == signal.SIGKILL:
            self.node.podman.remove(c.podman_name)
        else:
            self.node.podman.signal(c.podman_name, signal.Signals(sig).name)

    def exec_argv(self, c: Container, proc: subprocess.Popen, command: list[str]) -> tuple[list[str], dict]:
        """A command run inside the container (exec probes, preStop hooks)."""
        if c.podman_name and self.node.podman:
            return self.node.podman.exec_command(c.podman_name, command)
        return ["nsenter", "-t", str(proc.pid), "-m", "--", *command], c.env

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

    def volume_dir(self, name: str) -> str:
        vol = next((v for v in self.pod["spec"].get("volumes", []) if v["name"] == name), None)
        if vol is None:
            raise ValueError(f"volumeMount refers to unknown volume {name}")
        if "hostPath" in vol:
            path = vol["hostPath"]["path"]
            if vol["hostPath"].get("type") in ("DirectoryOrCreate", None, "") and not os.path.exists(path):
                os.makedirs(path, exist_ok=True)
            return path
        if "persistentVolumeClaim" in vol:
            d = self.node.pvc_dir / self.ns / vol["persistentVolumeClaim"]["claimName"]
            d.mkdir(parents=True, exist_ok=True)
            return str(d)
        return str(self.dir / "volumes" / name)

    def prepare_volumes(self) -> None:
        for vol in self.pod["spec"].get("volumes", []):
            d = self.dir / "volumes" / vol["name"]
            if "emptyDir" in vol:
                d.mkdir(exist_ok=True)
                d.chmod(0o777)
            elif "configMap" in vol or "secret" in vol or "downwardAPI" in vol or "projected" in vol:
                files = self.volume_files(vol)
                if files is None:
                    continue
                d.mkdir(exist_ok=True)
                for rel, (content, mode) in files.items():
                    p = d / rel
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(content)
                    p.chmod(mode)

    def volume_files(self, vol: dict) -> dict[str, tuple[bytes, int]] | None:
        if "projected" in vol:
            out: dict[str, tuple[bytes, int]] = {}
            mode = vol["projected"].get("defaultMode", 0o644)
            for src in vol["projected"].get("sources", []):
                if "serviceAccountToken" in src:
                    out[src["serviceAccountToken"]["path"]] = (self.sa_token(src["serviceAccountToken"]), mode)
                else:
                    out.update(self.volume_files({**src, "_mode": mode}) or {})
            return out
        default_mode = vol.get("_mode", 0o644)
        if "configMap" in vol or "secret" in vol:
            src = vol.get("configMap") or vol["secret"]
            kind, name = ("configmaps", src["name"]) if "configMap" in vol else ("secrets", src["secretName"])
            obj = self.read_object(kind, name, src.get("optional"))
            if obj is None:
                return {}
            data = {k: v.encode() for k, v in obj.get("data", {}).items()} if kind == "configmaps" else \
                {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
            if kind == "configmaps":
                data.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
            mode = src.get("defaultMode", default_mode)
            if "items" in src:
                out = {}
                for it in src["items"]:
                    if it["key"] not in data:
                        if src.get("optional"):
                            continue
                        raise NotReadyYet(f"key {it['key']} not in {kind[:-1]} {name}")
                    out[it["path"]] = (data[it["key"]], it.get("mode", mode))
                return out
            return {k: (v, mode) for k, v in data.items()}
        if "downwardAPI" in vol:
            pod = self.pod_with_ip()
            out = {}
            for it in vol["downwardAPI"].get("items", []):
                if "fieldRef" in it:
                    value = field_path(pod, it["fieldRef"]["fieldPath"])
                else:
                    value = resource_field(pod, it["resourceFieldRef"].get("containerName", ""),
                                           it["resourceFieldRef"])
                out[it["path"]] = (value.encode(), it.get("mode", vol["downwardAPI"].get("defaultMode",
                                                                                        default_mode)))
            return out
        return None

    def sa_token(self, src: dict) -> bytes:
        """A bound token for the pod's ServiceAccount (TokenRequest), as the kubelet makes."""
        sa = self.pod["spec"].get("serviceAccountName", "default")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [src["audience"]] if src.get("audience") else [],
                         "expirationSeconds": src.get("expirationSeconds", 3607),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        res = self.node.api.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        return res["status"]["token"].encode()

    # ------------------------------------------------------------ stopping

    @staticmethod
    def signal_proc(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the container's whole process group

    def pre_stop(self, c: Container, timeout: float) -> None:
        hook = c.spec["lifecycle"]["preStop"]
        try:
            if "exec" in hook and c.proc:
                exec_argv, exec_env = self.exec_argv(c, c.proc, hook["exec"]["command"])
                subprocess.run(exec_argv, env=exec_env, capture_output=True, timeout=timeout)
            elif "httpGet" in hook:
                self.probe_once({"httpGet": hook["httpGet"], "timeoutSeconds": timeout}, c, c.proc, c.env)
            elif "sleep" in hook:
                time.sleep(min(timeout, hook["sleep"]["seconds"]))
        except Exception as e:  # a failing hook does not stop the deletion
            self.log(f"preStop hook of {c.name} failed: {e}")

    def kill_all(self, grace: float) -> None:
        running = [(c, c.proc) for c in self.containers if c.proc and c.proc.poll() is None]
        for c, p in running:
            self.signal_container(c, p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c, p in running:
            if proc_wait(p, max(0.0, deadline - time.monotonic())) is None:
                self.signal_container(c, p, signal.SIGKILL)
                if proc_wait(p, 10) is None:  # podman itself stuck: its group goes too
                    self.signal_proc(p, signal.SIGKILL)
                    p.wait()

    def terminate(self) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the pod."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self.log(f"deleting (grace {grace}s)")
        deadline = time.monotonic() + grace
        hooks = [threading.Thread(target=self.pre_stop, args=(c, grace), daemon=True) for c in self.containers
                 if c.proc and c.proc.poll() is None and (c.spec.get("lifecycle") or {}).get("preStop")]
        for t in hooks:  # preStop hooks first, within the grace period, as the kubelet does
            t.start()
        for t in hooks:
            t.join(max(0.0, deadline - time.monotonic()))
        self.kill_all(max(0.0, deadline - time.monotonic()))
        for c in self.containers:
            c.done.set()
        with self.lock:
            if not self.terminal:
                codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in self.containers if not c.init]
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self.terminal = True
        self.push_status()
        self.node.finalize_delete(self.pod)
        self.cleanup()

    def cleanup(self) -> None:
        self.node.release_ip(self.ip)
        self.node.forget(self.uid)
        # Keep the logs; drop volume data and the per-pod /tmp.
        for sub in ("volumes", "tmp"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)

    def finish_if_done(self) -> None:
        mains = [c for c in self.containers if not c.init]
        if self.deleting or not all(c.done.is_set() for c in mains):
            return
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
        with self.lock:
            if not self.terminal:
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self.terminal = True
        self.push_status()
        self.node.write_sd()

    # ------------------------------------------------------------ status

    def compute_status(self) -> dict:
        with self.lock:
            mains = [c for c in self.containers if not c.init]
            inits = [c for c in self.containers if c.init]
            phase = self.phase
            if not self.terminal and any("running" in c.state or c.restart_count for c in mains):
                phase = "Running"
            all_ready = bool(mains) and all(c.ready for c in mains) and not self.terminal and not self.deleting
            started = any(c.proc for c in self.containers)

            def cond(ty: str, ok: bool, reason: str | None = None) -> dict:
                st = "True" if ok else "False"
                key = f"{ty}={st}"
                if key not in self.transitions:
                    self.transitions = {k: v for k, v in self.transitions.items() if not k.startswith(ty + "=")}
                    self.transitions[key] = now()
                c = {"type": ty, "status": st, "lastTransitionTime": self.transitions[key], "lastProbeTime": None}
                if reason and not ok:
                    c["reason"] = reason
                return c
            done_reason = "PodCompleted" if self.terminal else "ContainersNotReady"
            status = {
                "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "conditions": [
                    cond("PodReadyToStartContainers", started),
                    cond("Initialized", self.initialized, "ContainersNotInitialized"),
                    cond("ContainersReady", all_ready, done_reason),
                    cond("Ready", all_ready, done_reason),
                    cond("PodScheduled", True),
                ],
                "containerStatuses": [c.status() for c in mains],
            }
            if inits:
                status["initContainerStatuses"] = [c.status() for c in inits]
            if self.ip:
                status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
            if self.reason:
                status["reason"], status["message"] = self.reason, self.message
            return status

    def push_status(self) -> None:
        if self.deleted:
            return
        status = self.compute_status()
        text = json.dumps(status, sort_keys=True)
        with self.lock:
            if text == self.last_status:
                return
            self.last_status = text
        try:
            self.node.api.request("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                                  {"metadata": {"uid": self.uid}, "status": status},
                                  "application/strategic-merge-patch+json")
        except ApiError as e:
            if e.status not in (404, 409):
                self.log(f"status update failed: {e}")
        self.node.write_sd()


def proc_wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# ================================================================ launcher (inside the namespace)


def launch(spec_file: str) -> None:
    """Runs as root inside the container's fresh mount namespace: bind the volumes, enter
    the working directory, exec the command. Failures are written to statusFile."""
    spec = json.loads(Path(spec_file).read_text())
    # Open every mount source (and the status file's dir) BEFORE mounting anything: a
    # volume mounted over e.g. /tmp would otherwise hide sources that live under /tmp.
    status = Path(spec["statusFile"])
    status_dir = os.open(status.parent, os.O_PATH)
    sources = [(m, os.open(m["source"], os.O_PATH), os.path.isdir(m["source"])) for m in spec["mounts"]]
    # The checkout (its .venv holds `recops`) must stay visible: a volume over one of its parents
    # (an emptyDir at /tmp, with the checkout under /tmp) gets the checkout bound back inside it.
    repo_fd = os.open(REPO, os.O_PATH)

    def fail(reason: str, message: str, code: int) -> None:
        fd = os.open(status.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=status_dir)
        os.write(fd, json.dumps({"reason": reason, "message": message}).encode())
        os.close(fd)
        print(f"process-node: {reason}: {message}", file=sys.stderr, flush=True)
        sys.exit(code)

    for m, fd, is_dir in sorted(sources, key=lambda s: len(Path(s[0]["target"]).parts)):
        dst = Path(m["target"])
        try:
            # Mount points must exist; they are created (empty) in the shared filesystem.
            if is_dir:
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.touch()
            # The source opened above, wherever it is now (not canonicalised: mount would resolve
            # the fd's link to a path that an earlier mount may hide).
            src = f"/proc/{os.getpid()}/fd/{fd}"
            subprocess.run(["mount", "--no-canonicalize", "--bind", src, str(dst)], check=True, capture_output=True,
                           text=True)
            if m["readOnly"]:
                subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True, capture_output=True,
                               text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            err = getattr(e, "stderr", "") or str(e)
            fail("CreateContainerError", f"cannot mount {m['source']} at {dst}: {err.strip()}", 128)
    if any(REPO.is_relative_to(m["target"]) and Path(m["target"]) != REPO for m in spec["mounts"]):
        try:
            REPO.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{repo_fd}", str(REPO)],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            fail("CreateContainerError", f"cannot keep {REPO} visible: {getattr(e, 'stderr', '') or e}", 128)
    os.close(repo_fd)
    for _, fd, _ in sources:
        os.close(fd)
    env = spec["env"]
    if spec.get("workingDir"):
        os.makedirs(spec["workingDir"], exist_ok=True)
        os.chdir(spec["workingDir"])
    argv = spec["argv"]
    exe = argv[0]
    path = exe if "/" in exe else shutil.which(exe, path=env.get("PATH"))
    if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
        fail("ExecutableNotFound",
             f"executable {exe!r} not found on this machine (the process node runs commands locally "
             f"and does not pull image {spec.get('image')!r})", 127)
    os.close(status_dir)
    os.execve(path, argv, env)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "exec":
        launch(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description="recops local process node")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--node-name", default="recops-local")
    ap.add_argument("--apiserver-port", type=int, default=0)
    ap.add_argument("--sd-file", default="", help="Prometheus file_sd output (default STATE/prometheus-sd.json)")
    ap.add_argument("--port", type=int, default=0, help="HTTPS port of the logs endpoint (0: none)")
    ap.add_argument("--tls-cert", default="")
    ap.add_argument("--tls-key", default="")
    ap.add_argument("--taint", action="store_true", help="taint the node recops.dev/process-node=true:NoSchedule")
    ap.add_argument("--no-images", action="store_true",
                    help="run every container as a local process, even when its image is in podman storage")
    Node(ap.parse_args()).run()


if __name__ == "__main__":
    main()
