"""The FineTuneJob controller on the real control plane: `recops operator` runs as a
subprocess with the cluster-wide RBAC of config/rbac (a ServiceAccount token); kwok nodes
run the trainer pods, and the kwok test hooks (set through podTemplate) give them their
exit code and termination message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from recops.api import contracts
from tests.support.cluster import Cluster, wait_until
from tests.support.operator import RESYNC_SECONDS, RunningOperator, settle

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

# What a FineTuneJob owns (a Job), and the kinds it once owned too and must no longer cost.
CHILD_KINDS = ("configmap", "serviceaccount", "role", "rolebinding", "job")


def report(name: str, namespace: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schemaVersion": 1, "modelUri": f"/models/{namespace}/{name}-test", "modelVersion": f"{name}-test",
        "metrics": {"auc": 0.83, "logloss": 0.41}, "baseline": {"popularity": {"auc": 0.61}},
        "currentModel": None, "gatePassed": None, "error": None,
    }
    base.update(fields)
    return base


def finetunejob(name: str, *, message: dict[str, Any] | None = None, pod_labels: dict[str, str] | None = None,
                pod_annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                **spec: Any) -> dict[str, Any]:
    annotations = dict(pod_annotations or {})
    if message is not None:
        annotations[contracts.TEST_TERMINATION_MESSAGE_ANNOTATION] = json.dumps(message)
    body: dict[str, Any] = {
        "task": "click-through",
        "dataset": {"uri": "/data/events.jsonl"},
        "output": {"uri": "/models"},
        "backoffLimit": 0,
        "podTemplate": {"labels": pod_labels or {}, "annotations": annotations},
    }
    body.update(spec)
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "labels": labels or {}}, "spec": body}


def get(cluster: Cluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if res.returncode != 0:
        assert "NotFound" in res.stderr, res.stderr
        return None
    return json.loads(res.stdout)


def ftj(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get(cluster, "finetunejob", namespace, name)
    assert obj is not None
    return obj


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def kubectl_wait(cluster: Cluster, namespace: str, name: str, condition: str, timeout: str = "60s") -> subprocess.CompletedProcess:
    return cluster.kubectl("wait", f"--for=condition={condition}", f"--timeout={timeout}", "-n", namespace,
                           f"finetunejob/{name}", check=False)


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = ftj(cluster, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") == phase else None
    return wait_until(check, timeout, f"FineTuneJob {namespace}/{name} phase {phase}")


def pods_of(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    res = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"recops.dev/finetunejob={name}", "-o", "json")
    return json.loads(res.stdout)["items"]


def children(cluster: Cluster, namespace: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """The objects labelled as this FineTuneJob's, by kind."""
    out = {}
    for kind in CHILD_KINDS:
        res = cluster.kubectl("get", kind, "-n", namespace, "-l", f"recops.dev/finetunejob={name}", "-o", "json")
        out[kind] = json.loads(res.stdout)["items"]
    return out


def identities(found: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[str, str, str]]]:
    return {k: sorted((o["metadata"]["name"], o["metadata"]["uid"], o["metadata"]["resourceVersion"]) for o in v)
            for k, v in found.items()}


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    res = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.name={name},involvedObject.kind=FineTuneJob", "-o", "json")
    return json.loads(res.stdout)["items"]


def counter(op: RunningOperator, name: str, **labels: str) -> float:
    total = 0.0
    for key, value in op.metrics().items():
        metric, _, rest = key.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


