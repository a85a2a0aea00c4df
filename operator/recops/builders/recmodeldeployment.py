"""The objects a RecModelDeployment owns: a Deployment per track (stable, and a canary during a
rollout) running `recops serve`, one Service selecting both tracks, an HPA when `autoscaling`
is set, a PodDisruptionBudget when more than one replica may run, and the default
feedback-key Secret when the spec names none; also a namespace's shared feedback-key Secret,
which no deployment owns.

Pure functions of the RecModelDeployment (model + metadata), the model each track serves and
the operator's `BuilderSettings`. No I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from recops import uris
from recops.api import contracts
from recops.api.common import GROUP, LocalObjectReference, SecretKeySelector
from recops.api.recmodeldeployment import KIND, RecModelDeployment
from recops.builders.common import (
    APP_NAME,
    COMPONENT_LABEL,
    MANAGED_BY_LABEL,
    NAME_LABEL,
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
    scratch_volumes,
    secret_key_env,
    standard_labels,
    template_collisions,
    without_forbidden,
)

COMPONENT = "server"
CONTAINER_NAME = "server"
FETCH_CONTAINER_NAME = "fetch-model"
TRACK_LABEL = f"{GROUP}/track"
MODEL_VERSION_LABEL = f"{GROUP}/model-version"
HTTP_PORT = 8080
SERVICE_PORT = 80
# s3:// models are downloaded by an init container into this emptyDir, mounted read-only in the server.
MODEL_VOLUME = "model"
MODEL_DIR = "/var/lib/recops/model"
# The default feedback-key Secret (created once by the operator, owned by the RecModelDeployment).
FEEDBACK_KEY_KEY = "feedbackKey"
PSEUDONYM_SALT_KEY = "pseudonymSalt"  # optional key of the same Secret: the event log's pseudonymisation salt
SHARED_FEEDBACK_KEY_COMPONENT = "feedback-key"
# The server drains for at most --drain-timeout (30s by default); the kubelet must wait longer.
DRAIN_TIMEOUT_SECONDS = 30
TERMINATION_GRACE_SECONDS = DRAIN_TIMEOUT_SECONDS + 15
PROTECTED_ENV = (
    contracts.ENV_NAMESPACE, contracts.ENV_DEPLOYMENT, contracts.ENV_TRACK, contracts.ENV_MODEL_VERSION,
    contracts.ENV_POD_NAME, contracts.ENV_FEEDBACK_KEY,
)
TRACKS = ("stable", "canary")


@dataclass(frozen=True)
class TrackModel:
    """The model one track serves."""

    uri: str
    version: str
    format: str | None = None  # "onnx": its optimised form is served; "torch" or None (unknown): torch


def owner_body(rmd: RecModelDeployment) -> dict[str, Any]:
    return {"apiVersion": rmd.api_version, "kind": rmd.kind, "metadata": rmd.metadata}


def name_of(rmd: RecModelDeployment) -> str:
    return str(rmd.metadata["name"])


def namespace_of(rmd: RecModelDeployment) -> str:
    return str(rmd.metadata["namespace"])


def deployment_name(name: str, track: str) -> str:
    return child_name(name, track)


def service_name(name: str) -> str:
    return child_name(name)


def feedback_secret_name(name: str) -> str:
    return child_name(name, "feedback-key")


def endpoint(rmd: RecModelDeployment) -> str:
    return f"http://{service_name(name_of(rmd))}.{namespace_of(rmd)}.svc:{SERVICE_PORT}"


def version_of_uri(uri: str) -> str:
    """A model version for a pinned URI: its last path segment (what the trainer names the directory)."""
    tail = uri.rstrip("/").rsplit("/", 1)[-1] or uri
    tail = tail.split("://", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-.") or "model"
    return cleaned[:253]


def selector_labels(name: str, track: str | None = None) -> dict[str, str]:
    labels = {
        contracts.owner_label(KIND): label_value(name),
        "app.kubernetes.io/component": COMPONENT,
    }
    if track:
        labels[TRACK_LABEL] = track
    return labels


def feedback_key_ref(rmd: RecModelDeployment) -> SecretKeySelector:
    """Where the HMAC key comes from: the spec's Secret, else the operator's default one."""
    return rmd.spec.serving.feedback_key_secret_ref or SecretKeySelector(
        name=feedback_secret_name(name_of(rmd)), key=FEEDBACK_KEY_KEY
    )


def pdb_wanted(rmd: RecModelDeployment) -> bool:
    """A PodDisruptionBudget only protects something when more than one replica may run."""
    if rmd.spec.autoscaling is not None:
        return rmd.spec.autoscaling.max_replicas > 1
    return (rmd.spec.replicas if rmd.spec.replicas is not None else 1) > 1


def stable_replicas(rmd: RecModelDeployment) -> int | None:
    """Replicas recops sets on the stable Deployment; None when an HPA owns them."""
    if rmd.spec.autoscaling is not None:
        return None
    return rmd.spec.replicas if rmd.spec.replicas is not None else 1


def canary_replicas(stable: int, weight: int) -> int:
    """Canary replicas so that canary / (stable + canary) comes as close to `weight`% as whole pods allow.

    The stable track keeps all its replicas during a canary (no capacity is taken away); the
    canary gets at least one.
    """
    if weight >= 100:
        return max(1, stable)
    return max(1, math.ceil(stable * weight / (100 - weight) - 1e-9))


def effective_weight(stable: int, canary: int) -> int:
    total = stable + canary
    return round(100 * canary / total) if total else 0


# --- the server pod --------------------------------------------------------------------------
def _serving_args(rmd: RecModelDeployment) -> list[str]:
    s = rmd.spec.serving
    args = [
        "--max-batch-size", str(s.max_batch_size),
        "--max-batch-wait", s.max_batch_wait,
        "--max-candidates", str(s.max_candidates),
        "--max-queue", str(s.max_queue),
        "--max-text-length", str(s.max_text_length),
        "--quantization", s.quantization,
        "--runtime", s.runtime,
        "--score-cache-entries", str(s.score_cache.entries),
        "--score-cache-ttl", s.score_cache.ttl,
        "--feedback-token-ttl", s.feedback_token_ttl,
        "--drain-timeout", f"{DRAIN_TIMEOUT_SECONDS}s",
    ]
    if s.event_log is not None:
        args += ["--event-log", s.event_log.uri, "--exploration", f"{s.event_log.exploration:g}"]
    return args


def server_image(rmd: RecModelDeployment, model: TrackModel, settings: BuilderSettings) -> str:
    """The user's image, else the torch-free one where the model's ONNX form is served (it starts in well under a
    second and is a tenth of the size), else the torch one, which serves any model."""
    if rmd.spec.resources.image:
        return rmd.spec.resources.image
    runtime = rmd.spec.serving.runtime
    onnx = runtime == "onnx" or (runtime == "auto" and model.format == "onnx")
    return settings.server_onnx_image if onnx else settings.server_image


def _model_fetch(rmd: RecModelDeployment, model: TrackModel, image: str, settings: BuilderSettings,
                 volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], env: list[dict[str, Any]],
                 ) -> dict[str, Any]:
    """The init container that downloads an s3:// model before the server starts (as KServe's storage initializer
    does) into an emptyDir, which it adds to `volumes` and, read-only, to the server's `mounts`."""
    volumes.append({"name": MODEL_VOLUME, "emptyDir": {}})
    fetch_mounts = [*mounts, {"name": MODEL_VOLUME, "mountPath": MODEL_DIR}]
    mounts.append({"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True})
    fetch: dict[str, Any] = {
        "name": FETCH_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["recops", "fetch-model"],
        "args": ["--model", model.uri, "--dest", MODEL_DIR],
        "env": list(env),
        "volumeMounts": fetch_mounts,
        "securityContext": container_security_context(),
    }
    if env_from := env_from_secrets([rmd.spec.model.credentials_secret_ref]):
        fetch["envFrom"] = env_from
    return fetch


def _server_env(rmd: RecModelDeployment, track: str, model: TrackModel) -> list[dict[str, Any]]:
    """What the server learns from its environment (contracts.ENV_*): who it is, and the feedback key's Secret."""
    feedback = feedback_key_ref(rmd)
    return [
        {"name": contracts.ENV_NAMESPACE, "value": namespace_of(rmd)},
        {"name": contracts.ENV_DEPLOYMENT, "value": name_of(rmd)},
        {"name": contracts.ENV_TRACK, "value": track},
        {"name": contracts.ENV_MODEL_VERSION, "value": model.version},
        {"name": contracts.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        secret_key_env(contracts.ENV_FEEDBACK_KEY, feedback),
        {"name": contracts.ENV_PSEUDONYM_SALT, "valueFrom": {"secretKeyRef": {
            "name": feedback.name, "key": PSEUDONYM_SALT_KEY, "optional": True}}},
    ]


def _server_container(rmd: RecModelDeployment, track: str, image: str, model_arg: str, env: list[dict[str, Any]],
                      mounts: list[dict[str, Any]], credentials: list[LocalObjectReference | None],
                      settings: BuilderSettings) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["recops", "serve"],
        "args": ["--model", model_arg, "--port", str(HTTP_PORT), "--track", track, *_serving_args(rmd)],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": env,
        "volumeMounts": mounts,
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 2,
        },
        "livenessProbe": {
            # The server binds before loading the model, so liveness answers during a download.
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5,
        },
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from := env_from_secrets(credentials):
        container["envFrom"] = env_from
    res = rmd.spec.resources
    if resources := container_resources(res.cpu, res.memory, str(res.gpus) if res.gpus else None):
        container["resources"] = resources
    return container


def pod_template(rmd: RecModelDeployment, track: str, model: TrackModel, settings: BuilderSettings) -> dict[str, Any]:
    spec = rmd.spec
    user = spec.pod_template
    image = server_image(rmd, model, settings)
    volumes, mounts, env = scratch_volumes()
    init_containers: list[dict[str, Any]] = []
    model_arg = model.uri
    parsed = uris.parse(model.uri)
    credentials = [spec.model.credentials_secret_ref]
    if parsed.scheme == "s3":
        init_containers.append(_model_fetch(rmd, model, image, settings, volumes, mounts, env))
        model_arg = MODEL_DIR
        credentials = []  # the server never needs the model's credentials
    event_log = spec.serving.event_log
    if event_log is not None:
        credentials.append(event_log.credentials_secret_ref)
    pvc_vols, pvc_mounts = pvc_volumes([
        (model.uri if parsed.scheme == "pvc" else None, True),
        (event_log.uri if event_log is not None else None, False),
    ])
    env = merge_env(env + _server_env(rmd, track, model), list(user.env), protected=PROTECTED_ENV)
    volumes += [*pvc_vols, *(dict(v) for v in user.volumes)]
    mounts += [*pvc_mounts, *(dict(m) for m in user.volume_mounts)]
    container = _server_container(rmd, track, image, model_arg, env, mounts, credentials, settings)

    name = name_of(rmd)
    labels = merge_user_labels(
        {**standard_labels(KIND, name, COMPONENT), **selector_labels(name, track),
         MODEL_VERSION_LABEL: label_value(model.version)},
        user.labels,
    )
    annotations = {
        **without_forbidden(user.annotations),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
    }
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": volumes,
        **pod_placement(user, spec.resources.node_selector, spec.resources.tolerations),
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if user.service_account_name:
        # Workload identity needs no API token: IRSA's and Pod Identity's webhooks project their own, GKE's
        # metadata server needs none; automountServiceAccountToken stays false.
        pod_spec["serviceAccountName"] = user.service_account_name
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def deployment(rmd: RecModelDeployment, track: str, model: TrackModel, settings: BuilderSettings,
               replicas: int | None) -> dict[str, Any]:
    """The Deployment of one track. `replicas` None: left out, for the HPA to own."""
    name = name_of(rmd)
    labels = {**standard_labels(KIND, name, COMPONENT), TRACK_LABEL: track}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name, track)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 3,
        "template": pod_template(rmd, track, model, settings),
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(deployment_name(name, track), owner_body(rmd), labels,
                                {MODEL_VERSION_LABEL: model.version}),
        "spec": spec,
    }


