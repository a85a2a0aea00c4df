"""FineTuneJobs under failure on the real control plane, each shown as a condition with its reason
and an Event, and each recovering by itself once its cause is fixed: a missing Secret or claim,
a GPU request no node can satisfy, a failed attempt with retries left, the deadline passing, and
a spec the API server rejects. `recops operator` runs as a subprocess with config/rbac; kwok
nodes run the pods (a test adds a node to fix "no node can take it")."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from recops.api import contracts
from recops.builders import finetunejob as builders
from tests.cluster.test_finetunejob import (
    children,
    conditions,
    events,
    finetunejob,
    ftj,
    get,
    kubectl_wait,
    pods_of,
    report,
    wait_phase,
)
from tests.support.cluster import Cluster, wait_until
from tests.support.operator import RESYNC_SECONDS, RunningOperator, settle

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TEST_NODE_LABEL = "recops.dev/test-node"


@contextmanager
def kwok_node(cluster: Cluster, capacity: dict[str, str], labels: dict[str, str] | None = None,
              taints: list[dict[str, str]] | None = None) -> Iterator[str]:
    """A fake node that kwok runs pods on, for as long as the block lasts."""
    name = f"kwok-test-{uuid.uuid4().hex[:6]}"
    capacity = {"cpu": "32", "memory": "128Gi", "pods": "110", **capacity}
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "type": "kwok", **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {"capacity": capacity, "allocatable": capacity},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(node))
    try:
        yield name
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def ready(obj: dict[str, Any]) -> tuple[str, str]:
    cond = conditions(obj)["Ready"]
    return cond["status"], cond["reason"]


def wait_reason(cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = ftj(cluster, namespace, name)
        return obj if "Ready" in conditions(obj) and ready(obj)[1] == reason else None
    return wait_until(check, timeout, f"FineTuneJob {namespace}/{name} Ready reason {reason}")


def event_reasons(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    return [(e["type"], e["reason"], e["message"]) for e in events(cluster, namespace, name)]


def assert_quiet(cluster: Cluster, namespace: str, name: str, operator: RunningOperator, periods: int = 3) -> None:
    """No retry storm: over several resync periods nothing is written and no Event is posted for the
    job. (The operator's error counter is global: other tests' namespaces being torn down on the
    same cluster may count there, so it is not a signal about this job.)"""
    before = ftj(cluster, namespace, name)["metadata"]["resourceVersion"]
    def posted() -> int:  # repeated Events are aggregated into one object with a count
        return sum(int(e.get("count") or 1) for e in events(cluster, namespace, name))

    before_events = posted()
    settle(periods * RESYNC_SECONDS)
    assert ftj(cluster, namespace, name)["metadata"]["resourceVersion"] == before
    assert posted() == before_events
    assert operator.process.poll() is None


def test_missing_secret_and_claim_wait_then_recover(cluster: Cluster, namespace: str,
                                                   operator: RunningOperator) -> None:
    name = "deps"
    cluster.apply(finetunejob(name, message=report(name, namespace),
                              dataset={"uri": "pvc://shop-data/events.jsonl", "credentialsSecretRef": {"name": "s3"}},
                              output={"uri": "/models", "credentialsSecretRef": {"name": "s3"}}), namespace)
    obj = wait_reason(cluster, namespace, name, "MissingDependency")
    assert obj["status"]["phase"] == "Pending" and ready(obj) == ("False", "MissingDependency")
    assert "Secret s3" in obj["status"]["message"] and "PersistentVolumeClaim shop-data" in obj["status"]["message"]
    assert kubectl_wait(cluster, namespace, name, "Failed=False", "5s").returncode == 0
    assert get(cluster, "job", namespace, name) is None  # nothing is started without them
    assert any(r == ("Warning", "MissingDependency", obj["status"]["message"])
               for r in event_reasons(cluster, namespace, name))
    assert_quiet(cluster, namespace, name, operator)

    # The Secret appears: only the claim is missing now (one more Event, for the new cause).
    cluster.kubectl("create", "secret", "generic", "s3", "-n", namespace, "--from-literal=AWS_REGION=eu-1")
    obj = wait_until(lambda: (o := ftj(cluster, namespace, name))["status"]["message"].startswith(
        "waiting for PersistentVolumeClaim shop-data") and o, 30, "the Secret to be noticed")
    assert "Secret" not in obj["status"]["message"]

    # The claim appears (kwok provisions and binds it): the job runs to the end by itself.
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shop-data"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
                  namespace)
    done = kubectl_wait(cluster, namespace, name, "Complete", "90s")
    assert done.returncode == 0, done.stderr + operator.log_tail()
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["attempts"] == 1
    missing = [r for r in event_reasons(cluster, namespace, name) if r[1] == "MissingDependency"]
    assert len(missing) == 2, missing  # one per cause, none repeated by the resyncs
    job = get(cluster, "job", namespace, name)
    assert job is not None
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"claimName": "shop-data", "readOnly": True} in [v.get("persistentVolumeClaim") for v in volumes]


def test_someone_elses_object_under_a_childs_name_waits_then_recovers(cluster: Cluster, namespace: str,
                                                                     operator: RunningOperator) -> None:
    # Someone else's Job under the trainer Job's name is neither taken over nor used.
    name = "taken"
    job_name = builders.job_name(name)
    theirs = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name}, "spec": {
        "suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "theirs:1"}]}}}}
    cluster.apply(theirs, namespace)
    cluster.apply(finetunejob(name, message=report(name, namespace)), namespace)
    obj = wait_reason(cluster, namespace, name, "ChildConflict")
    assert obj["status"]["phase"] == "Pending"
    assert f"Job {job_name} exists and is not owned by this FineTuneJob" in obj["status"]["message"]
    assert ("Warning", "ChildConflict", obj["status"]["message"]) in event_reasons(cluster, namespace, name)
    assert_quiet(cluster, namespace, name, operator)
    job = get(cluster, "job", namespace, job_name)
    assert job is not None and not job["metadata"].get("ownerReferences")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "theirs:1"

    cluster.kubectl("delete", "job", job_name, "-n", namespace, "--wait=true")
    done = kubectl_wait(cluster, namespace, name, "Complete", "90s")
    assert done.returncode == 0, done.stderr + operator.log_tail()


def test_gpu_request_no_node_can_satisfy_until_a_node_joins(cluster: Cluster, namespace: str,
                                                           operator: RunningOperator) -> None:
    name = "bigger"
    cluster.apply(finetunejob(name, message=report(name, namespace), resources={"gpusPerWorker": 8}), namespace)
    obj = wait_reason(cluster, namespace, name, "Unschedulable")
    assert obj["status"]["phase"] == "Pending"
    assert "nvidia.com/gpu" in obj["status"]["message"]  # the scheduler's own words
    assert any(t == "Warning" and r == "Unschedulable" for t, r, _ in event_reasons(cluster, namespace, name))
    assert_quiet(cluster, namespace, name, operator)

    with kwok_node(cluster, {"nvidia.com/gpu": "8"},
                   taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]) as node:
        done = kubectl_wait(cluster, namespace, name, "Complete", "90s")
        assert done.returncode == 0, done.stderr + operator.log_tail()
        (pod,) = pods_of(cluster, namespace, name)
        assert pod["spec"]["nodeName"] == node
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Succeeded" and ready(obj) == ("True", "NoGate")
    # One Event per cause: a new one only when the scheduler's message changes, i.e. when the nodes do. Other
    # tests' nodes may still be going away meanwhile, so a message may come back (4 nodes, 3, then 4 with ours
    # not ready yet): what must never happen is the same message twice in a row. The Events in the order they
    # were created (etcd revisions; their timestamps are whole seconds).
    posted = sorted((e for e in events(cluster, namespace, name) if e["reason"] == "Unschedulable"),
                    key=lambda e: int(e["metadata"]["resourceVersion"]))
    messages = [e["message"] for e in posted]
    assert messages and all(a != b for a, b in itertools.pairwise(messages)), messages


def test_a_job_that_cannot_create_its_pod_says_why_then_recovers(cluster: Cluster, namespace: str,
                                                                 operator: RunningOperator) -> None:
    """Issue 19: a ResourceQuota (like Pod Security admission or a webhook) refusing the trainer pod left the job
    "waiting for the trainer pod to start" for ever; now the Job controller's words are the condition."""
    name = "quota"
    cluster.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
                   "spec": {"hard": {"pods": "0"}}}, namespace)
    cluster.apply(finetunejob(name, message=report(name, namespace)), namespace)
    obj = wait_reason(cluster, namespace, name, "PodCreateFailed", timeout=90)
    assert obj["status"]["phase"] == "Pending"
    message = obj["status"]["message"]
    assert message.startswith("the Job cannot create the trainer pod: ") and "exceeded quota: no-pods" in message
    assert any(t == "Warning" and r == "PodCreateFailed" for t, r, _ in event_reasons(cluster, namespace, name))

    cluster.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    done = kubectl_wait(cluster, namespace, name, "Complete", "120s")  # the Job controller retries by itself
    assert done.returncode == 0, done.stderr + operator.log_tail()
    assert ftj(cluster, namespace, name)["status"]["phase"] == "Succeeded"


