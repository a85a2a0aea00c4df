"""The local control plane (hack/cluster) behaves like a real cluster (issue 3).

Everything here talks to the real kube-apiserver, controllers, scheduler and kwok;
nothing is mocked. Timeouts are generous: they bound a hang, they time nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import HACK, Cluster, wait_until

pytestmark = pytest.mark.cluster


def job(name: str, labels: dict | None = None, annotations: dict | None = None, backoff_limit: int = 0,
        completions: int = 1) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit, "completions": completions, "parallelism": completions,
            "template": {
                "metadata": {"labels": labels or {}, "annotations": annotations or {}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]},
            },
        },
    }


def pod(name: str, **spec_extra) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}],
                     **spec_extra}}


def go_mod_version(module: str) -> str:
    for line in (HACK / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == module and parts[1].startswith("v"):
            return parts[1]
    raise AssertionError(f"{module} not in hack/go.mod")


def test_version_is_stamped(cluster: Cluster) -> None:
    info = client.VersionApi(cluster.api_client()).get_code()
    assert info.git_version == go_mod_version("k8s.io/kubernetes")
    assert info.major == "1" and info.minor == go_mod_version("k8s.io/kubernetes").split(".")[1]
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == info.git_version


def test_nodes(cluster: Cluster) -> None:
    nodes = {n.metadata.name: n for n in cluster.core().list_node().items}
    assert {"kwok-cpu-0", "kwok-gpu-0"} <= set(nodes)
    gpu = nodes["kwok-gpu-0"]
    assert gpu.status.allocatable["nvidia.com/gpu"] == "4"
    assert [(t.key, t.value, t.effect) for t in gpu.spec.taints] == [("nvidia.com/gpu", "present", "NoSchedule")]
    assert "nvidia.com/gpu" not in nodes["kwok-cpu-0"].status.allocatable


def test_job_completes_on_kwok_node(cluster: Cluster, namespace: str) -> None:
    cluster.apply(job("ok", completions=2), namespace)
    obj = cluster.wait_condition("job", namespace, "ok", "Complete")
    assert obj["status"]["succeeded"] == 2
    pods = cluster.core().list_namespaced_pod(namespace, label_selector="job-name=ok").items
    assert len(pods) == 2 and all(p.spec.node_name == "kwok-cpu-0" for p in pods)
    assert all(p.status.container_statuses[0].state.terminated.exit_code == 0 for p in pods)


def test_deployment_becomes_available(cluster: Cluster, namespace: str) -> None:
    cluster.apply({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    }, namespace)
    obj = cluster.wait_condition("deployment", namespace, "web", "Available")
    wait_until(lambda: cluster.apps().read_namespaced_deployment("web", namespace).status.ready_replicas == 2,
               60, "2 ready replicas")
    assert obj["spec"]["replicas"] == 2


def test_deleting_owner_garbage_collects_owned_configmap(cluster: Cluster, namespace: str) -> None:
    core = cluster.core()
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="owned", owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)])))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def owned_gone() -> bool:
        try:
            core.read_namespaced_config_map("owned", namespace)
            return False
        except client.ApiException as e:
            return e.status == 404
    wait_until(owned_gone, 60, "garbage collection of the owned ConfigMap")


def test_test_fail_label_fails_pod_with_exit_code(cluster: Cluster, namespace: str) -> None:
    manifest = pod("fails")
    manifest["metadata"].update(labels={"recops.dev/test-fail": "true"},
                                annotations={"recops.dev/test-exit-code": "7"})
    cluster.apply(manifest, namespace)
    p = cluster.wait_pod_phase(namespace, "fails", {"Failed", "Succeeded"})
    assert p.status.phase == "Failed"
    assert p.status.container_statuses[0].state.terminated.exit_code == 7


def test_test_fail_label_fails_job(cluster: Cluster, namespace: str) -> None:
    cluster.apply(job("bad", labels={"recops.dev/test-fail": "true"},
                      annotations={"recops.dev/test-exit-code": "3"}), namespace)
    obj = cluster.wait_condition("job", namespace, "bad", "Failed")
    assert obj["status"]["failed"] == 1
    pods = cluster.core().list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 3


def test_termination_message_annotation_reaches_pod_status(cluster: Cluster, namespace: str) -> None:
    message = json.dumps({"schemaVersion": 1, "gatePassed": True, "metrics": {"auc": 0.71}})
    cluster.apply(job("msg", annotations={"recops.dev/test-termination-message": message}), namespace)
    cluster.wait_condition("job", namespace, "msg", "Complete")
    p = cluster.core().list_namespaced_pod(namespace, label_selector="job-name=msg").items[0]
    assert p.status.container_statuses[0].state.terminated.message == message

    failing = pod("failmsg")
    failing["metadata"].update(labels={"recops.dev/test-fail": "true"},
                               annotations={"recops.dev/test-termination-message": "boom"})
    cluster.apply(failing, namespace)
    p = cluster.wait_pod_phase(namespace, "failmsg", {"Failed"})
    assert p.status.container_statuses[0].state.terminated.message == "boom"
    assert p.status.container_statuses[0].state.terminated.exit_code == 1


def test_gpu_pod_needs_toleration(cluster: Cluster, namespace: str) -> None:
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    intolerant = pod("no-toleration")
    intolerant["spec"]["containers"][0].update(gpu)
    tolerant = pod("toleration", tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    tolerant["spec"]["containers"][0].update(gpu)
    cluster.apply([intolerant, tolerant], namespace)

    p = cluster.wait_pod_phase(namespace, "toleration", {"Running"})
    assert p.spec.node_name == "kwok-gpu-0"

    def unschedulable() -> client.V1PodCondition | None:
        conds = cluster.pod(namespace, "no-toleration").status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled" and c.reason == "Unschedulable"), None)
    cond = wait_until(unschedulable, 60, "PodScheduled=False/Unschedulable")
    assert cond.status == "False"
    assert "untolerated taint" in cond.message and "nvidia.com/gpu" in cond.message
    assert cluster.pod(namespace, "no-toleration").spec.node_name is None


def test_pod_security_restricted_refuses_privileged_pod(cluster: Cluster) -> None:
    ns = cluster.create_namespace("psa", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        privileged = pod("priv")
        privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        res = cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(privileged), check=False)
        assert res.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in res.stderr and "privileged" in res.stderr

        compliant = pod("fine")
        compliant["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        compliant["spec"]["containers"][0]["securityContext"] = {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(compliant))
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_service_account_kubeconfig_has_only_its_rbac(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    kc = cluster.sa_kubeconfig(namespace, "reader", tmp_path / "reader.kubeconfig")
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kc).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    denied = cluster.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr

    cluster.apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "cm-reader"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "cm-reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]},
    ], namespace)
    wait_until(lambda: cluster.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc, check=False)
               .returncode == 0, 30, "RBAC to take effect")
    # Still nothing outside the Role.
    assert cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=kc, check=False).returncode != 0
    # The Python client works with it too.
    api = client.CoreV1Api(cluster.api_client(kc))
    assert api.list_namespaced_config_map(namespace).items is not None


def test_second_up_changes_nothing(cluster: Cluster) -> None:
    pids = {p.name: p.read_text() for p in (cluster.dir / "run").glob("*.pid")}
    env = {**os.environ, "RECOPS_CLUSTER_DIR": str(cluster.dir)}
    res = subprocess.run([str(HACK / "cluster"), "up", "--process-node"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"export KUBECONFIG={cluster.kubeconfig}" in res.stdout
    assert "started" not in res.stderr
    assert {p.name: p.read_text() for p in (cluster.dir / "run").glob("*.pid")} == pids
    status = subprocess.run([str(HACK / "cluster"), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line or environment mentions `text` (container processes
    of the process node carry their cluster dir in RECOPS_PROCESS_NODE_DIR)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (text in args or text in environ) and str(os.getpid()) != proc.name:
            found.append(f"{proc.name}: {args.replace(chr(0), ' ')}")
    return found


def test_separate_cluster_up_down_leaves_no_process() -> None:
    """A second cluster in its own dir starts beside the session's one (own ports, own pod
    IPs). With --process-node-default a plain pod runs as a real process on recops-local,
    and `down` leaves no process of that cluster behind, container processes included."""
    dir = Path(tempfile.mkdtemp(prefix="recops-updown-"))
    env = {**os.environ, "RECOPS_CLUSTER_DIR": str(dir)}
    try:
        up = subprocess.run([str(HACK / "cluster"), "up", "--process-node-default"], env=env,
                            capture_output=True, text=True)
        assert up.returncode == 0, up.stderr
        assert re.search(r"^export KUBECONFIG=.*admin\.kubeconfig$", up.stdout, re.M)
        assert len(processes_mentioning(str(dir))) >= 6
        other = Cluster(dir=dir, process_node=True)
        # No nodeSelector, no toleration: the untainted process node is the only choice.
        other.apply(pod("plain", restartPolicy="Always") | {"metadata": {"name": "plain", "namespace": "default"}})
        p = other.wait_pod_phase("default", "plain", {"Running"})
        assert p.spec.node_name == "recops-local"
        # Running is reported once the process is forked; it execs its command a moment later.
        deadline = time.monotonic() + 15
        while not any("sleep 3600" in proc for proc in processes_mentioning(str(dir))):
            assert time.monotonic() < deadline, processes_mentioning(str(dir))
            time.sleep(0.2)
        assert other.core().read_node("kwok-cpu-0").spec.taints[0].key == "recops.dev/kwok"
    finally:
        down = subprocess.run([str(HACK / "cluster"), "down", "--purge"], env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(str(dir)) == []  # the pod's `sleep 3600` too
    assert not dir.exists()
