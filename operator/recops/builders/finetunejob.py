"""The objects a FineTuneJob owns: the trainer Job (and the headless Service of a multi-worker job).

The job itself travels in the pod (an annotation, mounted as a file by the downward API) and the
trainer reports progress in its log, which the operator reads: no ConfigMap, ServiceAccount, Role
or RoleBinding per job, so a FineTuneJob costs one create where it cost five.

Pure functions of the FineTuneJob (model + metadata) and the operator's `BuilderSettings`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from recops import uris
from recops.api import contracts
from recops.api.common import API_VERSION, GROUP
from recops.api.finetunejob import KIND, FineTuneJob
from recops.builders.common import (
    COMPONENT_LABEL,
    GPU_RESOURCE,
    BuilderSettings,
    child_name,
    container_resources,
    container_security_context,
    env_from_secrets,
    label_value,
    merge_env,
    merge_user_labels,
    object_meta,
    pod_placement,
    pod_security_context,
    pvc_volumes,
    referenced_claims,
    referenced_secrets,
    scratch_volumes,
    secret_key_env,
    standard_labels,
    template_collisions,
    without_forbidden,
)

COMPONENT = "trainer"
MAX_HOSTNAME_LENGTH = 63
CONTAINER_NAME = "trainer"
CONFIG_DIR, CONFIG_KEY = contracts.JOB_CONFIG_PATH.rsplit("/", 1)
CONFIG_VOLUME = "job-config"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MODEL_VERSION_ANNOTATION = f"{GROUP}/model-version"
CURRENT_MODEL_FLAG = "--current-model"
# Many workers (as Kubeflow Trainer runs torchrun): an Indexed Job whose pods get stable hostnames
# <job>-<index> under a headless Service; torchrun reads its rendezvous from PET_* variables.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
RENDEZVOUS_PORT = 29500
RENDEZVOUS_PORT_NAME = "rendezvous"
ENV_NNODES = "PET_NNODES"
ENV_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
ENV_NODE_RANK = "PET_NODE_RANK"
ENV_MASTER_ADDR = "PET_MASTER_ADDR"
ENV_MASTER_PORT = "PET_MASTER_PORT"
TORCHRUN_ENV = (ENV_NNODES, ENV_NPROC_PER_NODE, ENV_NODE_RANK, ENV_MASTER_ADDR, ENV_MASTER_PORT)
# The trainer's identity and rendezvous: a podTemplate cannot replace these.
PROTECTED_ENV = (contracts.ENV_FTJ_NAMESPACE, contracts.ENV_FTJ_NAME, contracts.ENV_PSEUDONYM_SALT, *TORCHRUN_ENV)
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def owner_body(ftj: FineTuneJob) -> dict[str, Any]:
    return {"apiVersion": ftj.api_version, "kind": ftj.kind, "metadata": ftj.metadata}


def name_of(ftj: FineTuneJob) -> str:
    return str(ftj.metadata["name"])


def namespace_of(ftj: FineTuneJob) -> str:
    return str(ftj.metadata["namespace"])


def model_version(ftj: FineTuneJob) -> str:
    return contracts.model_version(name_of(ftj), str(ftj.metadata["uid"]))


def expected_model_uri(ftj: FineTuneJob) -> str:
    """Where the Contracts say the trainer writes: <output>/<namespace>/<model-version>."""
    return f"{ftj.spec.output.uri.rstrip('/')}/{namespace_of(ftj)}/{model_version(ftj)}"


def problems(ftj: FineTuneJob) -> list[str]:
    """What the schema lets through but these builders cannot build (an InvalidSpec for the user)."""
    found = []
    workers = ftj.spec.resources.workers
    if workers > 1:
        # Pod hostnames <job>-<index> and the Service name must be DNS labels.
        longest_hostname = f"{job_name(name_of(ftj))}-{workers - 1}"
        if not DNS_LABEL.match(job_name(name_of(ftj))) or len(longest_hostname) > MAX_HOSTNAME_LENGTH:
            found.append(
                f"metadata.name: with {workers} workers the pods are named {longest_hostname!r}, which must be a "
                f"DNS label (lower case letters, digits and '-', starting with a letter, at most "
                f"{MAX_HOSTNAME_LENGTH} characters)"
            )
    found += template_collisions(ftj.spec.pod_template, *_own_volumes(ftj))
    for field, uri in (("spec.baseModel.uri", ftj.spec.base_model.uri), ("spec.dataset.uri", ftj.spec.dataset.uri),
                       ("spec.output.uri", ftj.spec.output.uri)):
        if uri:
            try:
                uris.parse(uri)
            except uris.UriError as error:
                found.append(f"{field}: {error}")
    return found


# --- names -------------------------------------------------------------------------------------
def job_name(ftj_name: str) -> str:
    return child_name(ftj_name)


def service_name(ftj_name: str) -> str:
    """The headless Service of a multi-worker job: named as its Job, as Kubeflow Trainer does."""
    return job_name(ftj_name)


def labels(ftj: FineTuneJob) -> dict[str, str]:
    own = standard_labels(KIND, name_of(ftj), COMPONENT)
    lineage = ftj.metadata.get("labels", {}).get(contracts.LINEAGE_LABEL)
    if lineage:
        own[contracts.LINEAGE_LABEL] = lineage
    return own


def selector_labels(ftj_name: str) -> dict[str, str]:
    """What the operator selects a FineTuneJob's children (and the trainer pods) by."""
    return {contracts.owner_label(KIND): label_value(ftj_name)}