def test_a_failed_attempt_is_retried_and_counted(cluster: Cluster, namespace: str, operator: RunningOperator) -> None:
    name = "flaky"
    node_key = uuid.uuid4().hex[:8]
    # The pods wait for a node labelled for this test, so the first attempt can be made to fail.
    cluster.apply(finetunejob(name, message=report(name, namespace), backoffLimit=2,
                              resources={"nodeSelector": {TEST_NODE_LABEL: node_key}}), namespace)
    first = wait_until(lambda: next(iter(pods_of(cluster, namespace, name)), None), 30, "the first pod")
    wait_reason(cluster, namespace, name, "Unschedulable")
    error = report(name, namespace, modelUri=None, metrics={}, error="CUDA out of memory")
    cluster.kubectl("label", "pod", first["metadata"]["name"], "-n", namespace, f"{contracts.TEST_FAIL_LABEL}=true")
    cluster.kubectl("annotate", "pod", first["metadata"]["name"], "-n", namespace, "--overwrite",
                    f"{contracts.TEST_EXIT_CODE_ANNOTATION}=3",
                    f"{contracts.TEST_TERMINATION_MESSAGE_ANNOTATION}={json.dumps(error)}")

    with kwok_node(cluster, {}, labels={TEST_NODE_LABEL: node_key}):
        # The Job controller waits (back-off) before the second pod: the status says why meanwhile.
        obj = wait_reason(cluster, namespace, name, "Retrying")
        status = obj["status"]
        assert status["phase"] == "Pending" and status["attempts"] == 1
        assert "exit code 3" in status["message"] and "CUDA out of memory" in status["message"]
        assert conditions(obj)["Failed"]["status"] == "False"  # retries are left: not failed
        assert any(t == "Warning" and r == "Retrying" and "exit code 3" in m
                   for t, r, m in event_reasons(cluster, namespace, name))

        done = kubectl_wait(cluster, namespace, name, "Complete", "120s")
        assert done.returncode == 0, done.stderr + operator.log_tail()
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["attempts"] == 2
    assert len(children(cluster, namespace, name)["job"]) == 1


