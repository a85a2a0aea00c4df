"""`recops operator --namespaces NS` with the namespaced RBAC of config/rbac only (its own
ServiceAccount, no ClusterRole): it runs a FineTuneJob in NS and leaves other namespaces alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.test_finetunejob import finetunejob, ftj, get, kubectl_wait, report
from tests.support.cluster import Cluster
from tests.support.operator import install_rbac, running_operator, settle

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

SERVICE_ACCOUNT = "recops-operator-namespaced"


def test_namespaced_operator_with_namespaced_rbac(cluster: Cluster, crds: list[str], namespace: str,
                                                  tmp_path: Path) -> None:
    other = cluster.create_namespace("unwatched")
    try:
        install_rbac(cluster, SERVICE_ACCOUNT, namespaces=[namespace])
        # The account holds no cluster-wide permission at all.
        kubeconfig = cluster.sa_kubeconfig("recops-system", SERVICE_ACCOUNT, tmp_path / "check.kubeconfig")
        denied = cluster.kubectl("get", "finetunejobs", "-A", kubeconfig=kubeconfig, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

        with running_operator(cluster, tmp_path / "operator", service_account=SERVICE_ACCOUNT,
                              namespaces=[namespace]) as operator:
            message = report("watched", namespace, gatePassed=None)
            cluster.apply(finetunejob("watched", message=message), namespace)
            cluster.apply(finetunejob("ignored", message=report("ignored", other)), other)
            done = kubectl_wait(cluster, namespace, "watched", "Complete")
            assert done.returncode == 0, done.stderr + operator.log_tail()
            status = ftj(cluster, namespace, "watched")["status"]
            assert status["model"]["uri"] == message["modelUri"]
            assert get(cluster, "role", namespace, "watched-trainer") is None  # no per-job grant any more

            settle(3)
            assert get(cluster, "job", other, "ignored") is None
            assert "status" not in ftj(cluster, other, "ignored")
            assert "Forbidden" not in operator.log_tail(200000), "the operator tried something its Role lacks"
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_restart_and_upgrade_create_nothing_new(cluster: Cluster, crds: list[str], namespace: str,
                                                tmp_path: Path) -> None:
    """A restarted operator (the first watch event of each object applies every child again) creates nothing new; one
    that builds a different Job template (another trainer image) leaves the existing Job's
    immutable template alone and still applies the mutable fields (suspend)."""
    from tests.cluster.test_finetunejob import children, identities, wait_phase

    install_rbac(cluster, SERVICE_ACCOUNT, namespaces=[namespace])
    name = "held"
    with running_operator(cluster, tmp_path / "first", service_account=SERVICE_ACCOUNT, namespaces=[namespace]):
        cluster.apply(finetunejob(name, message=report(name, namespace), suspend=True), namespace)
        wait_phase(cluster, namespace, name, "Suspended")
        settle(2)
        before = identities(children(cluster, namespace, name))
        status = ftj(cluster, namespace, name)["status"]

    with running_operator(cluster, tmp_path / "second", service_account=SERVICE_ACCOUNT, namespaces=[namespace]) as op:
        settle(3)
        assert identities(children(cluster, namespace, name)) == before
        assert ftj(cluster, namespace, name)["status"] == status

    with running_operator(cluster, tmp_path / "upgraded", service_account=SERVICE_ACCOUNT, namespaces=[namespace],
                          extra_args=["--trainer-image", "recops-trainer:next"]) as op:
        settle(3)
        assert {k: [x[:2] for x in v] for k, v in identities(children(cluster, namespace, name)).items()} == \
            {k: [x[:2] for x in v] for k, v in before.items()}  # same objects (uids), none new
        cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--type=merge",
                        "-p", '{"spec":{"suspend":false}}')
        done = kubectl_wait(cluster, namespace, name, "Complete")
        assert done.returncode == 0, done.stderr + op.log_tail()
        job = get(cluster, "job", namespace, name)
        assert job is not None
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "recops-trainer:test"
        assert "differs from what this operator builds" in op.log_tail(1_000_000)
