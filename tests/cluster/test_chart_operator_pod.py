"""The chart's operator Deployment running from the built operator image (issue 20): `helm install`
on the local control plane, the operator pod scheduled on the process node, which runs it from the
image with podman as a kubelet would (service-account token, CA and namespace mounted, in-cluster
env, the chart's securityContext), and a FineTuneJob reconciled by it to Succeeded. The operator
finds the apiserver in-cluster and has only the chart's RBAC.

The trainer pod is a kwok pod with the test hooks of DESIGN.md (its termination message is the
report), as in tests/cluster/test_chart.py: this test is about the operator's pod.

Builds the operator image with hack/images (`make images`; seconds when nothing changed); skips
without podman. RECOPS_TEST_OPERATOR_IMAGE names an already built image to use instead.
"""

from __future__ import annotations

import calendar
import json
import socket
import time
from typing import Any

import pytest

from tests.cluster.test_chart import Release, chart_helm, uninstall
from tests.cluster.test_finetunejob import finetunejob, ftj, kubectl_wait, report
from tests.support.cluster import ON_PROCESS_NODE, Cluster
from tests.support.helm import CHART, set_args
from tests.support.images import operator_image as built_operator_image
from tests.support.images import podman_runtime

# The time limit leaves room for a cold build of the operator image (its first use in a session).
pytestmark = [pytest.mark.cluster, pytest.mark.images, pytest.mark.timeout(420 + 1800)]


@pytest.fixture(scope="module")
def operator_image() -> tuple[str, str]:
    """(repository, tag) of the operator image, present in local podman storage."""
    repository, tag = built_operator_image().rsplit(":", 1)
    return repository, tag


def free_port() -> int:
    """The operator pod shares the host's network (pod IPs are loopback addresses): its ports must be free."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def ready_seconds(pod: dict[str, Any]) -> float:
    """Seconds from the pod's creation to its Ready condition (the apiserver's second-resolution times)."""
    def parse(stamp: str) -> float:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return parse(ready["lastTransitionTime"]) - parse(pod["metadata"]["creationTimestamp"])


def test_chart_operator_runs_from_its_image_and_reconciles(cluster: Cluster, namespace: str,
                                                           operator_image: tuple[str, str]) -> None:
    repository, tag = operator_image
    release_ns = cluster.create_namespace("recops-pod", labels={
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"})
    release = f"recops-{release_ns[-6:]}"
    values = {
        "rbac": {"watchNamespaces": [namespace]},
        "prometheus": {"url": "http://127.0.0.1:9"},  # nothing listens: no MonitorPolicy here
        "operator": {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
                     "resyncSeconds": 1, "metricsPort": free_port(), "healthPort": free_port(),
                     **ON_PROCESS_NODE},
    }
    started = time.monotonic()
    try:
        chart_helm(cluster, "install", release, str(CHART), "-n", release_ns, "--wait", "--timeout", "240s",
                   *set_args(values))
        install_seconds = time.monotonic() - started
        pods = json.loads(cluster.kubectl("get", "pods", "-n", release_ns, "-o", "json").stdout)["items"]
        (pod,) = pods
        (status,) = pod["status"]["containerStatuses"]
        # Run from the image by podman (not a local process), as the chart's user and no other.
        assert status["containerID"].startswith("podman://"), status
        assert pod["spec"]["nodeName"] == "recops-local"

        message = report("podded", namespace, gatePassed=None)
        applied = time.monotonic()
        cluster.apply(finetunejob("podded", message=message), namespace)
        done = kubectl_wait(cluster, namespace, "podded", "Complete", timeout="120s")
        succeeded_seconds = time.monotonic() - applied
        logs = cluster.kubectl("logs", "-n", release_ns, pod["metadata"]["name"]).stdout
        assert done.returncode == 0, done.stderr + logs[-4000:]
        status_ = ftj(cluster, namespace, "podded")["status"]
        assert status_["phase"] == "Succeeded" and status_["model"]["uri"] == message["modelUri"], status_
        # The chart's Role sufficed: nothing the operator tried was forbidden.
        assert "forbidden" not in logs.lower(), logs[-4000:]
        print(f"\noperator pod: helm install --wait {install_seconds:.1f}s, pod created->Ready "
              f"{ready_seconds(pod):.0f}s; FineTuneJob applied->Complete {succeeded_seconds:.1f}s")

        # Uninstall stops the container: the pod goes, and podman holds no container of it.
        chart_helm(cluster, "uninstall", release, "-n", release_ns, "--wait", "--timeout", "120s")
        cluster.kubectl("wait", "--for=delete", "-n", release_ns, f"pod/{pod['metadata']['name']}", "--timeout=60s")
        name = status["containerID"].removeprefix("podman://")
        listing = podman_runtime().podman("ps", "--all", "--format", "{{.Names}}")
        assert name not in listing.stdout.split(), listing.stdout
    finally:
        uninstall(cluster, Release(release, release_ns))