def test_deadline_passes_then_raising_it_reruns_and_resumes(cluster: Cluster, namespace: str,
                                                           operator: RunningOperator) -> None:
    name = "late"
    node_key = uuid.uuid4().hex[:8]
    cluster.apply(finetunejob(name, message=report(name, namespace), activeDeadlineSeconds=3,
                              resources={"nodeSelector": {TEST_NODE_LABEL: node_key}}), namespace)
    failed = kubectl_wait(cluster, namespace, name, "Failed", "60s")
    assert failed.returncode == 0, failed.stderr + operator.log_tail()
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Failed" and conditions(obj)["Failed"]["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds passed" in obj["status"]["message"]
    assert any(t == "Warning" and r == "DeadlineExceeded" for t, r, _ in event_reasons(cluster, namespace, name))
    old_job = get(cluster, "job", namespace, name)
    assert old_job is not None
    old_args = old_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert_quiet(cluster, namespace, name, operator)  # final: nothing more happens by itself

    # The fix: a longer deadline (and a node to run on). A new Job runs the same model version, so
    # the trainer finds its checkpoints under the output and resumes.
    with kwok_node(cluster, {}, labels={TEST_NODE_LABEL: node_key}):
        cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--type=merge",
                        "-p", '{"spec":{"activeDeadlineSeconds":600}}')
        new_job = wait_until(lambda: (j := get(cluster, "job", namespace, name)) and
                             j["metadata"]["uid"] != old_job["metadata"]["uid"] and j, 60, "the new Job")
        assert new_job["spec"]["activeDeadlineSeconds"] == 600
        assert new_job["spec"]["template"]["spec"]["containers"][0]["args"] == old_args
        done = kubectl_wait(cluster, namespace, name, "Complete", "90s")
        assert done.returncode == 0, done.stderr + operator.log_tail()
    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["observedGeneration"] == 2
    assert conditions(obj)["Failed"]["status"] == "False"
    assert len(children(cluster, namespace, name)["job"]) == 1
    assert any(r == "DeadlineRaised" for _, r, _ in event_reasons(cluster, namespace, name))


