"""What every controller does the same way (recops.controllers.status, recops.controllers.conditions): parse a
body, keep the status it owns, write only what changed, set conditions."""

from __future__ import annotations

from typing import Any

from recops.api import conditions as c
from recops.api.monitorpolicy import MonitorPolicy
from recops.controllers.conditions import Conditions, ConditionState
from recops.controllers.status import owned_status, parse, status_patch, write_status
from tests.support.fake_kube import FakeKube

NS = "shop"


def policy_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy",
            "metadata": {"name": "watch", "namespace": NS},
            "spec": {"targetRef": {"name": "ranker"},
                     "rules": [{"name": "ctr", "metric": "ctr", "threshold": {"below": 0.1}}], **spec},
            "status": {"whatever": 1}}


def test_parse_gives_the_model_or_every_reason_it_cannot() -> None:
    policy, problem = parse(policy_body(), MonitorPolicy)
    assert policy is not None and problem is None and policy.spec.target_ref.name == "ranker"
    policy, problem = parse(policy_body(interval="soon"), MonitorPolicy)
    assert policy is None and problem is not None and "interval" in problem
    # What the schema cannot say comes from `problems`, after the schema passed.
    policy, problem = parse(policy_body(), MonitorPolicy, lambda p: [f"no target {p.spec.target_ref.name} yet"])
    assert (policy, problem) == (None, "no target ranker yet")


def test_owned_status_is_a_copy_of_the_owned_non_empty_fields() -> None:
    stored = {"phase": "Serving", "progress": {"percent": 5}, "rejectedModels": [], "canary": None,
              "stable": {"modelVersion": "a"}}
    owned = owned_status(stored, ("phase", "rejectedModels", "canary", "stable"))
    assert owned == {"phase": "Serving", "stable": {"modelVersion": "a"}}
    owned["stable"]["modelVersion"] = "b"
    assert stored["stable"] == {"modelVersion": "a"}  # a pass may change its copy in place


def test_write_status_patches_only_what_changed_and_nothing_when_nothing_did() -> None:
    kube = FakeKube()
    kube.put(policy_body())
    path = f"/apis/recops.dev/v1alpha1/namespaces/{NS}/monitorpolicies/watch/status"
    old = {"rules": [{"name": "ctr"}], "baseline": {"modelVersion": "a"}}
    assert status_patch(old, {"rules": [{"name": "ctr"}], "observedGeneration": 2}) == \
        {"baseline": None, "observedGeneration": 2}
    assert write_status(kube, path, old, {**old, "observedGeneration": 2})
    assert not write_status(kube, path, dict(old), dict(old))
    status_writes = kube.writes_of("MonitorPolicy", sub="status")
    assert len(status_writes) == 1
    stored = kube.obj("MonitorPolicy", NS, "watch")
    assert stored is not None and stored["status"]["observedGeneration"] == 2


def test_conditions_keep_their_transition_time_until_the_status_changes() -> None:
    conditions = Conditions([], generation=3, now="2026-12-01T08:00:00Z")
    conditions.put(c.READY, ConditionState(False, c.WAITING_FOR_MODEL, "no model"))
    later = Conditions(conditions.items, generation=4, now="2026-12-01T08:05:00Z")
    later.set(c.READY, False, c.QUERY_FAILED, "refused")
    later.set(c.HEALTHY, True, c.RULES_OK)
    ready = later.get(c.READY)
    assert ready is not None and ready["lastTransitionTime"] == "2026-12-01T08:00:00Z"
    assert (ready["reason"], ready["observedGeneration"]) == (c.QUERY_FAILED, 4)
    later.set(c.READY, True, c.RECONCILED)
    assert (later.get(c.READY) or {})["lastTransitionTime"] == "2026-12-01T08:05:00Z"
    assert [x["type"] for x in later.ordered(c.MONITORPOLICY_CONDITIONS)] == [c.READY, c.HEALTHY]
