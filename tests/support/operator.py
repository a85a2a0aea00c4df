"""`recops operator` as a real subprocess on the local control plane, authenticated as a
ServiceAccount (TokenRequest) that holds exactly the RBAC of config/rbac, never the admin
certificate."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.cluster import REPO, Cluster, wait_until
from tests.support.local_servers import free_port, stop_process

RBAC = REPO / "config" / "rbac"
OPERATOR_NAMESPACE = "recops-system"
TRAINER_IMAGE = "recops-trainer:test"
RESYNC_SECONDS = 1.0  # how often the tests' operators resync (running_operator's default)


def _rbac_docs(*names: str) -> list[dict]:
    return [doc for name in names for doc in yaml.safe_load_all((RBAC / name).read_text()) if doc]


def _as_service_account(docs: list[dict], service_account: str) -> list[dict]:
    """The manifests with the ServiceAccount (and the cluster-scoped names) renamed."""
    out = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            doc["metadata"]["name"] = service_account
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            doc["roleRef"]["name"] = service_account
            doc["subjects"][0]["name"] = service_account
        out.append(doc)
    return out


def install_rbac(cluster: Cluster, service_account: str = "recops-operator", namespaces: Sequence[str] = ()) -> None:
    """config/rbac for `service_account`: the cluster variant, or the namespaced one in each namespace."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.apply(_as_service_account(_rbac_docs("service_account.yaml"), service_account))
    # The Lease of --leader-elect, in the operator's namespace (unused by a single replica).
    cluster.apply(_as_service_account(_rbac_docs("leader_election.yaml"), service_account))
    if not namespaces:
        cluster.apply(_as_service_account(
            _rbac_docs("cluster/cluster_role.yaml", "cluster/cluster_role_binding.yaml"), service_account))
        return
    for namespace in namespaces:
        cluster.apply(_as_service_account(
            _rbac_docs("namespaced/role.yaml", "namespaced/role_binding.yaml"), service_account), namespace)


@dataclass
class RunningOperator:
    process: subprocess.Popen
    log: Path
    metrics_url: str
    liveness_url: str

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def metrics(self) -> dict[str, float]:
        """The /metrics samples as {'name{labels}': value}."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples


def _healthy(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(url, timeout=2).status == 200)
    except OSError:
        return False


@contextmanager
def running_operator(cluster: Cluster, workdir: Path, *, service_account: str = "recops-operator",
                     namespaces: Sequence[str] = (), resync_seconds: float = RESYNC_SECONDS,
                     extra_args: Sequence[str] = (), operator_namespace: str = OPERATOR_NAMESPACE,
                     extra_env: Mapping[str, str] | None = None) -> Iterator[RunningOperator]:
    """`extra_env`: settings as environment variables (e.g. those of the chart's Deployment); the
    flags set here (kubeconfig, namespaces, ports, trainer image) win over them."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = cluster.sa_kubeconfig(operator_namespace, service_account, workdir / f"{service_account}.kubeconfig")
    metrics_port, liveness_port = free_port(), free_port()
    liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"
    log = workdir / "operator.log"
    env = {k: v for k, v in cluster.env.items() if k != "KUBECONFIG"}  # only the ServiceAccount's token
    env.update(extra_env or {})
    argv = [
        sys.executable, "-m", "recops", "operator",
        "--kubeconfig", str(kubeconfig),
        "--namespaces", ",".join(namespaces),
        "--resync-seconds", str(resync_seconds),
        "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
        "--liveness", liveness_url,
        "--trainer-image", TRAINER_IMAGE,
        *extra_args,
    ]
    with log.open("w") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    running = RunningOperator(process, log, f"http://127.0.0.1:{metrics_port}/metrics", liveness_url)
    try:
        wait_until(lambda: process.poll() is not None or _healthy(liveness_url), 60, "the operator's liveness endpoint")
        if process.poll() is not None:
            raise AssertionError(f"recops operator exited with {process.returncode}:\n{running.log_tail()}")
        yield running
    finally:
        stop_process(process, timeout=20, kill_timeout=10)
        print(f"--- recops operator log ({log}) ---\n{running.log_tail()}")


def settle(seconds: float) -> None:
    """Let time pass on purpose (e.g. several resync periods) before checking nothing happened."""
    time.sleep(seconds)


__all__ = ["OPERATOR_NAMESPACE", "RESYNC_SECONDS", "TRAINER_IMAGE", "RunningOperator", "install_rbac", "running_operator"]
