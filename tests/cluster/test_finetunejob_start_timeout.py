"""A trainer kept from starting by what does not change by itself fails after the operator's
--start-timeout-seconds (its own operator here, with a short one), and its Job goes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.cluster.test_finetunejob import conditions, finetunejob, ftj, get, kubectl_wait, report
from tests.cluster.test_finetunejob_failures import event_reasons, ready, wait_reason
from tests.support.cluster import Cluster, wait_until
from tests.support.operator import RESYNC_SECONDS, RunningOperator, settle

START_TIMEOUT_S = 30  # the Job controller's refusals are read once the Job is 10 s old: 20 s to see Pending first


@contextmanager
def refusing_pods(cluster: Cluster, namespace: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that denies creating any pod in `namespace`."""
    name = f"no-pods-{namespace}"[:63]
    cluster.apply([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                          "operations": ["CREATE"], "resources": ["pods"]}]},
                  "validations": [{"expression": "false", "message": "no pods here"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {
                      "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}},
    ])
    try:
        # A new policy takes a moment to be enforced: until a server-side dry run of a pod is refused, the
        # Job controller could still create the trainer pod.
        def enforced() -> bool:
            probe = cluster.kubectl("run", "probe", "--image=registry.invalid/probe", "-n", namespace,
                                    "--dry-run=server", check=False)
            return probe.returncode != 0 and "no pods here" in probe.stderr
        wait_until(enforced, 60, "the admission policy to be enforced")
        yield
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False)


@pytest.fixture(scope="module")
def operator_options() -> dict[str, Any]:
    return {"extra_args": ["--start-timeout-seconds", str(START_TIMEOUT_S)]}


def test_a_pod_admission_refuses_fails_the_job_after_the_start_timeout(cluster: Cluster, namespace: str,
                                                                       operator: RunningOperator) -> None:
    name = "refused"
    # An admission policy (as a webhook would) refuses every pod of the namespace; unlike a quota, nothing
    # frees it up by itself.
    with refusing_pods(cluster, namespace):
        cluster.apply(finetunejob(name, message=report(name, namespace)), namespace)
        obj = wait_reason(cluster, namespace, name, "PodCreateFailed", timeout=90)
        assert obj["status"]["phase"] == "Pending" and "no pods here" in obj["status"]["message"]

        failed = kubectl_wait(cluster, namespace, name, "Failed", "120s")
        assert failed.returncode == 0, failed.stderr + operator.log_tail()
        obj = ftj(cluster, namespace, name)
        assert obj["status"]["phase"] == "Failed" and ready(obj) == ("False", "PodCreateFailed")
        assert conditions(obj)["Failed"]["reason"] == "PodCreateFailed"
        assert f"for more than {START_TIMEOUT_S} s" in obj["status"]["message"]
        assert ("Warning", "PodCreateFailed", obj["status"]["message"]) in event_reasons(cluster, namespace, name)
        # The Job goes (a pod stuck in an image pull must not hold its node's resources) and is never made again.
        wait_until(lambda: get(cluster, "job", namespace, name) is None, 60, "the given-up Job to be deleted")
        settle(3 * RESYNC_SECONDS)
        assert get(cluster, "job", namespace, name) is None
        assert ftj(cluster, namespace, name)["status"] == obj["status"]