# --- the happy path ----------------------------------------------------------------------------------
def test_create_to_succeeded_with_the_termination_message(cluster: Cluster, namespace: str,
                                                          operator: RunningOperator, tmp_path: Path) -> None:
    name = "ctr"
    message = report(name, namespace, gatePassed=True)
    # The trainer pods meet the restricted Pod Security Standard (else the Job could create no pod).
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.apply(finetunejob(name, message=message, evaluation={"metrics": ["auc", "logloss"],
                                                                 "gate": {"metric": "auc", "minimum": 0.7}}),
                  namespace)

    # The ConfigMap, the Job and a pod on a kwok CPU node.
    job = wait_until(lambda: get(cluster, "job", namespace, name), 30, "the trainer Job")
    pod = wait_until(lambda: next((p for p in pods_of(cluster, namespace, name) if p["spec"].get("nodeName")), None),
                     30, "a scheduled trainer pod")
    assert pod["spec"]["nodeName"] == "kwok-cpu-0"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "recops-trainer:test"

    done = kubectl_wait(cluster, namespace, name, "Complete")
    assert done.returncode == 0, done.stderr + operator.log_tail()
    assert kubectl_wait(cluster, namespace, name, "Failed=False", "5s").returncode == 0

    obj = ftj(cluster, namespace, name)
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    assert status["model"] == {"uri": message["modelUri"], "version": message["modelVersion"]}
    assert status["metrics"] == message["metrics"] and status["baseline"] == message["baseline"]
    assert status["gatePassed"] is True and status["keyMetric"] == "auc=0.83"
    header, row = cluster.kubectl("get", "finetunejob", name, "-n", namespace).stdout.splitlines()[:2]
    assert [row[header.index(column):].split()[0] for column in ("METRIC", "GATE")] == ["auc=0.83", "true"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["attempts"] == 1 and status["startTime"] and status["completionTime"]
    conds = conditions(obj)
    assert {t: (c["status"], c["reason"]) for t, c in conds.items()} == {
        "Complete": ("True", "Succeeded"), "Failed": ("False", "Succeeded"), "GatePassed": ("True", "GateMet"),
        "Suspended": ("False", "Succeeded"), "Ready": ("True", "GateMet"),
    }

    # No bookkeeping annotation from Kopf (it patches nothing on a FineTuneJob), no finalizer, nothing in status.
    annotations = obj["metadata"].get("annotations") or {}
    assert not any(key.startswith(("kopf.zalando.org/", "recops.dev/")) for key in annotations), annotations
    assert not obj["metadata"].get("finalizers")
    assert set(status) <= {"phase", "conditions", "observedGeneration", "startTime", "completionTime", "attempts",
                           "model", "metrics", "baseline", "keyMetric", "gatePassed", "message", "progress"}

    # Its one child, the Job, owned by the FineTuneJob and labelled per the Contracts.
    found = children(cluster, namespace, name)
    assert {k: len(v) for k, v in found.items()} == {k: int(k == "job") for k in CHILD_KINDS}
    found = {k: v for k, v in found.items() if v}
    for kind, (child,) in found.items():
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r.get("controller")) for r in refs] == [
            ("FineTuneJob", obj["metadata"]["uid"], True)], kind
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "recops" and labels["app.kubernetes.io/name"] == "recops"
        assert labels["app.kubernetes.io/component"] == "trainer"
    # The job reaches the trainer in its pod (an annotation the downward API mounts as /etc/recops/job.yaml).
    template = found["job"][0]["spec"]["template"]
    job_yaml = yaml.safe_load(template["metadata"]["annotations"][contracts.JOB_CONFIG_ANNOTATION])
    assert job_yaml["metadata"]["uid"] == obj["metadata"]["uid"]
    # No finalizer on the Job: nothing is left stuck if the operator goes.
    assert not (get(cluster, "job", namespace, name) or {})["metadata"].get("finalizers")

    reasons = [e["reason"] for e in events(cluster, namespace, name)]
    assert "JobCreated" in reasons and "Succeeded" in reasons

    assert counter(operator, "recops_operator_finetunejobs", phase="Succeeded") >= 1
    assert counter(operator, "recops_operator_reconciles_total", kind="FineTuneJob") > 0
    assert counter(operator, "recops_operator_reconcile_duration_seconds_count", kind="FineTuneJob") > 0

    table = cluster.kubectl("get", "ftj", name, "-n", namespace).stdout
    assert "Succeeded" in table and "auc=0.83" in table

    # The trainer holds no API credentials (progress travels in its log), and the ServiceAccount it runs as, the
    # namespace's default, may not write any FineTuneJob.
    assert template["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in template["spec"]
    assert pod["spec"]["serviceAccountName"] == "default"
    assert not any("projected" in v for v in pod["spec"].get("volumes") or [])
    default_kubeconfig = cluster.sa_kubeconfig(namespace, "default", tmp_path / "default.kubeconfig")
    progress = json.dumps({"status": {"progress": {"step": 5, "totalSteps": 10, "percent": 50.0}}})
    for target in (["finetunejob", name, "--subresource=status"], ["finetunejob", name]):
        denied = cluster.kubectl("patch", *target, "-n", namespace, "--type=merge", "-p", progress,
                                 kubeconfig=default_kubeconfig, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr


def test_a_named_service_account_runs_the_trainer_and_gains_nothing(
        cluster: Cluster, namespace: str, operator: RunningOperator, tmp_path: Path) -> None:
    name = "identity"
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
        "name": "shop-models", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/m"}}},
        namespace)
    body = finetunejob(name, message=report(name, namespace))
    body["spec"]["podTemplate"]["serviceAccountName"] = "shop-models"
    cluster.apply(body, namespace)
    pod = wait_until(lambda: next(iter(pods_of(cluster, namespace, name)), None), 30, "a trainer pod")
    assert pod["spec"]["serviceAccountName"] == "shop-models"
    done = kubectl_wait(cluster, namespace, name, "Complete")
    assert done.returncode == 0, done.stderr + operator.log_tail()
    found = children(cluster, namespace, name)
    assert {k: len(v) for k, v in found.items()} == {k: int(k == "job") for k in CHILD_KINDS}  # no grant for it
    # The named ServiceAccount may not write this job or any other (real RBAC): recops granted it nothing.
    kubeconfig = cluster.sa_kubeconfig(namespace, "shop-models", tmp_path / "identity.kubeconfig")
    progress = json.dumps({"status": {"progress": {"step": 1, "totalSteps": 4, "percent": 25.0}}})
    for target in (["finetunejob", name, "--subresource=status"], ["finetunejob", "someone-else", "--subresource=status"]):
        denied = cluster.kubectl("patch", *target, "-n", namespace, "--type=merge", "-p", progress,
                                 kubeconfig=kubeconfig, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=true")
    assert get(cluster, "serviceaccount", namespace, "shop-models") is not None  # the user's, left alone


def test_the_operator_reads_progress_from_a_real_pod_log(cluster: Cluster, namespace: str, operator: RunningOperator,
                                                         tmp_path: Path) -> None:
    """The log path end to end: the operator's ServiceAccount (config/rbac) reads a pod's log through the API server
    from the process node's kubelet endpoint, and the newest progress line of its tail is the progress."""
    from recops.builders.common import BuilderSettings
    from recops.controllers import finetunejob_status as st
    from recops.controllers.finetunejob import FineTuneJobController
    from recops.controllers.kube import Kube, load_api_client
    from tests.support.cluster import ON_PROCESS_NODE
    from tests.support.operator import OPERATOR_NAMESPACE

    first = contracts.progress_record(1, 4, 0.25, 25.0, "2026-12-01T08:00:00Z")
    newest = contracts.progress_record(3, 4, 0.75, 75.0, "2026-12-01T08:00:10Z")
    chatter = "".join(f"echo noise {i}; " for i in range(150))  # the progress line is not the last line
    script = f"echo '{first}'; echo '{newest}'; {chatter} sleep 120"
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer-like"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "trainer", "image": "recops:dev", "command": ["sh", "-c", script]}],
        **ON_PROCESS_NODE}}, namespace)
    running = cluster.wait_pod_phase(namespace, "trainer-like", {"Running"})
    assert running.status.phase == "Running"
    kube = Kube(load_api_client(str(cluster.sa_kubeconfig(OPERATOR_NAMESPACE, "recops-operator",
                                                          tmp_path / "operator.kubeconfig"))))
    controller = FineTuneJobController(kube, BuilderSettings())
    pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/trainer-like")
    assert pod is not None
    observed = st.Observed(job={"spec": {}}, pods=[pod])

    def read() -> dict[str, Any] | None:
        return controller.read_progress(observed)

    # 150 lines of chatter after it: a tail of 100 lines misses it, so nothing is read (and nothing fails).
    wait_until(lambda: "noise 149" in cluster.kubectl("logs", "trainer-like", "-n", namespace).stdout, 30, "the log")
    assert read() is None
    cluster.kubectl("delete", "pod", "trainer-like", "-n", namespace, "--wait=false")
    script = f"echo '{first}'; echo noise; echo '{newest}'; echo step 3/4; sleep 120"
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer-like-2"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "trainer", "image": "recops:dev", "command": ["sh", "-c", script]}],
        **ON_PROCESS_NODE}}, namespace)
    cluster.wait_pod_phase(namespace, "trainer-like-2", {"Running"})
    observed.pods = [kube.get(f"/api/v1/namespaces/{namespace}/pods/trainer-like-2") or {}]
    # The operator's own RBAC reads it (a 403 would raise here).
    wait_until(lambda: "step 3/4" in kube.read_log(namespace, "trainer-like-2", "trainer", tail_lines=100,
                                                    limit_bytes=65536), 30, "the log through the API server")
    progress = wait_until(read, 30, "the progress line read from the log")
    assert progress == {"step": 3, "totalSteps": 4, "epoch": 0.75, "percent": 75.0, "updatedAt": "2026-12-01T08:00:10Z"}
    cluster.kubectl("delete", "pod", "trainer-like-2", "-n", namespace, "--wait=false")