# --- the job, as the trainer reads it ----------------------------------------------------------
def job_manifest(ftj: FineTuneJob) -> dict[str, Any]:
    """The FineTuneJob as the trainer reads it from /etc/recops/job.yaml: identity and spec."""
    meta = ftj.metadata
    slim_meta: dict[str, Any] = {k: meta[k] for k in ("name", "namespace", "uid", "generation") if k in meta}
    if meta.get("labels"):
        slim_meta["labels"] = without_forbidden(meta["labels"])
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": slim_meta, "spec": ftj.spec.to_api()}


def job_config(ftj: FineTuneJob) -> str:
    """job_manifest as the pod annotation's value: compact JSON (YAML reads it)."""
    return json.dumps(job_manifest(ftj), separators=(",", ":"), sort_keys=True)


def trainer_service_account(ftj: FineTuneJob) -> str | None:
    """The user's ServiceAccount (workload identity), else None: the namespace's default, without a token."""
    return ftj.spec.pod_template.service_account_name


# --- the trainer Job -----------------------------------------------------------------------------
def trainer_args(ftj: FineTuneJob, current_model_uri: str | None) -> list[str]:
    args = [
        "train",
        "--config", contracts.JOB_CONFIG_PATH,
        "--output", ftj.spec.output.uri,
        "--model-version", model_version(ftj),
    ]
    if current_model_uri:
        args += [CURRENT_MODEL_FLAG, current_model_uri]
    args += ["--termination-message-path", contracts.TERMINATION_MESSAGE_PATH]
    return args


def distributed(ftj: FineTuneJob) -> bool:
    """Whether the trainer runs under torchrun: more than one worker or more than one GPU per worker."""
    res = ftj.spec.resources
    return res.workers > 1 or res.gpus_per_worker > 1


def trainer_command(ftj: FineTuneJob, current_model_uri: str | None) -> tuple[list[str], list[str]]:
    """(command, args): `recops train ...`, under torchrun when the job is distributed."""
    args = trainer_args(ftj, current_model_uri)
    if not distributed(ftj):
        return ["recops"], args
    rendezvous = [] if ftj.spec.resources.workers > 1 else ["--standalone"]
    # torchrun takes its other settings from the PET_* variables (torchrun_env).
    return ["torchrun"], [*rendezvous, "--no-python", "recops", *args]


def torchrun_env(ftj: FineTuneJob) -> list[dict[str, Any]]:
    """torchrun's settings: nodes, processes per node (GPUs or 1), node rank and rendezvous address.

    Node rank = the pod's completion index; the rendezvous host = the rank-0 pod's stable hostname.
    """
    if not distributed(ftj):
        return []
    res = ftj.spec.resources
    env: list[dict[str, Any]] = [
        {"name": ENV_NNODES, "value": str(res.workers)},
        {"name": ENV_NPROC_PER_NODE, "value": str(max(res.gpus_per_worker, 1))},
    ]
    if res.workers > 1:
        name = name_of(ftj)
        env += [
            {"name": ENV_NODE_RANK, "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}},
            {"name": ENV_MASTER_ADDR, "value": f"{job_name(name)}-0.{service_name(name)}"},
            {"name": ENV_MASTER_PORT, "value": str(RENDEZVOUS_PORT)},
        ]
    return env


def headless_service(ftj: FineTuneJob) -> dict[str, Any]:
    """The Service that gives the workers of a multi-worker job DNS names (<job>-<index>.<service>)."""
    name = name_of(ftj)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(service_name(name), owner_body(ftj), labels(ftj)),
        "spec": {
            "clusterIP": "None",
            "selector": {**selector_labels(name), COMPONENT_LABEL: COMPONENT},
            # torchrun's rendezvous happens before any worker is ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": RENDEZVOUS_PORT_NAME, "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT,
                       "protocol": "TCP"}],
        },
    }


