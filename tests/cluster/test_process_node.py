"""The local process node (hack/process_node, issue 9) runs pods as real processes.

Pods are bound to `recops-local` with a nodeSelector and the toleration of its taint,
created through the real apiserver and scheduled by the real scheduler.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import ON_PROCESS_NODE, REPO, Cluster, wait_until
from tests.support.prometheus import running_prometheus

pytestmark = pytest.mark.cluster



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


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False  # not listening yet


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


@pytest.mark.skipif(REPO.parent == Path("/"), reason="a checkout at the root has no parent to mount over")
def test_a_volume_over_the_checkouts_parent_leaves_the_checkout_visible(cluster: Cluster, namespace: str) -> None:
    # As the builders' emptyDir at /tmp does to a checkout under /tmp: `recops` (in its .venv) still runs.
    script = f'(recops version && ls -A {REPO.parent}) > /dev/termination-log 2>&1'
    cluster.apply(local_pod("over-parent", ["sh", "-c", script], volumes=[{"name": "cover", "emptyDir": {}}],
                            container={"volumeMounts": [{"name": "cover", "mountPath": str(REPO.parent)}]}), namespace)
    p = cluster.wait_pod_phase(namespace, "over-parent", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded", terminated(p).message
    version, *listed = terminated(p).message.split()
    assert version.count(".") == 2
    assert listed == [REPO.name]  # the volume hides the parent's other entries: it is mounted over it


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
    wait_until(lambda: http_ok(f"http://{target}/"), 30, f"the pod's server on {target}")
    cluster.core().delete_namespaced_pod("metrics", namespace, grace_period_seconds=1)
    wait_until(lambda: entry() is None, 30, "target removed after deletion")



def test_pvc_is_bound_and_shared_per_claim(cluster: Cluster, namespace: str) -> None:
    """A claim of the default StorageClass binds (kwok provisions it); on the process node
    it is one directory per claim: what one pod writes, the next pod reads."""
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
                  namespace)
    wait_until(lambda: cluster.core().read_namespaced_persistent_volume_claim("models", namespace)
               .status.phase == "Bound", 60, "claim Bound")
    volume = [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    mount = {"volumeMounts": [{"name": "models", "mountPath": "/mnt/pvc/models"}]}
    cluster.apply(local_pod("writer", ["sh", "-c", "echo weights > /mnt/pvc/models/model.bin"],
                            volumes=volume, container=mount), namespace)
    assert cluster.wait_pod_phase(namespace, "writer", {"Succeeded", "Failed"}).status.phase == "Succeeded"
    cluster.apply(local_pod("reader", ["sh", "-c", "cat /mnt/pvc/models/model.bin > /dev/termination-log"],
                            volumes=volume, container=mount), namespace)
    p = cluster.wait_pod_phase(namespace, "reader", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded"
    assert terminated(p).message == "weights\n"


def test_kubectl_logs_reads_the_container_log(cluster: Cluster, namespace: str) -> None:
    cluster.apply(local_pod("talker", ["sh", "-c", "echo line one; echo line two >&2"]), namespace)
    assert cluster.wait_pod_phase(namespace, "talker", {"Succeeded", "Failed"}).status.phase == "Succeeded"
    out = cluster.kubectl("logs", "-n", namespace, "talker").stdout
    assert out.splitlines() == ["line one", "line two"]
    assert cluster.kubectl("logs", "-n", namespace, "talker", "--tail=1").stdout == "line two\n"


METRICS_SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'demo_requests_total 7\\n'
        self.send_response(200); self.send_header('Content-Type', 'text/plain'); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer((os.environ['RECOPS_SERVE_HOST'], 9200), H).serve_forever()
"""


