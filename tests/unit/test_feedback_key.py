"""The shared feedback-key Secret (controllers/feedback_key.py) against a fake API that only knows POST: created
once with a random key, and an existing one (from an earlier start, an older chart or its owner) never changed.
tests/cluster/test_chart.py shows the same on the real control plane with the chart's RBAC."""

from __future__ import annotations

import base64
from typing import Any

from recops.api.common import SecretKeySelector
from recops.builders.common import BuilderSettings
from recops.controllers.feedback_key import Outcome, SharedFeedbackKey, ensure_shared_feedback_secret
from recops.controllers.kube import ApiError
from recops.controllers.main import Operator, OperatorConfig
from recops.controllers.recmodeldeployment import RecModelDeploymentController

SHARED = SharedFeedbackKey("recops-feedback-key", "feedbackKey")


class SecretsApi:
    """Namespaced Secrets behind POST only: a fake with no PUT, PATCH or apply, so any attempt to change one fails."""

    def __init__(self, namespaces: set[str]) -> None:
        self.namespaces = namespaces
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.posts: list[tuple[str, str]] = []

    def create(self, path: str, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        assert path == f"/api/v1/namespaces/{namespace}/secrets"
        self.posts.append((namespace, name))
        if namespace not in self.namespaces:
            raise ApiError(status=404, reason="NotFound", body=f'namespaces "{namespace}" not found')
        if (namespace, name) in self.secrets:
            raise ApiError(status=409, reason="AlreadyExists", body=f'secrets "{name}" already exists')
        self.secrets[namespace, name] = manifest
        return manifest


def test_created_once_with_a_random_key_and_never_changed() -> None:
    api = SecretsApi({"shop"})
    assert ensure_shared_feedback_secret(api, "shop", SHARED) is Outcome.CREATED  # type: ignore[arg-type]
    secret = api.secrets["shop", "recops-feedback-key"]
    key = secret["stringData"]["feedbackKey"]
    assert len(key) >= 32 and key != secret["stringData"]["pseudonymSalt"]
    assert "ownerReferences" not in secret["metadata"]  # it outlives every deployment, as its tokens do
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/name": "recops",
                                            "app.kubernetes.io/component": "feedback-key",
                                            "app.kubernetes.io/managed-by": "recops"}
    # Another start (or replica) finds it: the key stays as it is.
    assert ensure_shared_feedback_secret(api, "shop", SHARED) is Outcome.KEPT  # type: ignore[arg-type]
    assert api.secrets["shop", "recops-feedback-key"]["stringData"]["feedbackKey"] == key
    # Two namespaces, two different keys.
    api.namespaces.add("shop-b")
    ensure_shared_feedback_secret(api, "shop-b", SHARED)  # type: ignore[arg-type]
    assert api.secrets["shop-b", "recops-feedback-key"]["stringData"]["feedbackKey"] != key


def test_a_secret_its_owner_made_is_kept_and_a_missing_namespace_is_no_error() -> None:
    api = SecretsApi({"shop"})
    own = {"metadata": {"name": "recops-feedback-key", "namespace": "shop"},
           "data": {"feedbackKey": base64.b64encode(b"k" * 32).decode()}}
    api.secrets["shop", "recops-feedback-key"] = own
    assert ensure_shared_feedback_secret(api, "shop", SHARED) is Outcome.KEPT  # type: ignore[arg-type]
    assert api.secrets["shop", "recops-feedback-key"] is own
    assert ensure_shared_feedback_secret(api, "later", SHARED) is Outcome.NO_NAMESPACE  # type: ignore[arg-type]


def operator_with(api: SecretsApi, config: OperatorConfig) -> Operator:
    operator = Operator.__new__(Operator)  # only the config and the API are needed: no cluster, no Kopf
    operator.config, operator.kube = config, api  # type: ignore[assignment]
    return operator


def test_at_start_the_operator_creates_it_in_its_namespaces() -> None:
    api = SecretsApi({"shop-a", "shop-b", "recops-system"})
    operator_with(api, OperatorConfig(namespaces=("shop-a", "shop-b"), feedback_key=SHARED,
                                      leader_election_namespace="recops-system")).ensure_feedback_keys()
    assert set(api.secrets) == {("shop-a", "recops-feedback-key"), ("shop-b", "recops-feedback-key")}
    # Cluster-wide: the operator's namespace; named namespaces win; a missing one is skipped, not fatal.
    api = SecretsApi({"recops-system", "shop-c"})
    operator_with(api, OperatorConfig(feedback_key=SHARED, leader_election_namespace="recops-system")
                  ).ensure_feedback_keys()
    assert set(api.secrets) == {("recops-system", "recops-feedback-key")}
    shared = SharedFeedbackKey("recops-feedback-key", "feedbackKey", ("gone", "shop-c"))
    operator_with(api, OperatorConfig(feedback_key=shared)).ensure_feedback_keys()
    assert ("shop-c", "recops-feedback-key") in api.secrets and api.posts[-2] == ("gone", "recops-feedback-key")
    api = SecretsApi({"shop"})
    operator_with(api, OperatorConfig(namespaces=("shop",))).ensure_feedback_keys()  # not asked for: nothing
    assert not api.posts


def test_a_deployment_naming_it_gets_it_in_its_namespace_once() -> None:
    api = SecretsApi({"shop-late"})
    controller = RecModelDeploymentController(api, BuilderSettings(), shared_feedback_key=SHARED)  # type: ignore[arg-type]
    assert SHARED.named_by(SecretKeySelector(name="recops-feedback-key", key="feedbackKey"))
    assert not SHARED.named_by(SecretKeySelector(name="recops-feedback-key", key="other"))
    assert not SHARED.named_by(SecretKeySelector(name="my-own-key", key="feedbackKey"))
    controller.ensure_shared_feedback_secret("shop-late", SHARED)
    controller.ensure_shared_feedback_secret("shop-late", SHARED)
    assert api.posts == [("shop-late", "recops-feedback-key")]  # remembered: one request
    controller.forget_all()  # drift repair: asked again, and kept
    controller.ensure_shared_feedback_secret("shop-late", SHARED)
    assert len(api.posts) == 2 and len(api.secrets) == 1
