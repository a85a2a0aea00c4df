"""The operator killed (SIGKILL) at several points and started again: no duplicate children, no
lost or rewound status. And two replicas with leader election: only the Lease holder acts."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from recops.api import contracts
from tests.cluster.test_finetunejob import conditions, finetunejob, ftj, kubectl_wait, report
from tests.support.cluster import Cluster, wait_until
from tests.support.operator import OPERATOR_NAMESPACE, install_rbac, running_operator

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

PHASE_RANK = {"Pending": 0, "Suspended": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


class StatusRecorder:
    """Every version of every FineTuneJob in a namespace, as a watch sees it."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.api = client.CustomObjectsApi(cluster.api_client())
        self.namespace = namespace
        self.seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        version = None
        while not self.stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.api.list_namespaced_custom_object, "recops.dev", "v1alpha1",
                                           self.namespace, "finetunejobs", resource_version=version,
                                           timeout_seconds=5):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self.seen[obj["metadata"]["name"]].append(dict(obj.get("status") or {}))
                    if self.stop.is_set():
                        break
            except client.ApiException as error:
                if error.status != 410:
                    raise
                version = None

    def __enter__(self) -> StatusRecorder:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(15)


def metrics_or_none(op: Any) -> dict[str, float] | None:
    try:
        return dict(op.metrics())
    except OSError:
        return None


def leads(op: Any) -> bool:
    """What the replica's own /metrics says: recops_operator_leader 1."""
    return (metrics_or_none(op) or {}).get("recops_operator_leader") == 1


