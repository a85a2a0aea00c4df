"""Progress reaches the FineTuneJob on the real control plane, through a ServiceAccount token that
may patch only that object's status (as the per-job Role of the Contracts allows)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.cluster import Cluster
from tests.workloads.train_support import RECOPS, job_manifest, model_dir, train_env, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]


def finetunejob(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"task": "click-through", "dataset": {"uri": "/data/events.jsonl"}, "output": {"uri": "/models"}},
    }


def progress_rbac(namespace: str, job: str, account: str) -> list[dict[str, Any]]:
    """The per-job Role of the Contracts: patch on finetunejobs/status of that one resourceName."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": account, "namespace": namespace},
         "rules": [{"apiGroups": ["recops.dev"], "resources": ["finetunejobs/status"], "resourceNames": [job],
                    "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": account, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]


@pytest.mark.cluster
def test_progress_patches_reach_only_the_trainers_own_finetunejob(
    cluster: Cluster, crds: list[str], namespace: str, tmp_path: Path, tiny_base: Path, shop_events: Path
) -> None:
    account = "mine-trainer"
    cluster.apply([finetunejob("mine", namespace), finetunejob("other", namespace)])
    kubeconfig = cluster.sa_kubeconfig(namespace, account, tmp_path / "trainer.kubeconfig")
    cluster.apply(progress_rbac(namespace, "mine", account))
    admin = client.CustomObjectsApi(cluster.api_client())
    # A status field the operator owns: the trainer's merge patches must leave it alone.
    admin.patch_namespaced_custom_object_status("recops.dev", "v1alpha1", namespace, "finetunejobs", "mine",
                                                {"status": {"phase": "Running", "attempts": 1}})

    def progress_of(name: str) -> dict[str, Any] | None:
        obj = admin.get_namespaced_custom_object("recops.dev", "v1alpha1", namespace, "finetunejobs", name)
        return (obj.get("status") or {}).get("progress")

    output = tmp_path / "models"
    config = write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, output,
                                                 training={"epochs": 4, "batchSize": 8}))
    env = train_env(KUBECONFIG=str(kubeconfig), RECOPS_FTJ_NAMESPACE=namespace, RECOPS_FTJ_NAME="mine",
                    RECOPS_PROGRESS_INTERVAL="0.5")
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            progress = progress_of("mine")
            if progress and (not seen or progress != seen[-1]):
                seen.append(progress)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run([*RECOPS, "train", "--config", str(config), "--termination-message-path",
                               str(tmp_path / "termination-log")], capture_output=True, text=True, env=env, timeout=600)
    finally:
        time.sleep(0.5)
        done.set()
        watcher.join(5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "progress: reporting to FineTuneJob" in proc.stderr
    assert "patching FineTuneJob" not in proc.stderr  # no failed patch
    assert (model_dir(output) / "recops.json").exists()

    final = progress_of("mine")
    assert final is not None
    assert final["step"] == final["totalSteps"] > 0 and final["percent"] == 100
    assert final["epoch"] == pytest.approx(4.0)
    assert final["updatedAt"].endswith("Z")
    intermediate = [p for p in seen if 0 < p["percent"] < 100]
    assert intermediate, seen  # it reported while training, not only at the end
    steps = [p["step"] for p in seen]
    assert steps == sorted(steps)
    mine = admin.get_namespaced_custom_object("recops.dev", "v1alpha1", namespace, "finetunejobs", "mine")
    assert mine["status"]["phase"] == "Running" and mine["status"]["attempts"] == 1  # only progress was patched
    assert progress_of("other") is None

    # The same token may not touch another FineTuneJob's status, nor this one's spec.
    as_trainer = client.CustomObjectsApi(cluster.api_client(kubeconfig))
    body = {"status": {"progress": {"step": 1, "totalSteps": 2, "epoch": 0.5, "percent": 50}}}
    with pytest.raises(client.ApiException) as forbidden:
        as_trainer.patch_namespaced_custom_object_status("recops.dev", "v1alpha1", namespace, "finetunejobs", "other",
                                                         body, _content_type="application/merge-patch+json")
    assert forbidden.value.status == 403
    with pytest.raises(client.ApiException) as forbidden_spec:
        as_trainer.patch_namespaced_custom_object("recops.dev", "v1alpha1", namespace, "finetunejobs", "mine",
                                                  {"spec": {"suspend": True}},
                                                  _content_type="application/merge-patch+json")
    assert forbidden_spec.value.status == 403
    assert progress_of("other") is None
    assert json.dumps(progress_of("mine")) == json.dumps(final)


def test_without_credentials_training_goes_on_and_says_so(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    """RECOPS_FTJ_* set but no kubeconfig and no in-cluster token: log-only progress, a complete model."""
    output = tmp_path / "models"
    config = write_config(tmp_path, job_manifest("relevance", tiny_base, shop_events, output))
    env = train_env(RECOPS_FTJ_NAMESPACE="shop", RECOPS_FTJ_NAME="ftj", HOME=str(tmp_path))
    proc = subprocess.run([*RECOPS, "train", "--config", str(config), "--termination-message-path",
                           str(tmp_path / "termination-log")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no Kubernetes credentials; reporting to the log only" in proc.stderr
    assert (model_dir(output) / "recops.json").exists()


@pytest.mark.parametrize("server", ["https://127.0.0.1:9"])  # nothing listens: every patch fails
def test_an_unreachable_api_server_never_stops_training(server: str, tmp_path: Path, tiny_base: Path,
                                                         shop_events: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "nope"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    output = tmp_path / "models"
    config = write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, output))
    env = train_env(KUBECONFIG=str(kubeconfig), RECOPS_FTJ_NAMESPACE="shop", RECOPS_FTJ_NAME="ftj",
                    RECOPS_PROGRESS_INTERVAL="0.2")
    proc = subprocess.run([*RECOPS, "train", "--config", str(config), "--termination-message-path",
                           str(tmp_path / "termination-log")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "progress: patching FineTuneJob shop/ftj failed" in proc.stderr
    assert (model_dir(output) / "recops.json").exists()
