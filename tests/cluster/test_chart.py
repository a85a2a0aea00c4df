"""charts/recops on the real control plane: `helm install`, the operator running with a token of
the chart's ServiceAccount (and the settings of the chart's Deployment) reconciling a
FineTuneJob, a RecModelDeployment and a MonitorPolicy, SubjectAccessReviews of what that account may not do, `helm upgrade` keeping the
resources, and `helm uninstall` leaving the CRDs and the recops objects.

The operator runs as a local subprocess (tests/support/operator.py): no image can be pulled here.
The chart's own Deployment is installed too, into a namespace that enforces the Pod Security
"restricted" profile, so the apiserver admits its pod only if its securityContext complies; a
kwok node then "runs" that pod (nothing executes), which lets helm's --wait see it Ready."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_finetunejob import finetunejob, ftj, get, kubectl_wait, pods_of, report
from tests.cluster.test_monitorpolicy import conditions, policy, wait_status
from tests.support.cluster import Cluster, wait_until
from tests.support.helm import CHART, helm, set_args
from tests.support.models import tiny_served_model
from tests.support.operator import running_operator

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

CRDS = ("finetunejobs.recops.dev", "recmodeldeployments.recops.dev", "monitorpolicies.recops.dev")


@dataclass
class Release:
    name: str
    namespace: str  # the release's (and the operator's) namespace

    @property
    def service_account(self) -> str:
        return f"{self.name}-operator"  # the release name contains "recops": fullname = release name


def chart_helm(cluster: Cluster, *args: str, check: bool = True) -> Any:
    return helm(*args, "--kubeconfig", str(cluster.kubeconfig), check=check, env=cluster.env)


def install(cluster: Cluster, values: dict[str, Any]) -> tuple[Release, str]:
    namespace = cluster.create_namespace("recops-chart", labels={
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"})
    release = Release(f"recops-{uuid.uuid4().hex[:6]}", namespace)
    out = chart_helm(cluster, "install", release.name, str(CHART), "-n", namespace, "--wait", "--timeout", "120s",
                     *set_args(values)).stdout
    return release, out


def uninstall(cluster: Cluster, release: Release) -> None:
    chart_helm(cluster, "uninstall", release.name, "-n", release.namespace, "--wait", check=False)
    cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


def deployment_env(cluster: Cluster, release: Release) -> dict[str, str]:
    deployment = get(cluster, "deployment", release.namespace, f"{release.name}-operator")
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"] if "valueFrom" not in e}


def allowed(cluster: Cluster, release: Release, verb: str, resource: str, namespace: str | None = None,
            group: str = "", subresource: str = "") -> bool:
    """A SubjectAccessReview, created by the admin, about the chart's ServiceAccount."""
    attributes = {"verb": verb, "resource": resource, "group": group, "subresource": subresource}
    if namespace:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{release.namespace}:{release.service_account}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{release.namespace}", "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }
    res = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(res.stdout)["status"].get("allowed"))


def assert_cannot_touch_what_it_does_not_manage(cluster: Cluster, release: Release, watched: str) -> None:
    denied = [
        ("list", "nodes", None, "", ""),
        ("create", "namespaces", None, "", ""),
        ("update", "customresourcedefinitions", None, "apiextensions.k8s.io", ""),
        ("create", "clusterroles", None, "rbac.authorization.k8s.io", ""),
        ("create", "clusterrolebindings", None, "rbac.authorization.k8s.io", ""),
        ("escalate", "roles", watched, "rbac.authorization.k8s.io", ""),
        ("bind", "roles", watched, "rbac.authorization.k8s.io", ""),
        ("create", "pods", watched, "", "exec"),
        ("delete", "pods", watched, "", ""),
        ("patch", "pods", watched, "", ""),  # no finalizer on trainer pods: read only
        ("delete", "configmaps", watched, "", ""),
        # A FineTuneJob owns only its Job (and a workers' Service): no ConfigMap, ServiceAccount or RBAC objects.
        ("create", "configmaps", watched, "", ""),
        ("create", "serviceaccounts", watched, "", ""),
        ("create", "roles", watched, "rbac.authorization.k8s.io", ""),
        ("create", "rolebindings", watched, "rbac.authorization.k8s.io", ""),
        ("patch", "configmaps", watched, "", ""),
        ("patch", "serviceaccounts", watched, "", ""),
        ("patch", "roles", watched, "rbac.authorization.k8s.io", ""),
        ("patch", "rolebindings", watched, "rbac.authorization.k8s.io", ""),
        ("patch", "finetunejobs", watched, "recops.dev", ""),  # Kopf keeps no annotations on them
        ("get", "pods", watched, "", "exec"),
        ("create", "persistentvolumeclaims", watched, "", ""),
        ("create", "statefulsets", watched, "apps", ""),
        ("delete", "recmodeldeployments", watched, "recops.dev", ""),
        ("update", "finetunejobs", watched, "recops.dev", ""),  # spec is the user's: patch status only
        ("impersonate", "serviceaccounts", watched, "", ""),
    ]
    wrongly_allowed = [case for case in denied
                       if allowed(cluster, release, case[0], case[1], case[2], case[3], case[4])]
    assert not wrongly_allowed, wrongly_allowed


