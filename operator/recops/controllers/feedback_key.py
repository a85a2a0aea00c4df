"""The shared feedback-key Secret of a namespace (the chart's `feedbackKey.create`): the operator creates it once,
with a random key, and never reads it back, changes or rotates it.

Rendered by Helm instead, its random key changed on every `helm template` (under Argo CD `lookup` finds nothing), so
the Secret was always OutOfSync and every sync rotated the key, failing the feedback of every response already served.
Created here with a POST only: a Secret that exists (from an earlier start, an older chart, or its owner) answers 409
and is kept as it is. This needs no permission beyond `create` on Secrets, which the operator holds already.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum

from recops.api.common import SecretKeySelector
from recops.builders import recmodeldeployment as builders
from recops.controllers.kube import ApiError, Kube, resource_path


@dataclass(frozen=True)
class SharedFeedbackKey:
    """Which Secret, and in which namespaces the operator creates it at start (empty: the watched namespaces, else
    the operator's own). A RecModelDeployment naming it elsewhere gets it created in its namespace too."""

    secret: str
    key: str = builders.FEEDBACK_KEY_KEY
    namespaces: tuple[str, ...] = ()

    def named_by(self, ref: SecretKeySelector) -> bool:
        return ref.name == self.secret and ref.key == self.key


class Outcome(StrEnum):
    CREATED = "created"
    KEPT = "kept"  # it existed: left exactly as it is
    NO_NAMESPACE = "namespace missing"  # or terminating; a RecModelDeployment's pass creates it once there is one


def ensure_shared_feedback_secret(kube: Kube, namespace: str, shared: SharedFeedbackKey) -> Outcome:
    manifest = builders.shared_feedback_secret(namespace, shared.secret, shared.key, secrets.token_urlsafe(36),
                                               secrets.token_urlsafe(24))
    try:
        kube.create(resource_path("v1", "secrets", namespace), manifest)
    except ApiError as error:
        if error.status == 409:
            return Outcome.KEPT
        if error.status == 404 or (error.status == 403 and "NamespaceTerminating" in str(error.body)):
            return Outcome.NO_NAMESPACE
        raise
    return Outcome.CREATED