def test_gpu_job_runs_on_the_gpu_node(cluster: Cluster, namespace: str, operator: RunningOperator) -> None:
    name = "gpu"
    cluster.apply(finetunejob(name, message=report(name, namespace), resources={"gpusPerWorker": 1}), namespace)
    pod = wait_until(lambda: next((p for p in pods_of(cluster, namespace, name) if p["spec"].get("nodeName")), None),
                     30, "a scheduled trainer pod")
    assert pod["spec"]["nodeName"] == "kwok-gpu-0"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert kubectl_wait(cluster, namespace, name, "Complete").returncode == 0
    assert ftj(cluster, namespace, name)["status"]["phase"] == "Succeeded"


def test_failed_job_reports_the_exit_code(cluster: Cluster, namespace: str, operator: RunningOperator) -> None:
    name = "fails"
    cluster.apply(finetunejob(
        name, message=report(name, namespace, modelUri=None, metrics={}, error="dataset is empty after cleaning"),
        pod_labels={contracts.TEST_FAIL_LABEL: "true"}, pod_annotations={contracts.TEST_EXIT_CODE_ANNOTATION: "3"},
        backoffLimit=1,
    ), namespace)
    failed = kubectl_wait(cluster, namespace, name, "Failed", "90s")
    assert failed.returncode == 0, failed.stderr + operator.log_tail()
    assert kubectl_wait(cluster, namespace, name, "Complete=False", "5s").returncode == 0
    obj = ftj(cluster, namespace, name)
    status = obj["status"]
    assert status["phase"] == "Failed" and status["attempts"] == 2
    assert "exit code 3" in status["message"] and "dataset is empty after cleaning" in status["message"]
    conds = conditions(obj)
    assert (conds["Failed"]["status"], conds["Failed"]["reason"]) == ("True", "BackoffLimitExceeded")
    assert (conds["Ready"]["status"], conds["Complete"]["status"]) == ("False", "False")
    assert "model" not in status
    warnings = [e for e in events(cluster, namespace, name) if e["type"] == "Warning"]
    assert any(e["reason"] == "BackoffLimitExceeded" and "exit code 3" in e["message"] for e in warnings)