def service(rmd: RecModelDeployment) -> dict[str, Any]:
    """One Service in front of both tracks: traffic splits by ready replicas."""
    name = name_of(rmd)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(service_name(name), owner_body(rmd), standard_labels(KIND, name, COMPONENT)),
        "spec": {
            "selector": selector_labels(name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa(rmd: RecModelDeployment) -> dict[str, Any] | None:
    autoscaling = rmd.spec.autoscaling
    if autoscaling is None:
        return None
    name = name_of(rmd)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(deployment_name(name, "stable"), owner_body(rmd), standard_labels(KIND, name, COMPONENT)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(name, "stable")},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization},
            }}],
        },
    }


def pdb(rmd: RecModelDeployment) -> dict[str, Any] | None:
    if not pdb_wanted(rmd):
        return None
    name = name_of(rmd)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(child_name(name), owner_body(rmd), standard_labels(KIND, name, COMPONENT)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name, "stable")}},
    }


def feedback_secret(rmd: RecModelDeployment, key: str, salt: str) -> dict[str, Any]:
    """The default feedback-key Secret (random values chosen by the caller; created once, never updated)."""
    name = name_of(rmd)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(feedback_secret_name(name), owner_body(rmd), standard_labels(KIND, name, COMPONENT)),
        "type": "Opaque",
        "stringData": {FEEDBACK_KEY_KEY: key, PSEUDONYM_SALT_KEY: salt},
    }


