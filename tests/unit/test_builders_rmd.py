"""Builders of a RecModelDeployment's children: pure functions, checked field by field."""

from __future__ import annotations

from typing import Any

import pytest

from recops.api import contracts
from recops.api.recmodeldeployment import RecModelDeployment
from recops.builders import recmodeldeployment as b
from recops.builders.common import BuilderSettings

UID = "0123abcd-4567-89ef-0123-456789abcdef"
SETTINGS = BuilderSettings(server_image="registry.local/recops-server:1")
MODEL = b.TrackModel(uri="pvc://models/shop/ranker-ft-1a2b3c4d", version="ranker-ft-1a2b3c4d")


def rmd(**spec: Any) -> RecModelDeployment:
    body: dict[str, Any] = {"model": {"lineage": "ranker"}}
    body.update(spec)
    return RecModelDeployment.model_validate({
        "apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": "shop", "namespace": "ns", "uid": UID, "generation": 1,
                     "labels": {"argocd.argoproj.io/instance": "shop", "team": "search"}},
        "spec": body,
    })


def container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["server"]
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_stable_deployment_runs_the_server_command_with_identity_env_and_probes() -> None:
    dep = b.deployment(rmd(), "stable", MODEL, SETTINGS, 2)
    assert dep["metadata"]["name"] == "shop-stable"
    assert dep["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment", "name": "shop", "uid": UID,
        "controller": True, "blockOwnerDeletion": True}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == {
        "recops.dev/recmodeldeployment": "shop", "app.kubernetes.io/component": "server", "recops.dev/track": "stable"}
    c = container(dep)
    assert c["image"] == "registry.local/recops-server:1"
    assert c["command"] == ["recops", "serve"]
    assert c["args"][:6] == ["--model", MODEL.uri, "--port", "8080", "--track", "stable"]
    env = env_of(c)
    assert env[contracts.ENV_NAMESPACE] == "ns"
    assert env[contracts.ENV_DEPLOYMENT] == "shop"
    assert env[contracts.ENV_TRACK] == "stable"
    assert env[contracts.ENV_MODEL_VERSION] == "ranker-ft-1a2b3c4d"
    assert env[contracts.ENV_POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env[contracts.ENV_FEEDBACK_KEY] == {"secretKeyRef": {"name": "shop-feedback-key", "key": "feedbackKey"}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30  # above the server's 30s drain timeout
    assert "--drain-timeout" in c["args"] and c["args"][c["args"].index("--drain-timeout") + 1] == "30s"
    # Argo CD's labels are never copied; the user's others are.
    assert "argocd.argoproj.io/instance" not in dep["metadata"]["labels"]


def test_restricted_pod_security_profile() -> None:
    dep = b.deployment(rmd(), "stable", MODEL, SETTINGS, 1)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(dep)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    # Writable places of a read-only root.
    mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
    assert {"/tmp", "/var/cache/huggingface"} <= mounts


def test_servers_run_as_a_named_service_account_without_an_api_token() -> None:
    assert "serviceAccountName" not in b.deployment(rmd(), "stable", MODEL, SETTINGS, 1)["spec"]["template"]["spec"]
    named = rmd(podTemplate={"serviceAccountName": "ranker-gcs-reader"})
    for track in ("stable", "canary"):
        pod = b.deployment(named, track, MODEL, SETTINGS, 1)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "ranker-gcs-reader"
        assert pod["automountServiceAccountToken"] is False  # workload identity needs no Kubernetes API token


def test_the_torch_free_image_serves_models_whose_onnx_form_is_served() -> None:
    settings = BuilderSettings(server_image="r/server-torch:1", server_onnx_image="r/server:1")
    onnx = b.TrackModel(uri=MODEL.uri, version=MODEL.version, format="onnx")

    def image(spec: RecModelDeployment, model: b.TrackModel) -> str:
        return str(container(b.deployment(spec, "stable", model, settings, 1))["image"])

    assert image(rmd(), onnx) == "r/server:1"
    assert image(rmd(), MODEL) == "r/server-torch:1"  # unknown form (a uri): the image that serves any model
    assert image(rmd(), b.TrackModel(uri=MODEL.uri, version=MODEL.version, format="torch")) == "r/server-torch:1"
    assert image(rmd(serving={"runtime": "torch"}), onnx) == "r/server-torch:1"  # torch asked for
    assert image(rmd(serving={"runtime": "onnx"}), MODEL) == "r/server:1"
    assert image(rmd(resources={"image": "mine:2"}), onnx) == "mine:2"  # the user's image wins


def test_pvc_model_is_mounted_read_only() -> None:
    dep = b.deployment(rmd(), "stable", MODEL, SETTINGS, 1)
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    claim = next(v for v in volumes if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mount = next(m for m in container(dep)["volumeMounts"] if m["name"] == claim["name"])
    assert (mount["mountPath"], mount["readOnly"]) == ("/mnt/pvc/models", True)
    assert "initContainers" not in dep["spec"]["template"]["spec"]


def test_s3_model_is_downloaded_by_an_init_container_into_an_empty_dir() -> None:
    model = b.TrackModel(uri="s3://models/shop/ranker-2", version="ranker-2")
    dep = b.deployment(rmd(model={"lineage": "ranker", "credentialsSecretRef": {"name": "s3"}}), "canary", model,
                       SETTINGS, 1)
    pod = dep["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["command"] == ["recops", "fetch-model"]
    assert init["args"] == ["--model", "s3://models/shop/ranker-2", "--dest", b.MODEL_DIR]
    assert init["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert {"name": b.MODEL_VOLUME, "emptyDir": {}} in pod["volumes"]
    server = container(dep)
    assert server["args"][:2] == ["--model", b.MODEL_DIR]
    assert {"name": b.MODEL_VOLUME, "mountPath": b.MODEL_DIR, "readOnly": True} in server["volumeMounts"]
    assert "envFrom" not in server  # the server never sees the model store's credentials
    assert env_of(server)[contracts.ENV_TRACK] == "canary"


def test_hpa_owns_replicas_and_pdb_only_when_more_than_one_replica_may_run() -> None:
    scaled = rmd(autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 60})
    assert b.stable_replicas(scaled) is None
    dep = b.deployment(scaled, "stable", MODEL, SETTINGS, b.stable_replicas(scaled))
    assert "replicas" not in dep["spec"]
    hpa = b.hpa(scaled)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-stable"}
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert b.pdb(scaled) is not None
    assert b.hpa(rmd(replicas=3)) is None and b.pdb(rmd(replicas=3)) is not None
    assert b.pdb(rmd(replicas=1)) is None and b.pdb(rmd()) is None
    assert b.pdb(rmd(autoscaling={"minReplicas": 1, "maxReplicas": 1})) is None


def test_one_service_selects_both_tracks() -> None:
    service = b.service(rmd())
    assert service["spec"]["selector"] == {"recops.dev/recmodeldeployment": "shop",
                                           "app.kubernetes.io/component": "server"}
    for track in ("stable", "canary"):
        labels = b.deployment(rmd(), track, MODEL, SETTINGS, 1)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    assert b.endpoint(rmd()) == "http://shop.ns.svc:80"


def test_feedback_key_from_the_spec_secret_shared_by_both_tracks() -> None:
    spec_ref = {"feedbackKeySecretRef": {"name": "keys", "key": "hmac"}}
    for track in ("stable", "canary"):
        env = env_of(container(b.deployment(rmd(serving=spec_ref), track, MODEL, SETTINGS, 1)))
        assert env[contracts.ENV_FEEDBACK_KEY] == {"secretKeyRef": {"name": "keys", "key": "hmac"}}


def test_serving_settings_and_event_log_become_flags() -> None:
    spec = rmd(serving={"maxBatchSize": 8, "maxBatchWait": "10ms", "quantization": "int8",
                        "eventLog": {"uri": "pvc://events/shop"}})
    c = container(b.deployment(spec, "stable", MODEL, SETTINGS, 1))
    args = c["args"]
    assert args[args.index("--max-batch-size") + 1] == "8"
    assert args[args.index("--max-batch-wait") + 1] == "10ms"
    assert args[args.index("--quantization") + 1] == "int8"
    assert args[args.index("--event-log") + 1] == "pvc://events/shop"
    events_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/mnt/pvc/events")
    assert events_mount["readOnly"] is False


def test_user_env_cannot_replace_the_identity() -> None:
    spec = rmd(podTemplate={"env": [{"name": contracts.ENV_TRACK, "value": "canary"}, {"name": "X", "value": "1"}]})
    env = env_of(container(b.deployment(spec, "stable", MODEL, SETTINGS, 1)))
    assert env[contracts.ENV_TRACK] == "stable" and env["X"] == "1"


@pytest.mark.parametrize(("stable", "weight", "canary"), [(1, 10, 1), (1, 50, 1), (4, 50, 4), (9, 10, 1),
                                                          (3, 25, 1), (3, 60, 5), (2, 100, 2)])
def test_canary_replicas_by_weight(stable: int, weight: int, canary: int) -> None:
    assert b.canary_replicas(stable, weight) == canary


def test_version_of_a_pinned_uri() -> None:
    assert b.version_of_uri("s3://models/shop/ranker-ft-1a2b3c4d/") == "ranker-ft-1a2b3c4d"
    assert b.version_of_uri("/models/a b") == "a-b"
    assert b.version_of_uri("builtin://all-minilm-l6-v2") == "all-minilm-l6-v2"


def test_default_feedback_secret() -> None:
    secret = b.feedback_secret(rmd(), "k" * 32, "salt")
    assert secret["metadata"]["name"] == "shop-feedback-key"
    assert secret["stringData"] == {"feedbackKey": "k" * 32, "pseudonymSalt": "salt"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
