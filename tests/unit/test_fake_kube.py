"""The in-memory API (tests/support/fake_kube.py) behaves as the controllers rely on the real one to."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiException

from recops.controllers.kube import object_path, resource_path
from tests.support.fake_kube import FakeKube, matches_labels, owner_reference

NS = "shop"


def deployment(replicas: int | None = None, image: str = "server:1", **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [{"name": "server", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS,
                                                                         "labels": labels}, "spec": spec}


def test_apply_creates_merges_and_drops_only_the_fields_this_manager_stopped_applying() -> None:
    kube = FakeKube()
    created = kube.apply(deployment(replicas=2, app="web"))
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    kube.patch("Deployment", NS, "web", {"metadata": {"labels": {"team": "search"}}}, manager="kubectl")
    again = kube.apply(deployment(replicas=2, app="web"))
    assert again["metadata"]["resourceVersion"] == kube.obj("Deployment", NS, "web")["metadata"]["resourceVersion"]  # type: ignore[index]
    assert again["metadata"]["generation"] == 1  # nothing in spec changed
    dropped = kube.apply(deployment(app="web"))  # recops stops applying replicas
    assert "replicas" not in dropped["spec"] and dropped["metadata"]["labels"] == {"app": "web", "team": "search"}
    assert dropped["metadata"]["generation"] == 2
    kube.patch("Deployment", NS, "web", {"spec": {"replicas": 5}}, manager="horizontal-pod-autoscaler")
    kept = kube.apply(deployment(app="web", image="server:2"))
    assert kept["spec"]["replicas"] == 5 and kept["spec"]["template"]["spec"]["containers"][0]["image"] == "server:2"


def test_status_and_object_writes_leave_each_other_alone() -> None:
    kube = FakeKube()
    kube.apply(deployment(replicas=1))
    kube.set_status("Deployment", NS, "web", {"readyReplicas": 1})
    path = object_path(deployment())
    kube.merge_patch(path, {"spec": {"replicas": 3}, "status": {"readyReplicas": 9}})
    stored = kube.get(path)
    assert stored is not None and stored["status"] == {"readyReplicas": 1} and stored["spec"]["replicas"] == 3
    kube.merge_patch(object_path(deployment(), "status"), {"spec": {"replicas": 7}, "status": {"readyReplicas": 2}})
    stored = kube.get(path)
    assert stored is not None and stored["status"] == {"readyReplicas": 2} and stored["spec"]["replicas"] == 3
    assert stored["metadata"]["generation"] == 2  # status writes do not bump it


def test_errors_are_the_clients_api_exceptions() -> None:
    kube = FakeKube()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "job", "namespace": NS}, "data": {}}
    collection = resource_path("v1", "configmaps", NS)
    kube.create(collection, cm)
    with pytest.raises(ApiException) as exists:
        kube.create(collection, cm)
    assert exists.value.status == 409 and "AlreadyExists" in str(exists.value.body)
    assert kube.get(resource_path("v1", "configmaps", NS, "nope")) is None
    with pytest.raises(ApiException) as missing:
        kube.merge_patch(resource_path("v1", "configmaps", NS, "nope"), {"data": {}})
    assert missing.value.status == 404
    with pytest.raises(ApiException) as stale:
        kube.delete(object_path(cm), uid="another-uid")
    assert stale.value.status == 409
    with pytest.raises(ApiException) as invalid:
        kube.create(collection, {**cm, "metadata": {"name": "Not_A_Name", "namespace": NS}})
    assert invalid.value.status == 422
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": NS},
           "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "a"}]}}}}
    kube.apply(job)
    with pytest.raises(ApiException) as immutable:
        kube.apply({**job, "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "b"}]}}}})
    assert immutable.value.status == 422


def test_delete_collects_dependents_and_finalizers_hold_an_object() -> None:
    kube = FakeKube()
    owner = kube.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": NS},
                        "spec": {"template": {}}})
    kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train-1", "namespace": NS,
                                                              "ownerReferences": [owner_reference(owner)]}})
    held = kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "train-2", "namespace": NS, "finalizers": ["example.com/keep"], "ownerReferences": [owner_reference(owner)]}})
    kube.delete(object_path(owner), propagation="Background")
    assert kube.obj("Job", NS, "train") is None and kube.obj("Pod", NS, "train-1") is None
    terminating = kube.obj("Pod", NS, "train-2")
    assert terminating is not None and terminating["metadata"]["deletionTimestamp"]
    kube.patch("Pod", NS, "train-2", {"metadata": {"finalizers": None}})
    assert kube.obj("Pod", NS, "train-2") is None
    assert [e for e, o in kube.watch_events if o["metadata"]["name"] == "train-2"] == \
        ["ADDED", "MODIFIED", "DELETED"] and held["metadata"]["uid"]


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", True), ("app==web,tier=front", True), ("app!=web", False), ("app in (web, api)", True),
    ("app notin (web)", False), ("tier", True), ("!tier", False), ("missing", False), ("app=api", False),
])
def test_label_selectors(selector: str, expected: bool) -> None:
    assert matches_labels({"app": "web", "tier": "front"}, selector) is expected


def test_list_filters_by_namespace_labels_and_fields() -> None:
    kube = FakeKube()
    for ns, name, app in (("a", "one", "web"), ("a", "two", "api"), ("b", "three", "web")):
        kube.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns,
                                                                        "labels": {"app": app}}})
    assert [o["metadata"]["name"] for o in kube.list(resource_path("v1", "configmaps", "a"))] == ["one", "two"]
    assert [o["metadata"]["name"] for o in kube.list(resource_path("v1", "configmaps"), "app=web")] == ["one", "three"]
    assert [o["metadata"]["name"] for o in kube.list(resource_path("v1", "configmaps"), None,
                                                     "metadata.name=two")] == ["two"]