@pytest.fixture
def unwatched(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("unwatched")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_namespaced_install_reconcile_least_privilege_upgrade_uninstall(
        cluster: Cluster, namespace: str, unwatched: str, tmp_path: Path) -> None:
    # A Prometheus URL where nothing listens: the operator's default, through the chart.
    values = {"rbac": {"watchNamespaces": [namespace]}, "feedbackKey": {"create": True},
              "operator": {"resyncSeconds": 1}, "prometheus": {"url": "http://127.0.0.1:9"}}
    release, out = install(cluster, values)
    try:
        # NOTES.txt tells what happens to the CRDs and how to upgrade them.
        notes = " ".join(out.split("NOTES:", 1)[1].split())
        assert "`helm uninstall` leaves the CRDs" in notes and "kubectl apply --server-side -f crds/" in notes
        for crd in CRDS:
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
        # Pod Security "restricted" admitted the operator pod (helm --wait saw the Deployment available).
        deployment = get(cluster, "deployment", release.namespace, f"{release.name}-operator")
        assert deployment is not None and deployment["status"].get("availableReplicas") == 1
        # The RBAC is a Role in the watched namespace only.
        assert get(cluster, "role", namespace, f"{release.name}-operator") is not None
        assert get(cluster, "role", unwatched, f"{release.name}-operator") is None
        assert cluster.kubectl("get", "clusterrole", f"{release.name}-operator", check=False).returncode != 0

        # What the account may and may not do.
        assert allowed(cluster, release, "watch", "finetunejobs", namespace, "recops.dev")
        assert allowed(cluster, release, "patch", "finetunejobs", namespace, "recops.dev", "status")
        assert allowed(cluster, release, "create", "jobs", namespace, "batch")
        assert allowed(cluster, release, "create", "finetunejobs", namespace, "recops.dev")  # retraining
        assert allowed(cluster, release, "get", "pods", namespace, "", "log")  # a trainer's progress lines
        assert not allowed(cluster, release, "get", "pods", unwatched, "", "log")
        assert allowed(cluster, release, "list", "events", namespace)  # a trainer Job's FailedCreate
        assert not allowed(cluster, release, "watch", "events", namespace)
        assert not allowed(cluster, release, "list", "events", unwatched)
        assert not allowed(cluster, release, "list", "finetunejobs", unwatched, "recops.dev")
        assert not allowed(cluster, release, "list", "finetunejobs", None, "recops.dev")  # cluster-wide
        assert not allowed(cluster, release, "create", "jobs", unwatched, "batch")
        for other in (unwatched, "kube-system", release.namespace, "default"):
            for verb in ("get", "list", "watch", "create"):
                assert not allowed(cluster, release, verb, "secrets", other), (verb, other)
        # In the watched namespace: create a feedback key, get a FineTuneJob's Secret by name (it must
        # exist before the Job); never enumerate or change one.
        assert allowed(cluster, release, "create", "secrets", namespace)
        assert allowed(cluster, release, "get", "secrets", namespace)
        for verb in ("list", "watch", "patch", "update", "delete"):
            assert not allowed(cluster, release, verb, "secrets", namespace), verb
        assert_cannot_touch_what_it_does_not_manage(cluster, release, namespace)

        # The chart renders no feedback key (a random one would differ on every render): the operator makes it.
        assert get(cluster, "secret", namespace, "recops-feedback-key") is None

        # The operator, configured as the chart's Deployment configures it, authenticated as the
        # chart's ServiceAccount, runs a FineTuneJob in the watched namespace only.
        env = deployment_env(cluster, release)
        assert env["RECOPS_NAMESPACES"] == namespace
        with running_operator(cluster, tmp_path / "operator", service_account=release.service_account,
                              namespaces=[namespace], operator_namespace=release.namespace,
                              extra_env=env) as operator:
            feedback_key = wait_until(lambda: get(cluster, "secret", namespace, "recops-feedback-key"), 30,
                                      "the operator to create the feedback key")
            assert feedback_key["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "recops"
            assert len(feedback_key["data"]["feedbackKey"]) >= 32
            message = report("charted", namespace, gatePassed=None)
            cluster.apply(finetunejob("charted", message=message), namespace)
            cluster.apply(finetunejob("ignored", message=report("ignored", unwatched)), unwatched)
            done = kubectl_wait(cluster, namespace, "charted", "Complete", timeout="90s")
            assert done.returncode == 0, done.stderr + operator.log_tail()
            assert ftj(cluster, namespace, "charted")["status"]["model"]["uri"] == message["modelUri"]
            assert get(cluster, "job", namespace, "charted") is not None
            assert get(cluster, "job", unwatched, "ignored") is None
            assert "status" not in ftj(cluster, unwatched, "ignored")
            # One left unfinished at uninstall: its pod waits for a node that never comes.
            cluster.apply(finetunejob("unfinished", message=report("unfinished", namespace),
                                      resources={"nodeSelector": {"recops.dev/no-such-node": "x"}}), namespace)
            wait_until(lambda: pods_of(cluster, namespace, "unfinished"), 60, "the unfinished job's pod")

            # A RecModelDeployment (kwok pods: this is about what the operator may create, not serving).
            model = tiny_served_model(tmp_path / "ranker-a", "click-through", version="ranker-a")
            cluster.apply({"apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment",
                           "metadata": {"name": "shop"},
                           "spec": {"model": {"uri": str(model)},
                                    "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}}, namespace)
            wait_until(lambda: (get(cluster, "recmodeldeployment", namespace, "shop") or {}).get("status", {})
                       .get("phase") == "Serving", 120, "RecModelDeployment shop Serving")
            for kind, name in (("deployment", "shop-stable"), ("service", "shop"), ("hpa", "shop-stable"),
                               ("pdb", "shop")):
                assert get(cluster, kind, namespace, name) is not None, (kind, name)
            assert get(cluster, "deployment", unwatched, "shop-stable") is None

            # MonitorPolicies: one whose target is missing, one on `shop`, which serves a model but
            # has no metrics (the chart's default Prometheus URL answers nothing).
            rule = {"name": "ctr", "metric": "ctr", "threshold": {"below": 0.1}}
            cluster.apply(policy("lost", "not-there", [rule]), namespace)
            cluster.apply(policy("watch", "shop", [rule]), namespace)
            wait_status(cluster, namespace, "lost",
                        lambda s: conditions(s).get("Ready", {}).get("reason") == "TargetNotFound",
                        60, "Ready=False TargetNotFound", extra=operator.log_tail)
            status = wait_status(cluster, namespace, "watch",
                                 lambda s: conditions(s).get("MetricsUnavailable", {}).get("status") == "True",
                                 60, "MetricsUnavailable=True", extra=operator.log_tail)
            assert "http://127.0.0.1:9" in conditions(status)["MetricsUnavailable"]["message"]
            assert "Forbidden" not in operator.log_tail(200000), "the operator tried something its Role lacks"

        # helm upgrade (a changed setting) keeps every object: same uids, same feedback key.
        def identities() -> dict[str, tuple[str, str]]:
            found = {}
            for kind, ns, name in (("serviceaccount", release.namespace, release.service_account),
                                   ("deployment", release.namespace, f"{release.name}-operator"),
                                   ("service", release.namespace, f"{release.name}-operator-metrics"),
                                   ("role", namespace, f"{release.name}-operator"),
                                   ("rolebinding", namespace, f"{release.name}-operator"),
                                   ("secret", namespace, "recops-feedback-key"),
                                   ("finetunejob", namespace, "charted"), ("job", namespace, "charted")):
                obj = get(cluster, kind, ns, name)
                assert obj is not None, (kind, ns, name)
                found[kind] = (obj["metadata"]["uid"], json.dumps(obj.get("data")))
            return found

        before = identities()
        upgraded = {**values, "operator": {"resyncSeconds": 1, "logLevel": "DEBUG"}}
        chart_helm(cluster, "upgrade", release.name, str(CHART), "-n", release.namespace, "--wait",
                   "--timeout", "120s", *set_args(upgraded))
        assert identities() == before
        assert deployment_env(cluster, release)["RECOPS_LOG_LEVEL"] == "DEBUG"
        # The upgraded operator starts again, finds the feedback key and keeps it as it is.
        with running_operator(cluster, tmp_path / "operator-upgraded", service_account=release.service_account,
                              namespaces=[namespace], operator_namespace=release.namespace,
                              extra_env=deployment_env(cluster, release)) as operator:
            wait_until(lambda: f"feedback-key Secret {namespace}/recops-feedback-key: kept" in operator.log.read_text(),
                       30, "the operator to find the feedback key")
        assert identities() == before
        assert (get(cluster, "secret", namespace, "recops-feedback-key") or {}).get("data") == feedback_key["data"]

        # helm uninstall removes the release's objects and leaves the CRDs and the recops objects.
        chart_helm(cluster, "uninstall", release.name, "-n", release.namespace, "--wait")
        for crd in CRDS:
            assert cluster.kubectl("get", "crd", crd, check=False).returncode == 0, crd
        assert ftj(cluster, namespace, "charted")["status"]["phase"] == "Succeeded"
        wait_until(lambda: get(cluster, "role", namespace, f"{release.name}-operator") is None, 30, "Role deleted")
        assert get(cluster, "serviceaccount", release.namespace, release.service_account) is None
        assert get(cluster, "deployment", release.namespace, f"{release.name}-operator") is None
        # The feedback key outlives the release (helm.sh/resource-policy: keep): served tokens stay valid.
        assert get(cluster, "secret", namespace, "recops-feedback-key") is not None

        # Nothing is left stuck without an operator: the namespace, with the unfinished FineTuneJob's Job and
        # pod, the finished one's and the RecModelDeployment's children, deletes.
        deleted = cluster.kubectl("delete", "namespace", namespace, "--timeout=120s", check=False)
        assert deleted.returncode == 0, deleted.stderr
        assert cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0
    finally:
        uninstall(cluster, release)


def test_cluster_wide_install_reconciles_everywhere_and_lists_no_secrets(
        cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    # Two replicas: leader election on a Lease in the release namespace.
    release, _ = install(cluster, {"operator": {"resyncSeconds": 1, "replicas": 2}})
    try:
        assert allowed(cluster, release, "create", "leases", release.namespace, "coordination.k8s.io")
        assert allowed(cluster, release, "update", "leases", release.namespace, "coordination.k8s.io")
        assert not allowed(cluster, release, "create", "leases", namespace, "coordination.k8s.io")
        assert not allowed(cluster, release, "delete", "leases", release.namespace, "coordination.k8s.io")
        assert get(cluster, "role", namespace, f"{release.name}-operator") is None
        # HA mode: a PodDisruptionBudget over the operator's pods, which the disruption controller counts.
        wait_until(lambda: (get(cluster, "pdb", release.namespace, f"{release.name}-operator") or {})
                   .get("status", {}).get("expectedPods") == 2, 60, "the operator PDB to count both replicas")
        assert allowed(cluster, release, "list", "finetunejobs", None, "recops.dev")
        assert allowed(cluster, release, "create", "jobs", namespace, "batch")
        # Cluster-wide, Secrets can be read by name anywhere (a FineTuneJob's credentials must exist
        # before its Job), never listed or watched, so none can be discovered.
        for other in (namespace, "kube-system", release.namespace):
            for verb in ("list", "watch", "patch", "update", "delete"):
                assert not allowed(cluster, release, verb, "secrets", other), (verb, other)
        assert not allowed(cluster, release, "list", "secrets", None)
        assert not allowed(cluster, release, "watch", "secrets", None)
        assert_cannot_touch_what_it_does_not_manage(cluster, release, namespace)

        env = deployment_env(cluster, release)
        assert env["RECOPS_NAMESPACES"] == ""
        with running_operator(cluster, tmp_path / "operator", service_account=release.service_account,
                              operator_namespace=release.namespace, extra_env=env) as operator:
            message = report("clusterwide", namespace, gatePassed=None)
            cluster.apply(finetunejob("clusterwide", message=message), namespace)
            done = kubectl_wait(cluster, namespace, "clusterwide", "Complete", timeout="90s")
            assert done.returncode == 0, done.stderr + operator.log_tail()
            # An RBAC denial reads 'is forbidden: User "system:serviceaccount:..." cannot ...'; a write into
            # another test's terminating namespace is also a 403 and says nothing about the role.
            assert not re.search(r'is forbidden: User \\?"[^"\\]+\\?" cannot', operator.log_tail(200000)), \
                "the operator tried something its ClusterRole lacks"
            assert env["RECOPS_LEADER_ELECT"] == "true"
            lease = get(cluster, "lease", release.namespace, f"{release.name}-operator")
            assert lease is not None and lease["spec"].get("holderIdentity"), lease
    finally:
        uninstall(cluster, release)
    assert cluster.kubectl("get", "clusterrole", f"{release.name}-operator", check=False).returncode != 0
