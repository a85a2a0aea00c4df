"""The local control plane (hack/cluster) as seen from tests.

A `Cluster` wraps one cluster dir: its admin kubeconfig, API clients, kubectl and
helpers to wait on real objects. `sa_kubeconfig` writes a kubeconfig for a
ServiceAccount (TokenRequest), so a test can act with exactly that account's RBAC.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 60, what: str = "condition", interval: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; return it. On timeout, fail with
    the last value seen (a generous timeout: correctness, not speed, is under test)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def wait_for_status(read_status: Callable[[], dict[str, Any]], predicate: Callable[[dict[str, Any]], Any],
                    timeout: float, what: str, details: Callable[[], str] | None = None) -> dict[str, Any]:
    """An object's status once `predicate(status)` holds; on timeout, fail showing the last status
    and `details()` (e.g. the pods or the operator's log)."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status()
        if predicate(status):
            return status
        if time.monotonic() > deadline:
            more = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; status:\n"
                                 f"{json.dumps(status, indent=1)}{more}")
        time.sleep(0.5)


# Pod spec fields that put a pod on the process node (hack/cluster --process-node), where it runs
# as a real local process: its hostname, and the toleration of its taint.
ON_PROCESS_NODE = {
    "nodeSelector": {"kubernetes.io/hostname": "recops-local"},
    "tolerations": [{"key": "recops.dev/process-node", "operator": "Exists", "effect": "NoSchedule"}],
}


@dataclass
class Cluster:
    dir: Path
    process_node: bool

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def bin_path(self) -> str:
        out = subprocess.run([str(HACK / "build-binaries"), "--paths"], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, helm, the operator) talking to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "RECOPS_CLUSTER_DIR": str(self.dir),
                "PATH": f"{self.bin_path}:{os.environ.get('PATH', '')}"}

    @property
    def state(self) -> dict:
        return json.loads((self.dir / "state.json").read_text())

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state['ports']['apiserver']}"

    def api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client())

    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client())

    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client())

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        cmd = ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def apply(self, manifest: dict | list | str, namespace: str | None = None) -> subprocess.CompletedProcess:
        """Server-side apply of one manifest, a list of them, or YAML text."""
        # JSON, not PyYAML's YAML 1.1: a string such as "585590e4" goes out unquoted there and
        # kubectl's YAML parser reads it as a number.
        text = manifest if isinstance(manifest, str) else "\n---\n".join(
            json.dumps(doc) for doc in (manifest if isinstance(manifest, list) else [manifest]))
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", "--server-side", *ns, "-f", "-", input=text)

    def create_namespace(self, prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix[:40].rstrip('-')}-{uuid.uuid4().hex[:6]}".lower()
        core = self.core()
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        # Pods need the namespace's `default` ServiceAccount, made by the controller-manager.
        wait_until(lambda: _exists(lambda: core.read_namespaced_service_account("default", name)),
                   60, f"default ServiceAccount in {name}")
        return name

    def pod(self, namespace: str, name: str) -> client.V1Pod:
        return self.core().read_namespaced_pod(name, namespace)

    def wait_pod_phase(self, namespace: str, name: str, phases: set[str], timeout: float = 60) -> client.V1Pod:
        def check() -> client.V1Pod | None:
            pod = self.pod(namespace, name)
            return pod if pod.status.phase in phases else None
        return wait_until(check, timeout, f"pod {namespace}/{name} phase in {phases}")

    def wait_condition(self, kind: str, namespace: str, name: str, cond: str, timeout: float = 90) -> dict:
        """Wait until `kind/name` has condition `cond` with status True; return the object."""
        def check() -> dict | None:
            res = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
            if res.returncode != 0:
                return None
            obj = json.loads(res.stdout)
            conds = obj.get("status", {}).get("conditions") or []
            return obj if any(c["type"] == cond and c["status"] == "True" for c in conds) else None
        return wait_until(check, timeout, f"{kind} {namespace}/{name} condition {cond}=True")

    def sa_kubeconfig(self, namespace: str, service_account: str, path: Path,
                      expiration_seconds: int = 3600) -> Path:
        return sa_kubeconfig(self, namespace, service_account, path, expiration_seconds)


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def sa_kubeconfig(cluster: Cluster, namespace: str, service_account: str, path: Path,
                  expiration_seconds: int = 3600) -> Path:
    """Write a kubeconfig that authenticates as system:serviceaccount:NS:SA with a token
    from the TokenRequest API (the ServiceAccount is created if missing). Whatever uses
    it gets exactly the RBAC granted to that account."""
    core = cluster.core()
    if not _exists(lambda: core.read_namespaced_service_account(service_account, namespace)):
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=service_account)))
    token = core.create_namespaced_service_account_token(
        service_account, namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=expiration_seconds))).status.token
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "recops-local", "cluster": {
            "server": cluster.server, "certificate-authority": str(cluster.dir / "pki" / "ca.crt")}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "recops-local", "user": service_account,
                                                 "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path