def jobs_by_owner(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    items = json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
    owners: dict[str, list[str]] = defaultdict(list)
    for job in items:
        for ref in job["metadata"].get("ownerReferences") or []:
            owners[ref["uid"]].append(job["metadata"]["uid"])
    return owners


def all_ftjs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return json.loads(cluster.kubectl("get", "finetunejobs", "-n", namespace, "-o", "json").stdout)["items"]


def test_sigkill_at_several_points_neither_duplicates_nor_rewinds(cluster: Cluster, crds: list[str], namespace: str,
                                                                  tmp_path: Path) -> None:
    install_rbac(cluster)
    failing = {f"ftj-{i:02d}" for i in range(0, 20, 5)}  # 4 of 20 fail twice (backoffLimit 1)
    manifests = []
    for i in range(20):
        name = f"ftj-{i:02d}"
        if name in failing:
            manifests.append(finetunejob(name, message=report(name, namespace, error="bad data", metrics={}),
                                         pod_labels={contracts.TEST_FAIL_LABEL: "true"}, backoffLimit=1))
        else:
            manifests.append(finetunejob(name, message=report(name, namespace)))

    kill_after = [0.2, 0.7, 1.5, 3.0, 5.0]  # seconds after each start's liveness: mid-reconcile at various stages
    kills: list[tuple[int, int]] = []  # (Jobs existing, FineTuneJobs finished) at each kill
    with StatusRecorder(cluster, namespace) as recorder:
        for round_, delay in enumerate(kill_after):
            with running_operator(cluster, tmp_path / f"run-{round_}", resync_seconds=1.0) as op:
                if round_ == 0:
                    cluster.apply(manifests, namespace)
                time.sleep(delay)
                op.process.send_signal(signal.SIGKILL)
                op.process.wait(10)
            states = [(o.get("status") or {}).get("phase") for o in all_ftjs(cluster, namespace)]
            kills.append((sum(len(v) for v in jobs_by_owner(cluster, namespace).values()),
                          sum(p in ("Succeeded", "Failed") for p in states)))
        # A last start runs everything to its end.
        with running_operator(cluster, tmp_path / "final", resync_seconds=1.0) as op:
            def finished() -> bool:
                return all((o.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                           for o in all_ftjs(cluster, namespace))
            wait_until(finished, 180, "all 20 FineTuneJobs to finish")
            time.sleep(3)  # a few resyncs: nothing may change any more
        time.sleep(1)

    print("(Jobs, finished FineTuneJobs) at each SIGKILL:", kills)
    # The kills hit the operator at different stages of the work, not only after it was all done.
    assert kills[0][1] < 20 and len(set(kills)) > 1, kills

    objs = {o["metadata"]["name"]: o for o in all_ftjs(cluster, namespace)}
    assert len(objs) == 20
    owners = jobs_by_owner(cluster, namespace)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    pods_per_ftj: dict[str, int] = defaultdict(int)
    for pod in pods:
        pods_per_ftj[pod["metadata"]["labels"].get("recops.dev/finetunejob", "")] += 1
    for name, obj in objs.items():
        uid = obj["metadata"]["uid"]
        assert len(owners[uid]) == 1, (name, owners[uid])  # exactly one Job per FineTuneJob
        status = obj["status"]
        conds = {t: (c["status"], c["reason"]) for t, c in conditions(obj).items()}
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        assert status["startTime"] <= status["completionTime"]
        if name in failing:
            assert status["phase"] == "Failed" and status["attempts"] == 2, (name, status)
            assert conds["Failed"] == ("True", "BackoffLimitExceeded") and conds["Complete"][0] == "False"
            assert "bad data" in status["message"]
            assert pods_per_ftj[name] == 2
        else:
            assert status["phase"] == "Succeeded" and status["attempts"] == 1, (name, status)
            assert conds["Complete"] == ("True", "Succeeded") and conds["Ready"] == ("True", "NoGate")
            assert status["model"]["version"] == f"{name}-test" and status["metrics"]["auc"] == 0.83
            assert pods_per_ftj[name] == 1  # never trained twice

        # Never rewound: the phase only moves forward (a retry may go back to Pending, never from an
        # end), attempts never shrink, startTime never changes, an end is never left.
        history = [s for s in recorder.seen[name] if s.get("phase")]
        assert history, name
        ended = False
        for before, after in itertools.pairwise(history):
            assert int(after.get("attempts") or 0) >= int(before.get("attempts") or 0), (name, [
                (s.get("phase"), s.get("attempts"), s.get("message")) for s in history])
            if before.get("startTime"):
                assert after.get("startTime") == before["startTime"], (name, history)
            if name not in failing:
                assert PHASE_RANK[after["phase"]] >= PHASE_RANK[before["phase"]], (name, history)
            ended = ended or before["phase"] in ("Succeeded", "Failed")
            if ended:
                assert after["phase"] == before["phase"], (name, history)
                assert after.get("completionTime") == before.get("completionTime"), (name, history)


def test_two_replicas_only_the_lease_holder_acts(cluster: Cluster, crds: list[str], namespace: str,
                                                 tmp_path: Path) -> None:
    install_rbac(cluster)
    lease = f"recops-operator-{namespace}"
    args = ["--leader-elect", "true", "--leader-election-namespace", OPERATOR_NAMESPACE,
            "--leader-election-lease", lease, "--leader-election-lease-seconds", "3"]

    def holder() -> str | None:
        res = cluster.kubectl("get", "lease", lease, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
        return json.loads(res.stdout)["spec"].get("holderIdentity") if res.returncode == 0 else None

    with running_operator(cluster, tmp_path / "a", resync_seconds=1.0, extra_args=args) as first:
        wait_until(lambda: leads(first), 30, "the leader's /metrics to say it leads")
        leader = wait_until(holder, 30, "a Lease holder")
        with running_operator(cluster, tmp_path / "b", resync_seconds=1.0, extra_args=args) as second:
            # The second replica stands by: alive, and its /metrics answers (a scrape target that is up)
            # saying it does not lead.
            assert "standing by" in wait_until(lambda: "standing by" in second.log_tail() and second.log_tail(), 30,
                                               "the second replica to stand by")
            cluster.apply(finetunejob("one", message=report("one", namespace)), namespace)
            assert kubectl_wait(cluster, namespace, "one", "Complete").returncode == 0
            assert second.metrics()["recops_operator_leader"] == 0
            assert not [k for k, v in second.metrics().items() if k.startswith("recops_operator_reconciles_total") and v]
            assert first.metrics()["recops_operator_leader"] == 1
            assert holder() == leader
            assert "FineTuneJob" not in second.log_tail(100000).split("standing by", 1)[1]

            # The leader dies without releasing the Lease: the standby takes over once it expires.
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
            wait_until(lambda: holder() not in (None, leader), 30, "the standby to take the Lease")
            wait_until(lambda: leads(second), 30, "the new leader's /metrics to say it leads")
            cluster.apply(finetunejob("two", message=report("two", namespace)), namespace)
            done = kubectl_wait(cluster, namespace, "two", "Complete")
            assert done.returncode == 0, done.stderr + second.log_tail()
            assert ftj(cluster, namespace, "two")["status"]["phase"] == "Succeeded"
            new_leader = holder()
        # Stopped cleanly, the leader hands the Lease back at once.
        assert new_leader is not None
    wait_until(lambda: holder() is None, 15, "the Lease to be released")
