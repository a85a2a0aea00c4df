"""The watch cache (controllers/cache.py) and the FineTuneJob passes that read it instead of the API server."""

from __future__ import annotations

from typing import Any

from recops.api import contracts
from recops.builders import finetunejob as builders
from recops.builders.common import BuilderSettings
from recops.controllers.cache import WatchCache
from recops.controllers.finetunejob import FineTuneJobController
from tests.support.fake_kube import FakeKube, ManualClock
from tests.unit.test_controller_finetunejob import NS, finetunejob, job_finished, pod, report, status

OWNER = contracts.owner_label("FineTuneJob")


def obj(kind: str, name: str, version: str, uid: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": NS, "uid": uid, "resourceVersion": version},
            **fields}


def test_an_older_state_never_replaces_a_newer_one_of_the_same_object() -> None:
    cache = WatchCache(OWNER)
    cache.observe(obj("Job", "a", "12", status={"active": 1}))  # e.g. what a write returned
    cache.observe(obj("Job", "a", "11", status={}))  # a watch event from before that write
    assert (cache.get("Job", NS, "a") or {})["status"] == {"active": 1}
    newest = obj("Job", "a", "13", status={"succeeded": 1})
    newest["metadata"]["managedFields"] = [{"manager": "kube-controller-manager", "fieldsV1": {"f:status": {}}}]
    cache.observe(newest)
    kept = cache.get("Job", NS, "a") or {}
    assert kept["status"] == {"succeeded": 1} and "managedFields" not in kept["metadata"]  # no pass reads them
    assert newest["metadata"]["managedFields"]  # what was observed is left as it was
    # A new object of the same name starts again, whatever its version; the old one's deletion does not remove it.
    cache.observe(obj("Job", "a", "5", uid="u2"))
    cache.observe(obj("Job", "a", "14", uid="u1"), deleted=True)
    assert (cache.get("Job", NS, "a") or {})["metadata"]["uid"] == "u2"
    cache.observe(obj("Job", "a", "6", uid="u2"), deleted=True)
    assert cache.get("Job", NS, "a") is None and len(cache) == 0


def test_pods_are_found_by_their_owner_label_and_copies_are_handed_out() -> None:
    cache = WatchCache(OWNER)
    for name, owner in (("p1", "ranker"), ("p2", "ranker"), ("p3", "other")):
        pod_ = obj("Pod", name, "1", uid=name)
        pod_["metadata"]["labels"] = {OWNER: owner}
        cache.observe(pod_)
    assert [p["metadata"]["name"] for p in cache.pods(NS, "ranker")] == ["p1", "p2"]
    cache.pods(NS, "ranker")[0]["metadata"]["name"] = "changed by a pass"
    assert [p["metadata"]["name"] for p in cache.pods(NS, "ranker")] == ["p1", "p2"]
    gone = obj("Pod", "p1", "2", uid="p1")
    gone["metadata"]["labels"] = {OWNER: "ranker"}
    cache.observe(gone, deleted=True)
    assert [p["metadata"]["name"] for p in cache.pods(NS, "ranker")] == ["p2"]
    assert cache.pods("elsewhere", "ranker") == []


class CountingKube(FakeKube):
    """The in-memory API, counting reads as (verb, path without the query)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.reads: list[str] = []

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if method == "GET":
            self.reads.append(path.split("?")[0].rsplit("/", 1)[-1])
        return super().request(method, path, *args, **kwargs)


def deliver(kube: FakeKube, cache: WatchCache, upto: int | None = None) -> int:
    """Tell the cache the API server's changes (all, or the first `upto`), as the watch streams would."""
    events = kube.watch_events[:upto]
    for event, body in events:
        cache.observe(body, deleted=event == "DELETED")
    return len(events)


def test_passes_read_the_watch_cache_and_the_final_verdict_reads_the_api_server(clock: ManualClock) -> None:
    kube = CountingKube(clock)
    cache = WatchCache(OWNER)
    controller = FineTuneJobController(kube, BuilderSettings(), now=clock, cache=cache)
    body = finetunejob(kube, "ranker")
    # The spec pass gets the object from its watch event; the Job is not streamed yet, so it is asked for (it could be
    # someone else's), and a Job created in this pass has no pods to list.
    deliver(kube, cache)
    assert controller.reconcile(NS, "ranker", apply_children=True, body=body).job_created
    assert kube.reads == [builders.job_name("ranker")]

    # The Job's first event: nothing is read, not even its pods (its status counts none yet).
    kube.reads.clear()
    deliver(kube, cache)
    controller.reconcile(NS, "ranker", read_log=False)
    assert kube.reads == []

    clock.advance(5)
    running = pod(kube, clock, "ranker", 1, "Running")
    kube.set_status("Job", NS, builders.job_name("ranker"), {"active": 1})
    seen = deliver(kube, cache)
    assert controller.reconcile(NS, "ranker", read_log=False).phase == "Running"
    assert kube.reads == []  # the FineTuneJob, its Job and its pod, all from memory
    assert controller.reconcile(NS, "ranker").phase == "Running"  # a progress tick reads the log, and only that
    assert kube.reads == ["log"]

    # The pod succeeds and its Job completes, but the watch has told only the Job's change so far: the pass that
    # finds the job finished lists the pods itself, so the verdict carries the termination message.
    clock.advance(60)
    kube.remove("Pod", NS, running["metadata"]["name"])
    pod(kube, clock, "ranker", 1, "Succeeded", message=report())
    job_finished(kube, "ranker", "Complete", succeeded=1, when=clock.text())
    pod_events = len(kube.watch_events) - 1
    for event, changed in kube.watch_events[seen:pod_events]:
        if changed["kind"] != "Pod":
            cache.observe(changed, deleted=event == "DELETED")
    cache.observe(kube.watch_events[-1][1])  # the Job's Complete
    kube.reads.clear()
    done = controller.reconcile(NS, "ranker", read_log=False)
    assert done.final and done.phase == "Succeeded"
    assert status(kube, "ranker")["metrics"] == {"auc": 0.83}
    assert "pods" in kube.reads


def test_a_job_counting_pods_the_watch_has_not_shown_yet_lists_them(clock: ManualClock) -> None:
    """After a start the pod stream may lag the Job stream: a Job that counts a pod the cache lacks is listed."""
    kube = CountingKube(clock)
    cache = WatchCache(OWNER)
    controller = FineTuneJobController(kube, BuilderSettings(), now=clock, cache=cache)
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    clock.advance(5)
    pod(kube, clock, "ranker", 1, "Running")
    kube.set_status("Job", NS, builders.job_name("ranker"), {"active": 1})
    for event, body in kube.watch_events:
        if body["kind"] != "Pod":
            cache.observe(body, deleted=event == "DELETED")
    kube.reads.clear()
    assert controller.reconcile(NS, "ranker", read_log=False).phase == "Running"
    assert kube.reads == ["pods"]
