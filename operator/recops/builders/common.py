"""Pieces every builder shares: names, labels, owner references, the restricted security
profile, environment from Secrets and volumes for pvc:// URIs.

Everything here is pure: plain dicts in, plain dicts (Kubernetes manifests) out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from recops import uris
from recops.api.common import API_VERSION, LocalObjectReference, PodTemplate, SecretKeySelector
from recops.api.contracts import MANAGED_BY, owner_label

APP_NAME = "recops"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Labels and annotations a user object may carry that must never reach owned objects: Argo CD
# would otherwise treat our children as its own and prune or diff them.
FORBIDDEN_LABEL_PREFIXES = ("argocd.argoproj.io/",)
FORBIDDEN_LABELS = ("app.kubernetes.io/instance",)

# Kubernetes caps label values (and so Job names, which become pod labels) at 63 characters.
MAX_NAME_LENGTH = 63

# Scratch space of the read-only-root pods.
TMP_DIR = "/tmp"
HF_HOME = "/var/cache/huggingface"
SCRATCH_DIR = "/var/lib/recops/scratch"
SCRATCH_ENV = "RECOPS_SCRATCH_DIR"  # not (yet) in the Contracts: where a workload may write big temporary files
RUN_AS_USER = 1000
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class BuilderSettings:
    """Operator-wide defaults the builders need (set from `recops operator` flags)."""

    trainer_image: str = "ghcr.io/recops/trainer:latest"
    # Trainers given GPUs (gpusPerWorker > 0): the CPU image would hold the GPUs and train in fp32 on the CPU.
    trainer_gpu_image: str = "ghcr.io/recops/trainer-cuda:latest"
    server_image: str = "ghcr.io/recops/server-torch:latest"  # any model (torch, or its ONNX form)
    server_onnx_image: str = "ghcr.io/recops/server:latest"  # no torch: models whose ONNX form is served
    image_pull_policy: str = "IfNotPresent"
    # ttlSecondsAfterFinished for trainer Jobs whose FineTuneJob does not set one (None: keep the Job).
    job_ttl_seconds: int | None = None


def child_name(owner_name: str, suffix: str = "", max_length: int = MAX_NAME_LENGTH) -> str:
    """`<owner>-<suffix>`, shortened with a stable hash when it would exceed `max_length`."""
    full = f"{owner_name}-{suffix}" if suffix else owner_name
    if len(full) <= max_length:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    tail = f"-{digest}-{suffix}" if suffix else f"-{digest}"
    return owner_name[: max_length - len(tail)].rstrip("-.") + tail


def is_forbidden_key(key: str) -> bool:
    return key in FORBIDDEN_LABELS or key.startswith(FORBIDDEN_LABEL_PREFIXES)


def without_forbidden(values: Mapping[str, str]) -> dict[str, str]:
    """Drop the keys that must never be copied from a user object (argocd.argoproj.io/*, instance)."""
    return {k: v for k, v in values.items() if not is_forbidden_key(k)}


def standard_labels(owner_kind: str, owner_name: str, component: str) -> dict[str, str]:
    """The labels of the Contracts that every owned object carries."""
    return {
        NAME_LABEL: APP_NAME,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        owner_label(owner_kind): label_value(owner_name),
    }


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters: long names get a hashed tail)."""
    return child_name(name)


def merge_user_labels(own: Mapping[str, str], user: Mapping[str, str]) -> dict[str, str]:
    """User labels (filtered) under ours: a user cannot override the labels recops selects on."""
    return {**without_forbidden(user), **own}


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller owner reference to a recops resource, so deleting it garbage-collects the child."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    name: str,
    owner: Mapping[str, Any],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": dict(labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# --- the restricted Pod Security profile ---------------------------------------------------------
def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_placement(template: PodTemplate, node_selector: Mapping[str, str],
                  tolerations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The optional pod spec fields that place and pull a pod (node selector, tolerations, affinity, image pull
    secrets), only those set: an unset field stays out of what is applied."""
    fields: dict[str, Any] = {}
    if node_selector:
        fields["nodeSelector"] = dict(node_selector)
    if tolerations := [dict(t) for t in tolerations]:
        fields["tolerations"] = tolerations
    if template.affinity:
        fields["affinity"] = dict(template.affinity)
    if template.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": s.name} for s in template.image_pull_secrets]
    return fields


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_resources(cpu: str | None, memory: str | None, gpus: int | str | None) -> dict[str, Any]:
    """A container's `resources`: cpu and memory as both request and limit, GPUs (an extended
    resource, whose request defaults to its limit) as a limit only; {} when nothing is set."""
    requests: dict[str, Any] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    limits = dict(requests)
    if gpus:
        limits[GPU_RESOURCE] = gpus
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def scratch_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts, env) for the writable places a read-only-root workload needs."""
    places = [("tmp", TMP_DIR), ("hf-cache", HF_HOME), ("scratch", SCRATCH_DIR)]
    volumes = [{"name": name, "emptyDir": {}} for name, _ in places]
    mounts = [{"name": name, "mountPath": path} for name, path in places]
    env = [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "TMPDIR", "value": TMP_DIR},
        {"name": "HF_HOME", "value": HF_HOME},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "HF_DATASETS_OFFLINE", "value": "1"},
        {"name": SCRATCH_ENV, "value": SCRATCH_DIR},
    ]
    return volumes, mounts, env


def template_collisions(template: PodTemplate, names: set[str], paths: set[str]) -> list[str]:
    """podTemplate volumes and mounts that collide with what recops adds (server-side apply refuses duplicate list
    keys, and a second mount at one path would shadow recops' own)."""
    found = []
    for index, volume in enumerate(template.volumes):
        if volume.get("name") in names:
            found.append(f"spec.podTemplate.volumes[{index}].name: {volume.get('name')!r} is used by recops")
    for index, mount in enumerate(template.volume_mounts):
        if mount.get("mountPath") in paths:
            found.append(f"spec.podTemplate.volumeMounts[{index}].mountPath: {mount.get('mountPath')!r} "
                         "is used by recops")
    return found


# --- Secrets -------------------------------------------------------------------------------------
def env_from_secrets(refs: Iterable[LocalObjectReference | None]) -> list[dict[str, Any]]:
    """envFrom entries for credential Secrets (AWS_* keys), each Secret once, in order."""
    seen: list[str] = []
    for ref in refs:
        if ref is not None and ref.name not in seen:
            seen.append(ref.name)
    return [{"secretRef": {"name": name}} for name in seen]


def secret_key_env(env_name: str, selector: SecretKeySelector) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": selector.name, "key": selector.key}}}


def referenced_secrets(refs: Iterable[LocalObjectReference | SecretKeySelector | None]) -> list[str]:
    names: list[str] = []
    for ref in refs:
        if ref is not None and ref.name not in names:
            names.append(ref.name)
    return names


# --- pvc:// URIs ---------------------------------------------------------------------------------
def pvc_volume_name(claim: str) -> str:
    return child_name("pvc", claim)


def pvc_volumes(uses: Iterable[tuple[str | None, bool]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) for the pvc:// URIs among `uses` = (uri, read_only) pairs.

    Each claim is mounted once at /mnt/pvc/CLAIM; read-write if any use writes to it.
    """
    read_only_by_claim: dict[str, bool] = {}
    for uri, read_only in uses:
        if not uri:
            continue
        parsed = uris.parse(uri)
        if parsed.scheme != "pvc" or parsed.claim is None:
            continue
        read_only_by_claim[parsed.claim] = read_only_by_claim.get(parsed.claim, True) and read_only
    volumes = [
        {"name": pvc_volume_name(claim), "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}
        for claim, ro in read_only_by_claim.items()
    ]
    mounts = [
        {"name": pvc_volume_name(claim), "mountPath": f"{uris.PVC_MOUNT_ROOT}/{claim}", "readOnly": ro}
        for claim, ro in read_only_by_claim.items()
    ]
    return volumes, mounts


def referenced_claims(uri_values: Iterable[str | None]) -> list[str]:
    claims: list[str] = []
    for uri in uri_values:
        if uri:
            parsed = uris.parse(uri)
            if parsed.claim and parsed.claim not in claims:
                claims.append(parsed.claim)
    return claims


def merge_env(
    base: list[dict[str, Any]], extra: list[dict[str, Any]], protected: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """`base` with `extra` entries replacing same-named ones and appended otherwise.

    Names in `protected` (the identity recops relies on) cannot be replaced.
    """
    protected_names = set(protected)
    extra_by_name = {e.get("name"): e for e in extra if e.get("name") not in protected_names}
    merged = [extra_by_name.pop(e["name"], e) for e in base]
    return merged + [e for e in extra if e.get("name") in extra_by_name]