def test_a_spec_the_api_server_rejects_is_invalid_without_retries(cluster: Cluster, namespace: str,
                                                                  operator: RunningOperator) -> None:
    name = "clash"
    # A podTemplate volume whose name is no DNS label: the schema allows it, the Job is refused (422).
    clash = {"labels": {}, "annotations": {}, "volumes": [{"name": "Scratch_Space", "emptyDir": {}}]}
    cluster.apply(finetunejob(name, message=report(name, namespace), podTemplate=clash), namespace)
    failed = kubectl_wait(cluster, namespace, name, "Failed", "60s")
    assert failed.returncode == 0, failed.stderr + operator.log_tail()
    obj = ftj(cluster, namespace, name)
    assert conditions(obj)["Failed"]["reason"] == "InvalidSpec" and ready(obj) == ("False", "InvalidSpec")
    assert "rejected" in obj["status"]["message"] and "Scratch_Space" in obj["status"]["message"]
    assert get(cluster, "job", namespace, name) is None
    assert any(t == "Warning" and r == "InvalidSpec" for t, r, _ in event_reasons(cluster, namespace, name))
    assert_quiet(cluster, namespace, name, operator)

    # What the builders themselves refuse (a volume named like one recops adds; two workers under a
    # name that is no DNS label) likewise, before anything is applied.
    cluster.apply(finetunejob("tmp-clash", podTemplate={"volumes": [{"name": "tmp", "emptyDir": {}}]}), namespace)
    obj = wait_phase(cluster, namespace, "tmp-clash", "Failed")
    assert conditions(obj)["Failed"]["reason"] == "InvalidSpec" and "'tmp'" in obj["status"]["message"]
    cluster.apply(finetunejob("two.workers", message=report(name, namespace), resources={"workers": 2}), namespace)
    obj = wait_phase(cluster, namespace, "two.workers", "Failed")
    assert conditions(obj)["Failed"]["reason"] == "InvalidSpec" and "DNS label" in obj["status"]["message"]

    # Fixed (a spec is immutable: the object is replaced), the same name runs to the end.
    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--timeout=60s")
    cluster.apply(finetunejob(name, message=report(name, namespace)), namespace)
    done = kubectl_wait(cluster, namespace, name, "Complete", "60s")
    assert done.returncode == 0, done.stderr + operator.log_tail()
