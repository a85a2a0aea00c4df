"""A thin, dict-in dict-out layer over the Kubernetes REST API (through the `kubernetes`
client's authenticated connection pool): get, list, server-side apply, merge patch.

Manifests stay plain dicts end to end, exactly as the builders make them.
"""

from __future__ import annotations

import builtins
import json
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client, config

from recops.api.contracts import FIELD_MANAGER

# kind -> plural, for the kinds the controllers touch.
PLURALS = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Pod": "pods",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Job": "jobs",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "FineTuneJob": "finetunejobs",
    "RecModelDeployment": "recmodeldeployments",
    "MonitorPolicy": "monitorpolicies",
}

ApiError = client.ApiException


def resource_path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
                  subresource: str | None = None) -> str:
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def object_path(manifest: dict[str, Any], subresource: str | None = None) -> str:
    meta = manifest["metadata"]
    return resource_path(manifest["apiVersion"], PLURALS[manifest["kind"]], meta.get("namespace"), meta["name"],
                         subresource)


def is_not_found(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status == 404


# Kept-alive connections to the API server: the default (5 per CPU) is below what the operator's
# worker threads use at once, and every connection beyond the pool costs a new TLS handshake.
CONNECTION_POOL_SIZE = 64


def load_api_client(kubeconfig: str | None = None, pool_size: int = CONNECTION_POOL_SIZE) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or the given file)."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            raise config.ConfigException("a kubeconfig was given")
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class Kube:
    """Raw JSON requests over an authenticated `kubernetes.client.ApiClient` (thread-safe)."""

    def __init__(self, api_client: client.ApiClient, field_manager: str = FIELD_MANAGER,
                 request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.request_timeout = request_timeout

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                content_type: str | None = None, *, text: bool = False, timeout_s: float | None = None) -> Any:
        """JSON in and out; `text`: the response as text (a pod's log)."""
        # A log is served as text/plain, which the API server does not accept as an Accept value: any type.
        headers = {"Accept": "*/*" if text else "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        method_, url, headers_, body_, _ = self.api_client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api_client.call_api(method_, url, header_params=headers_, body=body_,
                                            _request_timeout=timeout_s or self.request_timeout)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiError(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
        if text:
            return data.decode(errors="replace")
        return json.loads(data) if data else None

    def read_log(self, namespace: str, pod: str, container: str, *, tail_lines: int, limit_bytes: int,
                 timeout_s: float | None = None) -> str:
        """The last `tail_lines` lines of a container's log (at most `limit_bytes`)."""
        result: str = self.request("GET", resource_path("v1", "pods", namespace, pod, "log"),
                                   query={"container": container, "tailLines": tail_lines, "limitBytes": limit_bytes},
                                   text=True, timeout_s=timeout_s)
        return result

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            result: dict[str, Any] = self.request("GET", path)
            return result
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, path: str, label_selector: str | None = None,
             field_selector: str | None = None) -> builtins.list[dict[str, Any]]:
        items: builtins.list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            page = self.request("GET", path, query={"labelSelector": label_selector, "fieldSelector": field_selector,
                                                    "limit": 500, "continue": cont})
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items

    def apply(self, manifest: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply as the `recops` field manager, taking over conflicting fields."""
        result: dict[str, Any] = self.request(
            "PATCH", object_path(manifest, subresource), body=manifest,
            query={"fieldManager": self.field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return result

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", path, body=patch, query={"fieldManager": self.field_manager},
            content_type="application/merge-patch+json",
        )
        return result

    def strategic_merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        """For built-in kinds only (CRDs do not support strategic merge)."""
        result: dict[str, Any] = self.request(
            "PATCH", path, body=patch, query={"fieldManager": self.field_manager},
            content_type="application/strategic-merge-patch+json",
        )
        return result

    def json_patch(self, path: str, operations: builtins.list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", path, body=operations, query={"fieldManager": self.field_manager},
            content_type="application/json-patch+json",
        )
        return result

    def create(self, path: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST to a collection; a 409 (already exists) propagates."""
        result: dict[str, Any] = self.request("POST", path, body=manifest, query={"fieldManager": self.field_manager})
        return result

    def replace(self, path: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """PUT (optimistic concurrency: a stale metadata.resourceVersion gives 409)."""
        result: dict[str, Any] = self.request("PUT", path, body=manifest, query={"fieldManager": self.field_manager})
        return result

    def delete(self, path: str, propagation: str | None = None, uid: str | None = None) -> None:
        """DELETE; with `uid`, only that incarnation (else 409)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            body["propagationPolicy"] = propagation
        if uid:
            body["preconditions"] = {"uid": uid}
        self.request("DELETE", path, body=body)


def is_rejection(error: ApiError) -> bool:
    """The API server refused a child as built from the spec (not a transient or permission problem).

    400/422 are validation; server-side apply answers 500 "failed to create typed patch object"
    for a manifest it cannot even type (e.g. duplicate list keys).
    """
    if error.status in (400, 422):
        return True
    return error.status == 500 and "failed to create typed patch object" in str(error.body or "")


def rejection(error: ApiError) -> str:
    """The API server's words for a child it refused: the spec cannot be built as given."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except ValueError:
        message = None
    return f"the API server rejected a child object: {message or error.reason}"
