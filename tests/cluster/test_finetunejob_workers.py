"""Suspend/resume and many workers on the real control plane (kwok nodes run the pods)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

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
from tests.cluster.test_finetunejob_failures import TEST_NODE_LABEL, kwok_node
from tests.support.cluster import Cluster, wait_until
from tests.support.operator import RunningOperator

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

INDEX = "batch.kubernetes.io/job-completion-index"


def trainer_args(pod_or_job: dict[str, Any]) -> list[str]:
    spec = pod_or_job["spec"].get("template", {}).get("spec") or pod_or_job["spec"]
    return list(spec["containers"][0]["args"])


def test_suspend_and_resume_keep_the_model_version(cluster: Cluster, namespace: str,
                                                   operator: RunningOperator) -> None:
    name = "pause"
    node_key = uuid.uuid4().hex[:8]
    cluster.apply(finetunejob(name, message=report(name, namespace),
                              resources={"nodeSelector": {TEST_NODE_LABEL: node_key}}), namespace)
    first = wait_until(lambda: next(iter(pods_of(cluster, namespace, name)), None), 30, "the first trainer pod")
    job = get(cluster, "job", namespace, name)
    assert job is not None

    # Suspended: the Job is suspended, its pod goes, the FineTuneJob says so.
    cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    obj = wait_phase(cluster, namespace, name, "Suspended")
    assert (conditions(obj)["Suspended"]["status"], conditions(obj)["Suspended"]["reason"]) == ("True",
                                                                                              "SpecSuspended")
    assert obj["status"]["observedGeneration"] == 2
    assert get(cluster, "job", namespace, name)["spec"]["suspend"] is True  # type: ignore[index]
    wait_until(lambda: pods_of(cluster, namespace, name) == [], 60, "the suspended Job's pod to go")
    assert kubectl_wait(cluster, namespace, name, "Suspended", "5s").returncode == 0

    # Resumed (and now there is a node): the same Job starts a new pod with the same model version
    # and output, which is where the trainer keeps and finds its checkpoints.
    with kwok_node(cluster, {}, labels={TEST_NODE_LABEL: node_key}):
        cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--type=merge",
                        "-p", '{"spec":{"suspend":false}}')
        done = kubectl_wait(cluster, namespace, name, "Complete", "90s")
        assert done.returncode == 0, done.stderr + operator.log_tail()
    (resumed,) = pods_of(cluster, namespace, name)
    assert resumed["metadata"]["uid"] != first["metadata"]["uid"]
    assert trainer_args(resumed) == trainer_args(first)
    assert "--model-version" in trainer_args(resumed)
    (same_job,) = children(cluster, namespace, name)["job"]
    assert same_job["metadata"]["uid"] == job["metadata"]["uid"]

    obj = ftj(cluster, namespace, name)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["observedGeneration"] == 3
    assert conditions(obj)["Suspended"]["status"] == "False"
    reasons = [e["reason"] for e in events(cluster, namespace, name)]
    assert "SpecSuspended" in reasons and "Resumed" in reasons


def test_two_workers_objects_env_and_one_status(cluster: Cluster, namespace: str, operator: RunningOperator) -> None:
    name = "pair"
    message = report(name, namespace, gatePassed=True)
    cluster.apply(finetunejob(name, message=message, resources={"workers": 2, "gpusPerWorker": 2},
                              evaluation={"gate": {"metric": "auc", "minimum": 0.5}}), namespace)
    done = kubectl_wait(cluster, namespace, name, "Complete", "90s")
    assert done.returncode == 0, done.stderr + operator.log_tail()
    obj = ftj(cluster, namespace, name)
    uid = obj["metadata"]["uid"]

    # The headless Service, owned like every child.
    service = get(cluster, "service", namespace, name)
    assert service is not None
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["ownerReferences"][0]["uid"] == uid

    # The Indexed Job: one pod per worker, each with its index and stable hostname under the Service.
    job = get(cluster, "job", namespace, name)
    assert job is not None
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    pods = sorted(pods_of(cluster, namespace, name), key=lambda p: int(p["metadata"]["annotations"][INDEX]))
    assert [p["metadata"]["annotations"][INDEX] for p in pods] == ["0", "1"]
    assert [p["spec"]["hostname"] for p in pods] == [f"{name}-0", f"{name}-1"]
    assert {p["spec"]["subdomain"] for p in pods} == {name}
    for pod in pods:
        assert pod["spec"]["nodeName"] == "kwok-gpu-0"
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert container["command"] == ["torchrun"] and container["args"][:3] == ["--no-python", "recops", "train"]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "2"
        assert env["PET_MASTER_ADDR"] == f"{name}-0.{name}" and env["PET_MASTER_PORT"] == "29500"
        assert env["PET_NODE_RANK"] == {"fieldRef": {"apiVersion": "v1",
                                                     "fieldPath": f"metadata.annotations['{INDEX}']"}}
        # Also set by the Job controller for Indexed Jobs: the same number.
        assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": f"metadata.labels['{INDEX}']"}}} in container["env"]

    # Both workers were endpoints of the Service under their hostnames (torchrun's rendezvous address).
    slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", namespace, "-l",
                                        f"kubernetes.io/service-name={name}", "-o", "json").stdout)["items"]
    hostnames = sorted(e.get("hostname") for s in slices for e in s.get("endpoints") or [])
    assert hostnames in ([f"{name}-0", f"{name}-1"], []), hostnames  # [] once both pods finished and went

    # All workers reduce to one status: the rank-0 worker's report is the model's.
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["attempts"] == 1
    assert status["model"] == {"uri": message["modelUri"], "version": message["modelVersion"]}
    assert status["metrics"] == message["metrics"] and status["gatePassed"] is True
    assert conditions(obj)["Ready"]["status"] == "True"