def current_model_of(job: dict[str, Any]) -> str | None:
    """The --current-model an existing trainer Job was created with (its template is immutable)."""
    for container in job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if container.get("name") != CONTAINER_NAME:
            continue
        args = list(container.get("args") or [])
        if CURRENT_MODEL_FLAG in args:
            index = args.index(CURRENT_MODEL_FLAG)
            return str(args[index + 1]) if index + 1 < len(args) else None
    return None


def _tolerations(ftj: FineTuneJob) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in ftj.spec.resources.tolerations]
    # GPU nodes carry the nvidia.com/gpu taint; a pod asking for GPUs tolerates it (as the
    # ExtendedResourceToleration admission plugin would).
    if ftj.spec.resources.gpus_per_worker and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _env(ftj: FineTuneJob, scratch_env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = ftj.spec
    env: list[dict[str, Any]] = [
        {"name": contracts.ENV_FTJ_NAMESPACE, "value": namespace_of(ftj)},
        {"name": contracts.ENV_FTJ_NAME, "value": name_of(ftj)},
        *scratch_env,
    ]
    salt = spec.dataset.pseudonymisation.salt_secret_ref
    if spec.dataset.pseudonymisation.enabled and salt is not None:
        env.append(secret_key_env(contracts.ENV_PSEUDONYM_SALT, salt))
    return merge_env(env, [dict(e) for e in spec.pod_template.env], protected=PROTECTED_ENV)


def _uri_uses(ftj: FineTuneJob, current_model_uri: str | None) -> list[tuple[str | None, bool]]:
    """(uri, read_only) of every URI the trainer touches."""
    spec = ftj.spec
    return [
        (spec.base_model.uri, True),
        (spec.dataset.uri, True),
        (current_model_uri, True),
        (spec.output.uri, False),
    ]


def _own_volumes(ftj: FineTuneJob) -> tuple[set[str], set[str]]:
    """Names and mount paths of the volumes recops adds to a trainer pod."""
    scratch_vols, scratch_mounts, _ = scratch_volumes()
    try:
        claim_vols, claim_mounts = pvc_volumes(_uri_uses(ftj, None))
    except uris.UriError:  # reported as its own problem
        claim_vols, claim_mounts = [], []
    names = {CONFIG_VOLUME, *(v["name"] for v in scratch_vols + claim_vols)}
    paths = {CONFIG_DIR, *(m["mountPath"] for m in scratch_mounts + claim_mounts)}
    return names, paths


def credential_secrets(ftj: FineTuneJob) -> list[str]:
    """Names of the Secrets the trainer pod needs (for the missing-dependency check)."""
    spec = ftj.spec
    salt = spec.dataset.pseudonymisation.salt_secret_ref if spec.dataset.pseudonymisation.enabled else None
    return referenced_secrets(
        [spec.base_model.credentials_secret_ref, spec.dataset.credentials_secret_ref,
         spec.output.credentials_secret_ref, salt]
    )


def claims(ftj: FineTuneJob, current_model_uri: str | None = None) -> list[str]:
    """Names of the PVCs the trainer pod mounts (for the missing-dependency check)."""
    return referenced_claims(uri for uri, _ in _uri_uses(ftj, current_model_uri))


def job_ttl_seconds(ftj: FineTuneJob, settings: BuilderSettings) -> int | None:
    """The Job's ttlSecondsAfterFinished. The operator sets it only once the Job's outcome is recorded in the
    FineTuneJob's status: a TTL (even 0) can then never delete the Job and its pods, whose termination message is
    the outcome, before it is read. No finalizer is needed for that, so nothing is left stuck when the operator
    is uninstalled."""
    spec = ftj.spec
    return spec.ttl_seconds_after_finished if spec.ttl_seconds_after_finished is not None else settings.job_ttl_seconds


def trainer_image(ftj: FineTuneJob, settings: BuilderSettings) -> str:
    """The FineTuneJob's image, else the operator's default for its resources: the CUDA one when it asks for GPUs."""
    res = ftj.spec.resources
    if res.image:
        return res.image
    return settings.trainer_gpu_image if res.gpus_per_worker > 0 else settings.trainer_image


def _trainer_container(ftj: FineTuneJob, settings: BuilderSettings, current_model_uri: str | None,
                       env: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    spec = ftj.spec
    res = spec.resources
    command, args = trainer_command(ftj, current_model_uri)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": trainer_image(ftj, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": contracts.TERMINATION_MESSAGE_PATH,
        # The trainer's JSON when it wrote one, else the tail of its log: either explains a failure.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from := env_from_secrets([spec.base_model.credentials_secret_ref, spec.dataset.credentials_secret_ref,
                                     spec.output.credentials_secret_ref]):
        container["envFrom"] = env_from
    if resources := container_resources(res.cpu, res.memory, res.gpus_per_worker):
        container["resources"] = resources
    if res.workers > 1:
        container["ports"] = [{"name": RENDEZVOUS_PORT_NAME, "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    return container


def _trainer_pod_spec(ftj: FineTuneJob, settings: BuilderSettings, current_model_uri: str | None) -> dict[str, Any]:
    res = ftj.spec.resources
    pod_template = ftj.spec.pod_template
    scratch_vols, scratch_mounts, scratch_env = scratch_volumes()
    claim_vols, claim_mounts = pvc_volumes(_uri_uses(ftj, current_model_uri))
    # The job as a file: the pod's own annotation through the downward API (no ConfigMap to create).
    config_volume = {"name": CONFIG_VOLUME, "downwardAPI": {"items": [{
        "path": CONFIG_KEY, "fieldRef": {"fieldPath": f"metadata.annotations['{contracts.JOB_CONFIG_ANNOTATION}']"}}]}}
    config_mount = {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}
    container = _trainer_container(
        ftj, settings, current_model_uri, _env(ftj, scratch_env + torchrun_env(ftj)),
        [config_mount, *scratch_mounts, *claim_mounts, *(dict(m) for m in pod_template.volume_mounts)])
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [config_volume, *scratch_vols, *claim_vols, *(dict(v) for v in pod_template.volumes)],
        **pod_placement(pod_template, res.node_selector, _tolerations(ftj)),
    }
    if account := trainer_service_account(ftj):
        pod_spec["serviceAccountName"] = account  # its own automount setting decides about a token
    else:
        pod_spec["automountServiceAccountToken"] = False  # the trainer calls no API: it holds no credentials
    if res.workers > 1:
        # With the Indexed Job's hostname <job>-<index>, <job>-0.<service> resolves to the rank-0 pod.
        pod_spec["subdomain"] = service_name(name_of(ftj))
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    return pod_spec


def trainer_job(ftj: FineTuneJob, settings: BuilderSettings, current_model_uri: str | None = None) -> dict[str, Any]:
    spec = ftj.spec
    res = spec.resources
    own_labels = labels(ftj)
    pod_meta: dict[str, Any] = {"labels": merge_user_labels(own_labels, spec.pod_template.labels)}
    pod_meta["annotations"] = {**without_forbidden(spec.pod_template.annotations),
                               contracts.JOB_CONFIG_ANNOTATION: job_config(ftj)}

    job_labels = dict(own_labels)
    job_spec: dict[str, Any] = {}
    if res.workers > 1:
        # One pod per worker, each with its completion index (= torchrun's node rank). A failed worker
        # is retried backoffLimit times (its peers fail with it and are retried too); once one worker
        # has no retries left, the whole Job fails.
        job_spec.update(completionMode="Indexed", completions=res.workers, parallelism=res.workers,
                        backoffLimitPerIndex=spec.backoff_limit, maxFailedIndexes=0)
    else:
        job_spec["backoffLimit"] = spec.backoff_limit
    if res.queue_name:
        # Kueue owns `suspend` of a queued Job: recops leaves the field out of what it applies.
        job_labels[KUEUE_QUEUE_LABEL] = res.queue_name
    else:
        job_spec["suspend"] = spec.suspend
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    job_spec["template"] = {"metadata": pod_meta, "spec": _trainer_pod_spec(ftj, settings, current_model_uri)}

    metadata = object_meta(
        job_name(name_of(ftj)), owner_body(ftj), job_labels, annotations={MODEL_VERSION_ANNOTATION: model_version(ftj)}
    )
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def children(ftj: FineTuneJob, settings: BuilderSettings, current_model_uri: str | None = None) -> list[dict[str, Any]]:
    """Everything a FineTuneJob owns, in the order to apply it (the Job last: its workers' rendezvous needs the
    Service)."""
    workers_service = [headless_service(ftj)] if ftj.spec.resources.workers > 1 else []
    return [*workers_service, trainer_job(ftj, settings, current_model_uri)]
