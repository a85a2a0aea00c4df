"""The local process node (hack/process_node.py, issue 9) runs pods as real processes.

Pods are bound to `recops-local` with a nodeSelector and the toleration of its taint,
created through the real apiserver and scheduled by the real scheduler.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.cluster

ON_PROCESS_NODE = {
    "nodeSelector": {"kubernetes.io/hostname": "recops-local"},
    "tolerations": [{"key": "recops.dev/process-node", "operator": "Exists", "effect": "NoSchedule"}],
}


def local_pod(name: str, command: list[str], restart: str = "Never", **spec) -> dict:
    container = {"name": "main", "image": "recops:dev", "command": command}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **spec.pop("metadata", {})},
            "spec": {"restartPolicy": restart, "containers": [container], **ON_PROCESS_NODE, **spec}}


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    return pod.status.container_statuses[0].state.terminated


def hostpath_dir(tmp_path: Path, name: str = "ctl") -> tuple[Path, dict]:
    d = tmp_path / name
    d.mkdir()
    d.chmod(0o777)
    return d, {"name": name, "hostPath": {"path": str(d), "type": "Directory"}}


def test_node_registered(cluster: Cluster) -> None:
    node = cluster.core().read_node("recops-local")
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert int(node.status.allocatable["cpu"]) == os.cpu_count()
    assert [(t.key, t.effect) for t in node.spec.taints] == [("recops.dev/process-node", "NoSchedule")]
    assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})  # kwok leaves it alone


def test_configmap_volume_secret_env_and_termination_message(cluster: Cluster, namespace: str,
                                                            tmp_path: Path) -> None:
    out, out_vol = hostpath_dir(tmp_path, "out")
    cluster.apply([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "job"},
         "data": {"job.yaml": "task: click-through\n"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
         "data": {"key": base64.b64encode(b"s3cr3t").decode()}},
    ], namespace)
    script = ('cp /etc/recops/job.yaml /out/copy.yaml && '
              'printf "%s|%s|%s|%s" "$(cat /etc/recops/job.yaml)" "$KEY" "$POD" "$GREETING" > /dev/termination-log')
    pod = local_pod("reads", ["sh", "-c", script], volumes=[
        {"name": "job", "configMap": {"name": "job"}}, out_vol],
        container={"env": [
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hi-$(POD)"}],
            "volumeMounts": [{"name": "job", "mountPath": "/etc/recops", "readOnly": True},
                             {"name": "out", "mountPath": "/out"}]})
    cluster.apply(pod, namespace)
    p = cluster.wait_pod_phase(namespace, "reads", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded", p.status
    assert p.spec.node_name == "recops-local"
    assert terminated(p).exit_code == 0
    assert terminated(p).message == "task: click-through|s3cr3t|reads|hi-reads"
    assert (out / "copy.yaml").read_text() == "task: click-through\n"


def test_exit_code_3_fails_pod(cluster: Cluster, namespace: str) -> None:
    cluster.apply(local_pod("three", ["sh", "-c", "echo oops >&2; exit 3"],
                            container={"terminationMessagePolicy": "FallbackToLogsOnError"}), namespace)
    p = cluster.wait_pod_phase(namespace, "three", {"Succeeded", "Failed"})
    assert p.status.phase == "Failed"
    assert terminated(p).exit_code == 3
    assert terminated(p).reason == "Error"
    assert terminated(p).message.strip() == "oops"  # logs as fallback message


def test_readiness_probe_gates_ready(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    ctl, ctl_vol = hostpath_dir(tmp_path)
    # The HTTP server starts only once the test creates /ctl/go.
    script = ("while [ ! -f /ctl/go ]; do sleep 0.1; done; "
              "exec python3 -m http.server 8080 --bind \"$RECOPS_SERVE_HOST\"")
    cluster.apply(local_pod("probed", ["sh", "-c", script], restart="Always", volumes=[ctl_vol], container={
        "volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}}),
        namespace)
    p = cluster.wait_pod_phase(namespace, "probed", {"Running"})
    ip = p.status.pod_ip
    assert ip.startswith("127.") and ip != "127.0.0.1"

    def ready() -> bool:
        conds = cluster.pod(namespace, "probed").status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conds)
    for _ in range(8):  # several probe periods: never Ready while nothing listens
        assert not ready()
        time.sleep(0.5)
    (ctl / "go").touch()
    wait_until(ready, 30, "Ready after the server started")
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as r:  # reachable on its pod IP
        assert r.status == 200


def test_deleting_pod_stops_process_within_grace(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    ctl, ctl_vol = hostpath_dir(tmp_path)
    # Ignores SIGTERM, so only the SIGKILL after the grace period can stop it.
    code = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open('/ctl/pid', 'w').write(str(os.getpid())); time.sleep(3600)")
    cluster.apply(local_pod("stubborn", ["python3", "-c", code], restart="Always", volumes=[ctl_vol],
                            terminationGracePeriodSeconds=2,
                            container={"volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}]}), namespace)
    cluster.wait_pod_phase(namespace, "stubborn", {"Running"})
    pid = int(wait_until(lambda: (ctl / "pid").exists() and (ctl / "pid").read_text(), 30, "pid file"))
    assert Path(f"/proc/{pid}").exists()
    cluster.core().delete_namespaced_pod("stubborn", namespace)

    def gone() -> bool:
        try:
            cluster.pod(namespace, "stubborn")
            return False
        except client.ApiException as e:
            return e.status == 404
    wait_until(gone, 30, "pod object removed")
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_two_pods_same_path_see_own_volumes(cluster: Cluster, namespace: str) -> None:
    for name in ("alpha", "beta"):
        cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"who": name}}, namespace)
    # Both run at once: write to the same emptyDir path, wait, read back both volumes.
    script = ('echo "$POD" > /data/mine; sleep 2; '
              'printf "%s/%s" "$(cat /etc/recops/who)" "$(cat /data/mine)" > /dev/termination-log')
    for name in ("alpha", "beta"):
        cluster.apply(local_pod(name, ["sh", "-c", script], volumes=[
            {"name": "cfg", "configMap": {"name": name}}, {"name": "data", "emptyDir": {}}], container={
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/recops"}, {"name": "data", "mountPath": "/data"}]}),
            namespace)
    for name in ("alpha", "beta"):
        p = cluster.wait_pod_phase(namespace, name, {"Succeeded", "Failed"})
        assert p.status.phase == "Succeeded"
        assert terminated(p).message == f"{name}/{name}"


def test_job_with_two_completions_completes(cluster: Cluster, namespace: str) -> None:
    cluster.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "twice"},
        "spec": {"completions": 2, "parallelism": 1, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", **ON_PROCESS_NODE,
            "containers": [{"name": "main", "image": "recops:dev",
                            "command": ["sh", "-c", "echo run $JOB_COMPLETION_INDEX > /dev/termination-log"]}]}}},
    }, namespace)
    obj = cluster.wait_condition("job", namespace, "twice", "Complete")
    assert obj["status"]["succeeded"] == 2
    pods = cluster.core().list_namespaced_pod(namespace, label_selector="job-name=twice").items
    assert {p.spec.node_name for p in pods} == {"recops-local"}
    assert all(terminated(p).message.startswith("run") for p in pods)


def test_unknown_executable_fails_with_clear_reason(cluster: Cluster, namespace: str) -> None:
    cluster.apply(local_pod("missing", ["no-such-binary-recops", "--help"], restart="Always"), namespace)
    p = cluster.wait_pod_phase(namespace, "missing", {"Failed", "Succeeded"})
    assert p.status.phase == "Failed"
    assert p.status.reason == "ExecutableNotFound"
    assert "no-such-binary-recops" in p.status.message and "not found" in p.status.message
    assert terminated(p).reason == "ExecutableNotFound"


def test_service_account_token_reaches_apiserver(cluster: Cluster, namespace: str) -> None:
    """The projected token authenticates the pod as its ServiceAccount (in-cluster config)."""
    code = (
        "import json, os, ssl, urllib.request, urllib.error\n"
        "d = '/var/run/secrets/kubernetes.io/serviceaccount/'\n"
        "ctx = ssl.create_default_context(cafile=d + 'ca.crt')\n"
        "url = 'https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews' % ("
        "os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])\n"
        "req = urllib.request.Request(url, method='POST', data=json.dumps({'apiVersion': "
        "'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'}).encode(), headers={"
        "'Authorization': 'Bearer ' + open(d + 'token').read(), 'Content-Type': 'application/json'})\n"
        "user = json.load(urllib.request.urlopen(req, context=ctx))['status']['userInfo']['username']\n"
        "open('/dev/termination-log', 'w').write(user + ' ' + open(d + 'namespace').read())\n"
    )
    cluster.apply(local_pod("whoami", ["python3", "-c", code]), namespace)
    p = cluster.wait_pod_phase(namespace, "whoami", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded", terminated(p)
    assert terminated(p).message == f"system:serviceaccount:{namespace}:default {namespace}"


def test_scrape_annotations_in_file_sd(cluster: Cluster, namespace: str) -> None:
    sd_file = cluster.dir / "process-node" / "prometheus-sd.json"
    cluster.apply(local_pod("metrics", ["python3", "-m", "http.server", "9100", "--bind", "$(RECOPS_SERVE_HOST)"],
                            restart="Always", metadata={
                                "labels": {"app.kubernetes.io/name": "demo", "track": "stable"},
                                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                                                "prometheus.io/path": "/"}}), namespace)
    p = cluster.wait_pod_phase(namespace, "metrics", {"Running"})
    target = f"{p.status.pod_ip}:9100"

    def entry() -> dict | None:
        groups = json.loads(sd_file.read_text())
        return next((g for g in groups if g["targets"] == [target]), None)
    group = wait_until(entry, 30, f"{target} in {sd_file}")
    assert group["labels"]["namespace"] == namespace and group["labels"]["pod"] == "metrics"
    assert group["labels"]["app_kubernetes_io_name"] == "demo" and group["labels"]["track"] == "stable"
    assert group["labels"]["__metrics_path__"] == "/"
    with urllib.request.urlopen(f"http://{target}/", timeout=5) as r:
        assert r.status == 200
    cluster.core().delete_namespaced_pod("metrics", namespace, grace_period_seconds=1)
    wait_until(lambda: entry() is None, 30, "target removed after deletion")

