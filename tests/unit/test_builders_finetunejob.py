"""Builders of a FineTuneJob's children: pure functions, checked field by field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from recops.api import contracts
from recops.api.finetunejob import FineTuneJob
from recops.builders import common
from recops.builders import finetunejob as b
from recops.builders.common import BuilderSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UID = "0123abcd-4567-89ef-0123-456789abcdef"
SETTINGS = BuilderSettings(trainer_image="registry.local/recops-trainer:1",
                           trainer_gpu_image="registry.local/recops-trainer-cuda:1", job_ttl_seconds=600)


def ftj(**spec_changes: Any) -> FineTuneJob:
    manifest = yaml.safe_load((EXAMPLES / "finetunejob.yaml").read_text())
    manifest["metadata"].update(uid=UID, generation=1)
    manifest["metadata"]["labels"].update({"argocd.argoproj.io/instance": "shop", "app.kubernetes.io/instance": "x"})
    for path, value in spec_changes.items():
        node = manifest["spec"]
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return FineTuneJob.model_validate(manifest)


def minimal(**metadata: Any) -> FineTuneJob:
    return FineTuneJob.model_validate(
        {
            "apiVersion": "recops.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "tiny", "namespace": "ns", "uid": UID, **metadata},
            "spec": {"task": "relevance", "dataset": {"uri": "pvc://data/events"}, "output": {"uri": "pvc://models/out"}},
        }
    )


def trainer(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["trainer"]
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_child_is_owned_and_labelled_per_the_contracts() -> None:
    job = ftj()
    owned = b.children(job, SETTINGS)
    assert [m["kind"] for m in owned] == ["Job"]  # the config and progress need no object of their own
    assert [m["kind"] for m in b.children(ftj(resources__workers=2), SETTINGS)] == ["Service", "Job"]
    for manifest in owned:
        meta = manifest["metadata"]
        assert meta["namespace"] == "shop"
        assert meta["ownerReferences"] == [
            {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "name": "shop-ctr-2026-11-29", "uid": UID,
             "controller": True, "blockOwnerDeletion": True}
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "recops"
        assert labels["app.kubernetes.io/component"] == "trainer"
        assert labels["app.kubernetes.io/managed-by"] == "recops"
        assert labels["recops.dev/finetunejob"] == "shop-ctr-2026-11-29"
        assert labels[contracts.LINEAGE_LABEL] == "shop-ranker"
        assert not any(k.startswith("argocd.argoproj.io/") or k == "app.kubernetes.io/instance" for k in labels)
    pod_labels = owned[-1]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["recops.dev/finetunejob"] == "shop-ctr-2026-11-29"


def test_the_pod_carries_the_manifest_the_trainer_reads() -> None:
    template = b.trainer_job(ftj(), SETTINGS)["spec"]["template"]
    # The annotation becomes /etc/recops/job.yaml through the downward API.
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    mount = next(m for m in trainer({"spec": {"template": template}})["volumeMounts"] if m["mountPath"] == "/etc/recops")
    assert volumes[mount["name"]]["downwardAPI"] == {"items": [{"path": "job.yaml", "fieldRef": {
        "fieldPath": "metadata.annotations['recops.dev/job-config']"}}]}
    job_yaml = yaml.safe_load(template["metadata"]["annotations"][contracts.JOB_CONFIG_ANNOTATION])
    assert job_yaml["kind"] == "FineTuneJob" and job_yaml["metadata"]["uid"] == UID
    assert "argocd.argoproj.io/instance" not in job_yaml["metadata"]["labels"]
    # The trainer parses it back into the same spec.
    again = FineTuneJob.model_validate(job_yaml)
    assert again.spec == ftj().spec


def test_trainer_command_follows_the_contract() -> None:
    job = b.trainer_job(ftj(), SETTINGS)
    container = trainer(job)
    assert container["command"] == ["recops"]
    assert container["args"] == [
        "train", "--config", "/etc/recops/job.yaml", "--output", "s3://shop-models/recops",
        "--model-version", "shop-ctr-2026-11-29-0123abcd",
        "--termination-message-path", "/dev/termination-log",
    ]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"] == "registry.local/recops-trainer-cuda:1"  # the example asks for a GPU
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/recops"]["readOnly"] is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert "downwardAPI" in volumes[mounts["/etc/recops"]["name"]]


def test_current_model_is_passed_and_read_back() -> None:
    job = b.trainer_job(ftj(), SETTINGS, current_model_uri="s3://shop-models/recops/shop/old-1234abcd")
    args = trainer(job)["args"]
    assert args[args.index("--current-model") + 1] == "s3://shop-models/recops/shop/old-1234abcd"
    assert b.current_model_of(job) == "s3://shop-models/recops/shop/old-1234abcd"
    assert b.current_model_of(b.trainer_job(ftj(), SETTINGS)) is None


def test_resources_gpus_tolerations_and_scheduling() -> None:
    job = b.trainer_job(
        ftj(resources__nodeSelector={"pool": "gpu"}, resources__priorityClassName="training",
            resources__tolerations=[]),
        SETTINGS,
    )
    pod = job["spec"]["template"]["spec"]
    assert trainer(job)["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
    }
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["priorityClassName"] == "training"
    # A GPU pod tolerates the GPU taint even when the spec lists no toleration.
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cpu_job_has_no_gpu_and_no_toleration() -> None:
    job = b.trainer_job(minimal(), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert "resources" not in trainer(job)
    assert "tolerations" not in pod and "nodeSelector" not in pod


def test_job_fields_backoff_deadline_suspend_ttl() -> None:
    spec = b.trainer_job(ftj(suspend=True, ttlSecondsAfterFinished=30), SETTINGS)["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["suspend"] is True
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert b.job_ttl_seconds(ftj(ttlSecondsAfterFinished=30), SETTINGS) == 30  # set once the outcome is recorded
    default = b.trainer_job(minimal(), SETTINGS)["spec"]
    assert default["suspend"] is False and "activeDeadlineSeconds" not in default
    assert b.job_ttl_seconds(minimal(), SETTINGS) == 600
    assert b.job_ttl_seconds(minimal(), BuilderSettings()) is None


def test_kueue_queue_label_and_no_suspend() -> None:
    job = b.trainer_job(ftj(resources__queueName="team-a", suspend=True), SETTINGS)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "suspend" not in job["spec"]


def test_restricted_pod_security_profile() -> None:
    job = b.trainer_job(ftj(), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = trainer(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every writable place is an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in trainer(job)["volumeMounts"]}
    for path in ("/tmp", common.HF_HOME, common.SCRATCH_DIR):
        assert volumes[mounts[path]] == {"name": mounts[path], "emptyDir": {}}
    env = env_of(trainer(job))
    assert env["HF_HOME"] == common.HF_HOME and env["HOME"] == "/tmp" and env["HF_HUB_OFFLINE"] == "1"


def test_pvc_uris_are_mounted_read_only_for_inputs_and_read_write_for_output() -> None:
    job = b.trainer_job(minimal(), SETTINGS, current_model_uri="pvc://models/out/ns/old-1")
    pod = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims["data"]["persistentVolumeClaim"]["readOnly"] is True
    # The output claim is also read (the current model) but written: read-write wins.
    assert claims["models"]["persistentVolumeClaim"]["readOnly"] is False
    mounts = {m["mountPath"]: m for m in trainer(job)["volumeMounts"]}
    assert mounts["/mnt/pvc/data"]["readOnly"] is True
    assert mounts["/mnt/pvc/models"]["readOnly"] is False
    assert b.claims(minimal()) == ["data", "models"]


def test_secrets_become_env_from_and_the_salt_a_secret_key_ref() -> None:
    container = trainer(b.trainer_job(ftj(), SETTINGS))
    assert container["envFrom"] == [{"secretRef": {"name": "shop-s3"}}]  # each Secret once
    env = env_of(container)
    assert env["RECOPS_PSEUDONYM_SALT"] == {"secretKeyRef": {"name": "shop-pseudonym-salt", "key": "salt"}}
    assert env["RECOPS_FTJ_NAMESPACE"] == "shop" and env["RECOPS_FTJ_NAME"] == "shop-ctr-2026-11-29"
    assert b.credential_secrets(ftj()) == ["shop-s3", "shop-pseudonym-salt"]
    assert "envFrom" not in trainer(b.trainer_job(minimal(), SETTINGS))


def test_pod_template_overrides() -> None:
    spec = ftj(podTemplate={
        "labels": {"team": "search", "recops.dev/finetunejob": "hijack", "argocd.argoproj.io/x": "y",
                   contracts.TEST_FAIL_LABEL: "true"},
        "annotations": {contracts.TEST_EXIT_CODE_ANNOTATION: "3", contracts.JOB_CONFIG_ANNOTATION: "{}"},
        "imagePullSecrets": [{"name": "regcred"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "env": [{"name": "EXTRA", "value": "1"}, {"name": "RECOPS_FTJ_NAME", "value": "other"},
                {"name": "HF_HUB_OFFLINE", "value": "0"}],
        "volumes": [{"name": "extra", "emptyDir": {}}],
        "volumeMounts": [{"name": "extra", "mountPath": "/extra"}],
    })
    job = b.trainer_job(spec, SETTINGS)
    template = job["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"]["labels"]
    assert labels["team"] == "search" and labels[contracts.TEST_FAIL_LABEL] == "true"
    assert labels["recops.dev/finetunejob"] == "shop-ctr-2026-11-29"  # ours win
    assert "argocd.argoproj.io/x" not in labels
    annotations = template["metadata"]["annotations"]
    assert set(annotations) == {contracts.TEST_EXIT_CODE_ANNOTATION, contracts.JOB_CONFIG_ANNOTATION}
    assert annotations[contracts.TEST_EXIT_CODE_ANNOTATION] == "3"
    assert annotations[contracts.JOB_CONFIG_ANNOTATION] == b.job_config(spec)  # ours win
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert "nodeAffinity" in pod["affinity"]
    env = env_of(trainer(job))
    assert env["EXTRA"] == "1" and env["HF_HUB_OFFLINE"] == "0"
    assert env["RECOPS_FTJ_NAME"] == "shop-ctr-2026-11-29"  # the trainer's identity cannot be replaced
    assert {"name": "extra", "emptyDir": {}} in pod["volumes"]
    assert {"name": "extra", "mountPath": "/extra"} in trainer(job)["volumeMounts"]


def test_builders_never_set_test_hooks() -> None:
    job = b.trainer_job(ftj(), SETTINGS)
    text = yaml.safe_dump(job)
    for hook in (contracts.TEST_FAIL_LABEL, contracts.TEST_EXIT_CODE_ANNOTATION,
                 contracts.TEST_TERMINATION_MESSAGE_ANNOTATION):
        assert hook not in text


def test_the_trainer_holds_no_api_credentials() -> None:
    # Progress travels in the log (the operator reads it): the trainer needs no token, so it gets none.
    pod = b.trainer_job(ftj(), SETTINGS)["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod  # the namespace's default
    assert pod["automountServiceAccountToken"] is False


def test_a_user_named_service_account_runs_the_trainer_and_gains_nothing() -> None:
    job = ftj(podTemplate__serviceAccountName="shop-trainer-irsa")
    assert [m["kind"] for m in b.children(job, SETTINGS)] == ["Job"]  # no Role or RoleBinding for it
    pod = b.trainer_job(job, SETTINGS)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "shop-trainer-irsa"
    assert "automountServiceAccountToken" not in pod  # the ServiceAccount's own setting decides (workload identity)
    with pytest.raises(ValueError, match="serviceAccountName"):
        ftj(podTemplate__serviceAccountName="Not_A_Name")


def test_the_job_gets_no_finalizer_and_no_ttl_until_its_outcome_is_recorded() -> None:
    # No finalizer: nothing stays stuck when the operator is uninstalled. No TTL yet: the TTL controller
    # must not delete the Job (and its pods' termination messages) before the outcome is read.
    job = b.trainer_job(ftj(ttlSecondsAfterFinished=0), SETTINGS)
    assert "finalizers" not in job["metadata"] and "finalizers" not in job["spec"]["template"]["metadata"]
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert b.job_ttl_seconds(ftj(ttlSecondsAfterFinished=0), SETTINGS) == 0
    assert job["metadata"]["annotations"][b.MODEL_VERSION_ANNOTATION] == "shop-ctr-2026-11-29-0123abcd"


@pytest.mark.parametrize("length", [10, 63, 64, 200, 253])
def test_long_names_are_shortened_stably_to_valid_names(length: int) -> None:
    name = ("a" * (length - 1)) + "z"
    for built in (b.job_name(name), b.service_name(name), common.label_value(name)):
        assert len(built) <= 63
        assert built[0].isalnum() and built[-1].isalnum()
    assert b.job_name(name) == b.job_name(name)
    if length > 63:
        assert b.job_name(name) != b.job_name(name[:-1] + "y")


def test_builders_are_pure() -> None:
    job = ftj()
    before = copy.deepcopy(job.model_dump())
    assert b.children(job, SETTINGS) == b.children(job, SETTINGS)
    assert job.model_dump() == before


def test_expected_model_uri() -> None:
    assert b.expected_model_uri(ftj()) == "s3://shop-models/recops/shop/shop-ctr-2026-11-29-0123abcd"


def test_operator_rbac_covers_what_the_builders_apply() -> None:
    """Every kind the FineTuneJob controller server-side applies is allowed to the operator, in both variants, and
    nothing more is needed: no RBAC objects, ConfigMaps or ServiceAccounts, no patch on pods or FineTuneJobs."""
    rbac = Path(__file__).resolve().parents[2] / "config" / "rbac"
    plural = {"Service": "services", "Job": "jobs"}
    for role_file in ("cluster/cluster_role.yaml", "namespaced/role.yaml"):
        rules = yaml.safe_load((rbac / role_file).read_text())["rules"]

        def allowed(group: str, resource: str, verb: str, rules: list[dict[str, Any]] = rules) -> bool:
            return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)

        for manifest in b.children(ftj(resources__workers=2), SETTINGS):
            group = manifest["apiVersion"].rpartition("/")[0]
            resource = plural[manifest["kind"]]
            assert allowed(group, resource, "patch") and allowed(group, resource, "get"), (role_file, resource)
        assert not any(v in r["verbs"] for r in rules for v in ("escalate", "bind", "*"))
        for resource in ("roles", "rolebindings"):
            assert not any(allowed("rbac.authorization.k8s.io", resource, verb) for verb in ("create", "patch"))
        for resource in ("configmaps", "serviceaccounts"):
            assert not any(allowed("", resource, verb) for verb in ("create", "patch"))
        assert allowed("", "pods/log", "get") and not allowed("recops.dev", "finetunejobs", "patch")
        assert allowed("", "pods", "watch") and not allowed("", "pods", "patch") and allowed("batch", "jobs", "watch")
        assert allowed("recops.dev", "finetunejobs", "watch") and allowed("recops.dev", "finetunejobs/status", "patch")


def test_what_the_builders_cannot_build_is_named() -> None:
    assert b.problems(ftj()) == []
    assert b.problems(ftj(resources__workers=2)) == []
    # Many workers need pod hostnames <job>-<index>: DNS labels.
    dotted = minimal(name="shop.ranker")
    dotted.spec.resources.workers = 2
    (problem,) = b.problems(dotted)
    assert problem.startswith("metadata.name:") and "'shop.ranker-1'" in problem
    long = minimal(name="a" * 62)
    long.spec.resources.workers = 12
    assert b.problems(long) and not b.problems(minimal(name="a" * 62))
    # podTemplate additions that would collide with the trainer's own volumes or mounts.
    clash = minimal()
    clash.spec.pod_template.volumes = [{"name": "job-config", "configMap": {"name": "mine"}}, {"name": "ok"}]
    clash.spec.pod_template.volume_mounts = [{"name": "ok", "mountPath": "/mnt/pvc/data"}]
    assert b.problems(clash) == [
        "spec.podTemplate.volumes[0].name: 'job-config' is used by recops",
        "spec.podTemplate.volumeMounts[0].mountPath: '/mnt/pvc/data' is used by recops",
    ]


@pytest.mark.parametrize(("resources", "image"), [
    ({"gpusPerWorker": 0}, "registry.local/recops-trainer:1"),
    ({"gpusPerWorker": 2}, "registry.local/recops-trainer-cuda:1"),
    ({"gpusPerWorker": 2, "image": "mine/trainer:7"}, "mine/trainer:7"),
    ({"gpusPerWorker": 0, "image": "mine/trainer:7"}, "mine/trainer:7"),
])
def test_a_trainer_given_gpus_defaults_to_the_cuda_image(resources: dict[str, Any], image: str) -> None:
    """The CPU image would hold the GPUs and train in fp32 on the CPU; a FineTuneJob's own image always wins."""
    job = ftj(resources=resources)
    assert trainer(b.trainer_job(job, SETTINGS))["image"] == image
    assert b.trainer_image(job, SETTINGS) == image