def test_prometheus_scrapes_pods_through_file_sd(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """A real Prometheus reading the process node's file_sd file scrapes the pod on its pod
    IP, with the pod's labels as target labels."""
    sd_file = cluster.dir / "process-node" / "prometheus-sd.json"
    cluster.apply(local_pod("exporter", ["python3", "-c", METRICS_SERVER], restart="Always", metadata={
        "labels": {"track": "canary"},
        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9200"}}), namespace)
    cluster.wait_pod_phase(namespace, "exporter", {"Running"})
    with running_prometheus(tmp_path / "prom", file_sd=[sd_file]) as prom:
        query = f'demo_requests_total{{namespace="{namespace}", pod="exporter", track="canary"}}'
        series = wait_until(lambda: prom.query(query), 60, f"{query} scraped")
        assert series[0]["value"][1] == "7"


def test_secret_and_downward_api_volumes_and_working_dir(cluster: Cluster, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"},
                   "stringData": {"value": "t0k3n"}}, namespace)
    script = 'printf "%s|%s|%s" "$(cat /var/secret/value)" "$(cat /etc/podinfo/labels)" "$(pwd)" > /dev/termination-log'
    cluster.apply(local_pod("info", ["sh", "-c", script], metadata={"labels": {"app": "demo"}}, volumes=[
        {"name": "secret", "secret": {"secretName": "token"}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "work", "emptyDir": {}}], container={
        "workingDir": "/srv/recops-work",
        "volumeMounts": [{"name": "secret", "mountPath": "/var/secret", "readOnly": True},
                         {"name": "podinfo", "mountPath": "/etc/podinfo"},
                         {"name": "work", "mountPath": "/srv/recops-work"}]}), namespace)
    p = cluster.wait_pod_phase(namespace, "info", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded", terminated(p)
    assert terminated(p).message == 't0k3n|app="demo"|/srv/recops-work'


def test_on_failure_restarts_until_success(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    _, ctl_vol = hostpath_dir(tmp_path)
    # Fails on the first run, succeeds on the second.
    script = "if [ -f /ctl/ran ]; then exit 0; fi; touch /ctl/ran; exit 4"
    cluster.apply(local_pod("flaky", ["sh", "-c", script], restart="OnFailure", volumes=[ctl_vol],
                            container={"volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}]}), namespace)
    p = cluster.wait_pod_phase(namespace, "flaky", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded"
    status = p.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 4


def test_liveness_probe_failure_restarts_container(cluster: Cluster, namespace: str) -> None:
    cluster.apply(local_pod("unhealthy", ["sleep", "3600"], restart="Always", terminationGracePeriodSeconds=1,
                            container={"livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                                         "failureThreshold": 2}}), namespace)
    wait_until(lambda: (cluster.pod(namespace, "unhealthy").status.container_statuses or [None])[0]
               and cluster.pod(namespace, "unhealthy").status.container_statuses[0].restart_count >= 1,
               60, "a restart after failed liveness probes")


def test_recops_serve_pod_answers_on_its_pod_ip(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """The real server in a real pod: Ready through its readiness probe, answering on its
    pod IP, listed for Prometheus with its metrics path."""
    if shutil.which("recops") is None and not (REPO / ".venv" / "bin" / "recops").exists():
        pytest.skip("the recops executable is not installed (make venv)")
    models = pytest.importorskip("tests.support.models")
    model = models.tiny_served_model(tmp_path / "model", "click-through", version="tiny-0000abcd")
    model.chmod(0o755)
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "feedback-key"},
                   "stringData": {"key": "0123456789abcdef0123456789abcdef"}}, namespace)
    cluster.apply(local_pod("ranker", ["recops", "serve", "--model", "/models/ranker", "--port", "8080"],
                            restart="Always", metadata={
                                "labels": {"track": "stable"},
                                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                                                "prometheus.io/path": "/metrics"}},
                            volumes=[{"name": "model", "hostPath": {"path": str(model), "type": "Directory"}}],
                            container={
                                "env": [{"name": "RECOPS_NAMESPACE",
                                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                        {"name": "RECOPS_DEPLOYMENT", "value": "ranker"},
                                        {"name": "RECOPS_FEEDBACK_KEY", "valueFrom": {
                                            "secretKeyRef": {"name": "feedback-key", "key": "key"}}}],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "volumeMounts": [{"name": "model", "mountPath": "/models/ranker", "readOnly": True}],
                                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                                                   "periodSeconds": 1}}), namespace)

    def ready() -> client.V1Pod | None:
        pod = cluster.pod(namespace, "ranker")
        return pod if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []) else None
    pod = wait_until(ready, 240, "recops serve Ready")
    target = f"{pod.status.pod_ip}:8080"
    assert pod.status.pod_ip != "127.0.0.1"
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'recops_model_info{' in metrics and 'model_version="tiny-0000abcd"' in metrics
    groups = json.loads((cluster.dir / "process-node" / "prometheus-sd.json").read_text())
    group = next(g for g in groups if g["targets"] == [target])
    assert group["labels"]["__metrics_path__"] == "/metrics" and group["labels"]["track"] == "stable"


def test_startup_probe_holds_back_readiness(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    ctl, ctl_vol = hostpath_dir(tmp_path)
    cluster.apply(local_pod("slowstart", ["sleep", "3600"], restart="Always", volumes=[ctl_vol], container={
        "volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}],
        "startupProbe": {"exec": {"command": ["test", "-f", "/ctl/started"]}, "periodSeconds": 1,
                         "failureThreshold": 600},
        # Would kill the container at once if it ran before the startup probe succeeded.
        "livenessProbe": {"exec": {"command": ["test", "-f", "/ctl/started"]}, "periodSeconds": 1,
                          "failureThreshold": 1}}), namespace)
    cluster.wait_pod_phase(namespace, "slowstart", {"Running"})
    for _ in range(6):
        status = cluster.pod(namespace, "slowstart").status.container_statuses[0]
        assert status.started is False and status.ready is False and status.restart_count == 0
        time.sleep(0.5)
    (ctl / "started").touch()
    wait_until(lambda: cluster.pod(namespace, "slowstart").status.container_statuses[0].ready, 30, "Ready")
    assert cluster.pod(namespace, "slowstart").status.container_statuses[0].restart_count == 0


def test_pre_stop_hook_runs_before_sigterm(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    ctl, ctl_vol = hostpath_dir(tmp_path)
    # On SIGTERM the container records whether the preStop hook had already run.
    script = ("trap 'if [ -f /ctl/prestop ]; then echo after-hook > /ctl/term; else echo no-hook > /ctl/term; fi;"
              " exit 0' TERM; touch /ctl/armed; while true; do sleep 0.1; done")
    cluster.apply(local_pod("hooked", ["sh", "-c", script], restart="Always", volumes=[ctl_vol],
                            terminationGracePeriodSeconds=10, container={
                                "volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}],
                                "lifecycle": {"preStop": {"exec": {"command": ["touch", "/ctl/prestop"]}}}}),
                  namespace)
    wait_until(lambda: (ctl / "armed").exists(), 30, "the SIGTERM trap is set")
    cluster.core().delete_namespaced_pod("hooked", namespace)
    wait_until(lambda: (ctl / "term").exists() and (ctl / "term").read_text().strip(), 30, "SIGTERM handled")
    assert (ctl / "term").read_text().strip() == "after-hook"