def test_gate_not_passed_is_complete_but_not_ready(cluster: Cluster, namespace: str,
                                                   operator: RunningOperator) -> None:
    name = "weak"
    cluster.apply(finetunejob(name, message=report(name, namespace, gatePassed=False),
                              evaluation={"gate": {"metric": "auc", "minimum": 0.9}}), namespace)
    assert kubectl_wait(cluster, namespace, name, "Complete").returncode == 0
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["gatePassed"] is False
    conds = conditions(obj)
    assert (conds["GatePassed"]["status"], conds["GatePassed"]["reason"]) == ("False", "GateNotMet")
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "GateNotMet")


# --- idempotence ------------------------------------------------------------------------------------
def test_idle_resync_and_a_second_reconcile_change_nothing(cluster: Cluster, namespace: str,
                                                           operator: RunningOperator) -> None:
    name = "idle"
    cluster.apply(finetunejob(name, message=report(name, namespace), suspend=True), namespace)
    suspended = wait_phase(cluster, namespace, name, "Suspended")
    assert conditions(suspended)["Suspended"]["status"] == "True"
    wait_until(lambda: get(cluster, "job", namespace, name), 30, "the suspended Job")
    assert pods_of(cluster, namespace, name) == []
    settle(2 * RESYNC_SECONDS)  # let the creation's last events pass

    # Idle resyncs: passes run, but neither the status nor any child is written.
    before = ftj(cluster, namespace, name)
    before_children = identities(children(cluster, namespace, name))
    resyncs = counter(operator, "recops_operator_reconciles_total", trigger="resync")
    settle(4 * RESYNC_SECONDS)
    assert counter(operator, "recops_operator_reconciles_total", trigger="resync") >= resyncs + 2
    after = ftj(cluster, namespace, name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert identities(children(cluster, namespace, name)) == before_children

    # A metadata change (no new generation) asks for no spec pass: nothing applied, nothing written.
    spec_passes = counter(operator, "recops_operator_reconciles_total", trigger="spec")
    cluster.kubectl("annotate", "finetunejob", name, "-n", namespace, "example.com/touched=yes")
    settle(2 * RESYNC_SECONDS)
    assert counter(operator, "recops_operator_reconciles_total", trigger="spec") == spec_passes
    assert identities(children(cluster, namespace, name)) == before_children
    assert ftj(cluster, namespace, name)["status"] == before["status"]

    # Resumed, it runs to the end.
    cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    assert kubectl_wait(cluster, namespace, name, "Complete").returncode == 0
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    assert conditions(obj)["Suspended"]["status"] == "False"
    assert len(children(cluster, namespace, name)["job"]) == 1

    # Finished and idle: no writes either.
    settle(2 * RESYNC_SECONDS)
    rv = ftj(cluster, namespace, name)["metadata"]["resourceVersion"]
    settle(3 * RESYNC_SECONDS)
    assert ftj(cluster, namespace, name)["metadata"]["resourceVersion"] == rv


def test_ttl_deleting_the_job_does_not_retrain(cluster: Cluster, namespace: str, operator: RunningOperator) -> None:
    name = "ttl"
    message = report(name, namespace)
    cluster.apply(finetunejob(name, message=message, ttlSecondsAfterFinished=0), namespace)
    assert kubectl_wait(cluster, namespace, name, "Complete").returncode == 0
    wait_until(lambda: get(cluster, "job", namespace, name) is None, 60, "the TTL controller to delete the Job")
    # Even with a TTL of 0 the outcome was read from the pod before the Job went.
    done = ftj(cluster, namespace, name)["status"]
    assert done["metrics"] == message["metrics"] and done["model"]["uri"] == message["modelUri"]

    settle(4 * RESYNC_SECONDS)
    assert get(cluster, "job", namespace, name) is None
    wait_until(lambda: pods_of(cluster, namespace, name) == [], 60, "the garbage collector to delete the pods")
    after = ftj(cluster, namespace, name)["status"]
    assert after == done


def test_deleting_the_finetunejob_collects_its_children(cluster: Cluster, namespace: str,
                                                        operator: RunningOperator) -> None:
    name = "gc"
    cluster.apply(finetunejob(name, message=report(name, namespace), suspend=True), namespace)
    wait_phase(cluster, namespace, name, "Suspended")
    job = wait_until(lambda: get(cluster, "job", namespace, name), 30, "the Job")
    assert children(cluster, namespace, name)["job"]

    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--timeout=60s")
    wait_until(lambda: not any(children(cluster, namespace, name).values()), 60,
               "the garbage collector to delete every child")

    # Deleted and at once created again under the same name: the new one gets its own Job.
    cluster.apply(finetunejob(name, message=report(name, namespace), suspend=True), namespace)
    wait_phase(cluster, namespace, name, "Suspended")
    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=false")
    cluster.apply(finetunejob(name, message=report(name, namespace)), namespace)
    done = kubectl_wait(cluster, namespace, name, "Complete")
    assert done.returncode == 0, done.stderr + operator.log_tail()
    new_uid = ftj(cluster, namespace, name)["metadata"]["uid"]
    (job,) = children(cluster, namespace, name)["job"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == new_uid


def test_a_lineage_passes_the_serving_model_as_current(cluster: Cluster, namespace: str,
                                                       operator: RunningOperator) -> None:
    cluster.apply({"apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment",
                   "metadata": {"name": "ranker"}, "spec": {"model": {"lineage": "shop-ranker"}}}, namespace)
    serving = f"/models/{namespace}/older-1234abcd"
    cluster.kubectl("patch", "recmodeldeployment", "ranker", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"stable": {"modelUri": serving, "modelVersion": "older-1234abcd"}}}))
    name = "next"
    cluster.apply(finetunejob(name, message=report(name, namespace), labels={contracts.LINEAGE_LABEL: "shop-ranker"}),
                  namespace)
    job = wait_until(lambda: get(cluster, "job", namespace, name), 30, "the trainer Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--current-model") + 1] == serving
    assert kubectl_wait(cluster, namespace, name, "Complete").returncode == 0

    # Without a lineage there is no current model.
    cluster.apply(finetunejob("solo", message=report("solo", namespace)), namespace)
    solo = wait_until(lambda: get(cluster, "job", namespace, "solo"), 30, "the trainer Job")
    assert "--current-model" not in solo["spec"]["template"]["spec"]["containers"][0]["args"]
    assert kubectl_wait(cluster, namespace, "solo", "Complete").returncode == 0