def shared_feedback_secret(namespace: str, name: str, key: str, value: str, salt: str) -> dict[str, Any]:
    """A namespace's shared feedback-key Secret (the chart's feedbackKey.create), which RecModelDeployments name in
    spec.serving.feedbackKeySecretRef. Owned by nothing: it outlives every deployment, as the tokens it signed do."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {
            NAME_LABEL: APP_NAME, COMPONENT_LABEL: SHARED_FEEDBACK_KEY_COMPONENT, MANAGED_BY_LABEL: contracts.MANAGED_BY,
        }},
        "type": "Opaque",
        "stringData": {key: value, PSEUDONYM_SALT_KEY: salt},
    }


def problems(rmd: RecModelDeployment) -> list[str]:
    """What the schema lets through but cannot be served (InvalidSpec)."""
    found = []
    source = rmd.spec.model
    if source.uri:
        try:
            uris.parse(source.uri)
        except ValueError as error:
            found.append(f"spec.model.uri: {error}")
    if rmd.spec.serving.event_log is not None:
        try:
            uris.parse(rmd.spec.serving.event_log.uri)
        except ValueError as error:
            found.append(f"spec.serving.eventLog.uri: {error}")
    # The claims of a lineage's models are known only per model: a collision with one is the API server's to refuse.
    scratch_vols, scratch_mounts, _ = scratch_volumes()
    try:
        claim_vols, claim_mounts = pvc_volumes([(source.uri, True), (
            rmd.spec.serving.event_log.uri if rmd.spec.serving.event_log else None, False)])
    except ValueError:  # reported above
        claim_vols, claim_mounts = [], []
    names = {MODEL_VOLUME, *(v["name"] for v in scratch_vols + claim_vols)}
    paths = {MODEL_DIR, *(m["mountPath"] for m in scratch_mounts + claim_mounts)}
    return found + template_collisions(rmd.spec.pod_template, names, paths)
