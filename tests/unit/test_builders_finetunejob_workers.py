"""Builders of a multi-worker FineTuneJob: an Indexed Job plus a headless Service, torchrun's
rendezvous from the completion index and the rank-0 pod's stable hostname (as Kubeflow Trainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recops.api.finetunejob import FineTuneJob
from recops.builders import finetunejob as b
from recops.builders.common import BuilderSettings

UID = "0123abcd-4567-89ef-0123-456789abcdef"
SETTINGS = BuilderSettings(trainer_image="registry.local/recops-trainer:1")


def ftj(workers: int = 1, gpus: int = 0, name: str = "ranker", **spec: Any) -> FineTuneJob:
    return FineTuneJob.model_validate({
        "apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "shop", "uid": UID, "generation": 1},
        "spec": {"task": "click-through", "dataset": {"uri": "/data"}, "output": {"uri": "/models"},
                 "resources": {"workers": workers, "gpusPerWorker": gpus}, "backoffLimit": 3, **spec},
    })


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {m["kind"]: m for m in manifests}
    assert len(out) == len(manifests)
    return out


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_two_workers_are_an_indexed_job_with_a_headless_service() -> None:
    children = b.children(ftj(workers=2, gpus=4), SETTINGS)
    assert [m["kind"] for m in children][-2:] == ["Service", "Job"]  # the Service before the pods that use it
    kinds = by_kind(children)
    job, service = kinds["Job"], kinds["Service"]

    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    # backoffLimit counts per worker; one worker out of retries fails the Job.
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (3, 0) and "backoffLimit" not in spec
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == b.service_name("ranker")

    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"] == [{"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]
    # The Service selects exactly the trainer pods.
    pod_labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["ownerReferences"][0]["uid"] == UID

    (container,) = pod["containers"]
    assert container["command"] == ["torchrun"]
    assert container["args"][:3] == ["--no-python", "recops", "train"]
    assert container["args"][container["args"].index("--model-version") + 1] == "ranker-0123abcd"
    assert container["ports"] == [{"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"}]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4  # GPUs per worker

    env = env_of(job)
    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "4"
    assert env["PET_NODE_RANK"] == {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["PET_MASTER_ADDR"] == "ranker-0.ranker" and env["PET_MASTER_PORT"] == "29500"


def test_cpu_workers_run_one_process_each() -> None:
    env = env_of(by_kind(b.children(ftj(workers=3), SETTINGS))["Job"])
    assert env["PET_NNODES"] == "3" and env["PET_NPROC_PER_NODE"] == "1"


def test_one_worker_with_several_gpus_runs_torchrun_standalone() -> None:
    kinds = by_kind(b.children(ftj(workers=1, gpus=2), SETTINGS))
    assert "Service" not in kinds
    job = kinds["Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["torchrun"] and container["args"][:2] == ["--standalone", "--no-python"]
    env = env_of(job)
    assert env["PET_NPROC_PER_NODE"] == "2" and "PET_MASTER_ADDR" not in env
    assert "completionMode" not in job["spec"] and job["spec"]["backoffLimit"] == 3


def test_one_worker_one_gpu_is_the_plain_trainer_command() -> None:
    job = by_kind(b.children(ftj(workers=1, gpus=1), SETTINGS))["Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["recops"] and container["args"][0] == "train"
    assert not any(name.startswith("PET_") for name in env_of(job))
    assert "subdomain" not in job["spec"]["template"]["spec"]


def test_pod_template_cannot_replace_the_rendezvous() -> None:
    job = b.trainer_job(ftj(workers=2, podTemplate={"env": [{"name": "PET_MASTER_ADDR", "value": "evil"},
                                                            {"name": "EXTRA", "value": "1"}]}), SETTINGS)
    env = env_of(job)
    assert env["PET_MASTER_ADDR"] == "ranker-0.ranker" and env["EXTRA"] == "1"


def test_current_model_is_read_back_from_a_torchrun_job() -> None:
    job = b.trainer_job(ftj(workers=2), SETTINGS, current_model_uri="/models/shop/old-1")
    assert b.current_model_of(job) == "/models/shop/old-1"


def test_the_operator_may_apply_the_service_in_both_rbac_variants() -> None:
    rbac = Path(__file__).resolve().parents[2] / "config" / "rbac"
    for role_file in ("cluster/cluster_role.yaml", "namespaced/role.yaml"):
        rules = yaml.safe_load((rbac / role_file).read_text())["rules"]
        assert any("" in r["apiGroups"] and "services" in r["resources"] and "patch" in r["verbs"] for r in rules)
        # Dependency checks get Secrets and claims by name, and a rerun deletes a Job; the only
        # other Secret verb is create, for a RecModelDeployment's default feedback key.
        for resource, allowed in (("secrets", {"get", "create"}), ("persistentvolumeclaims", {"get"})):
            verbs = {v for r in rules if "" in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}
            assert verbs == allowed, (role_file, resource, verbs)
        assert any("batch" in r["apiGroups"] and "jobs" in r["resources"] and "delete" in r["verbs"] for r in rules)
