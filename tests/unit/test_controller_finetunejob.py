"""The FineTuneJob controller's sequencing against the in-memory API (tests/support/fake_kube.py).

Each test plays the Job controller and the kubelet by writing Job status and pods into the fake, runs
`reconcile` passes, and checks what the controller wrote. Mirrors tests/cluster/test_finetunejob*.py
(named per test); what needs a real API server (CRD schemas, admission, RBAC, timing) stays there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from recops.api import conditions as c
from recops.api import contracts
from recops.api.contracts import LINEAGE_LABEL
from recops.builders import finetunejob as builders
from recops.builders.common import BuilderSettings
from recops.controllers.cache import WatchCache
from recops.controllers.finetunejob import JOB_CREATED, FineTuneJobController
from tests.support.fake_kube import FakeKube, ManualClock, owner_reference

NS = "shop"
CHILD_KINDS = ("Service", "Job")


class WatchFedController(FineTuneJobController):
    """The controller as the operator runs it: reading a WatchCache that, before each pass, has been told every change
    the API server made so far (what the operator's watch streams deliver)."""

    def __init__(self, kube: FakeKube, *args: Any, **kwargs: Any) -> None:
        super().__init__(kube, *args, cache=WatchCache(pod_owner_label=contracts.owner_label("FineTuneJob")), **kwargs)
        self.fake, self.delivered = kube, 0

    def reconcile(self, *args: Any, **kwargs: Any) -> Any:
        assert self.cache is not None
        for event, obj in self.fake.watch_events[self.delivered:]:
            if obj["kind"] in ("FineTuneJob", "Job", "Pod"):
                self.cache.observe(obj, deleted=event == "DELETED")
        self.delivered = len(self.fake.watch_events)
        return super().reconcile(*args, **kwargs)


# Every sequencing test runs twice: every read from the API server, and reads from the watches' cache.
@pytest.fixture(params=[FineTuneJobController, WatchFedController], ids=["api-reads", "watch-cache"])
def controller(request: pytest.FixtureRequest, kube: FakeKube, clock: ManualClock,
               posted: list[tuple[str, str]]) -> FineTuneJobController:
    controller_class: type[FineTuneJobController] = request.param
    return controller_class(kube, BuilderSettings(), post_event=lambda _, t, reason, __: posted.append((t, reason)),
                            start_timeout_s=60, now=clock)


def finetunejob(kube: FakeKube, name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "click-through", "dataset": {"uri": "/data/events.jsonl"},
                            "output": {"uri": "/models"}, "backoffLimit": 0}
    body.update(spec)
    return kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
                     "metadata": {"name": name, "namespace": NS}, "spec": body})


def report(**fields: Any) -> str:
    message = {"schemaVersion": 1, "modelUri": "/models/shop/m-1", "modelVersion": "m-1",
               "metrics": {"auc": 0.83}, "baseline": {"popularity": {"auc": 0.61}, "bm25": {"auc": 0.7}},
               "currentModel": None, "gatePassed": None, "error": None}
    message.update(fields)
    return json.dumps(message)


def job_of(kube: FakeKube, name: str) -> dict[str, Any] | None:
    return kube.obj("Job", NS, builders.job_name(name))


def status(kube: FakeKube, name: str) -> dict[str, Any]:
    found = kube.obj("FineTuneJob", NS, name)
    assert found is not None
    return found.get("status") or {}


def conditions(kube: FakeKube, name: str) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in status(kube, name).get("conditions") or []}


def pod(kube: FakeKube, clock: ManualClock, name: str, number: int, phase: str, *, exit_code: int | None = None,
        message: str | None = None, waiting: str | None = None) -> dict[str, Any]:
    """A trainer pod of the FineTuneJob's Job in `phase`, as the Job controller and the kubelet leave it."""
    job = job_of(kube, name)
    assert job is not None
    if phase in ("Succeeded", "Failed"):
        state: dict[str, Any] = {"terminated": {"exitCode": exit_code if exit_code is not None else 0,
                                                "reason": "Completed" if phase == "Succeeded" else "Error",
                                                "message": message, "finishedAt": clock.text()}}
    elif phase == "Running":
        state = {"running": {"startedAt": clock.text()}}
    else:
        state = {"waiting": {"reason": waiting or "ContainerCreating", "message": "back-off pulling image"}}
    started = {"startTime": clock.text()} if phase != "Pending" else {}
    return kube.put({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job['metadata']['name']}-{number}", "namespace": NS,
                     "labels": job["spec"]["template"]["metadata"]["labels"],
                     "ownerReferences": [owner_reference(job)]},
        "spec": job["spec"]["template"]["spec"],
        "status": {"phase": phase, **started,
                   "containerStatuses": [{"name": builders.CONTAINER_NAME, "state": state}]},
    }, manager="kubelet")


def job_finished(kube: FakeKube, name: str, type_: str, *, reason: str = "", succeeded: int = 0,
                 failed: int = 0, when: str = "2026-12-01T08:10:00Z") -> None:
    kube.set_status("Job", NS, builders.job_name(name), {
        "conditions": [{"type": type_, "status": "True", "reason": reason, "lastTransitionTime": when}],
        "succeeded": succeeded, "failed": failed, "completionTime": when if type_ == "Complete" else None})


def identities(kube: FakeKube, name: str) -> dict[str, tuple[str, str]]:
    return {o["kind"]: (o["metadata"]["uid"], o["metadata"]["resourceVersion"])
            for kind in CHILD_KINDS for o in kube.all(kind, NS)
            if (o["metadata"].get("labels") or {}).get("recops.dev/finetunejob") == name}


# --- children ---------------------------------------------------------------------------------------
def test_the_first_pass_creates_every_child_owned_and_later_passes_write_nothing(
    kube: FakeKube, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_idle_resync_and_a_second_reconcile_change_nothing, test_restart_and_upgrade_create_nothing_new."""
    ftj = finetunejob(kube, "ranker")
    result = controller.reconcile(NS, "ranker", apply_children=True)
    # The pass that creates the Job leaves the status to the next, which the Job's watch event brings.
    assert result.job_created and not result.status_written and result.phase is None
    first = controller.reconcile(NS, "ranker")
    assert first.status_written and first.phase == "Pending"
    children = {kind: kube.obj(kind, NS, o["metadata"]["name"]) for kind in CHILD_KINDS for o in kube.all(kind, NS)}
    assert sorted(children) == ["Job"]  # the config travels in the pod, progress in the log
    for child in children.values():
        assert child is not None and child["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    assert ("Normal", JOB_CREATED) in posted
    assert status(kube, "ranker")["observedGeneration"] == 1
    # Two writes for a new FineTuneJob (and the JobCreated Event): its Job, then one status write.
    assert [(w[0], w[1], w[4]) for w in kube.writes if w[1] != "Event"] == [
        ("PATCH", "Job", None), ("PATCH", "FineTuneJob", "status")]

    before, writes = identities(kube, "ranker"), len(kube.writes)
    again = controller.reconcile(NS, "ranker")  # a resync
    assert not again.status_written and not again.job_created and len(kube.writes) == writes
    restarted = controller.reconcile(NS, "ranker", apply_children=True)  # an operator restart or upgrade
    assert not restarted.job_created and not restarted.status_written
    assert identities(kube, "ranker") == before  # nothing recreated, nothing changed


def test_someone_elses_object_under_a_childs_name_waits_then_recovers(
    kube: FakeKube, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_someone_elses_object_under_a_childs_name_waits_then_recovers."""
    finetunejob(kube, "ranker")
    theirs = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": builders.job_name("ranker"), "namespace": NS},
              "spec": {"suspend": True, "template": {"spec": {"containers": []}}}}
    kube.put(theirs)
    result = controller.reconcile(NS, "ranker", apply_children=True)
    assert not result.job_created
    ready = conditions(kube, "ranker")[c.READY]
    assert ready["reason"] == c.CHILD_CONFLICT and "Job ranker exists and is not owned by this FineTuneJob" in \
        ready["message"]
    assert ("Warning", c.CHILD_CONFLICT) in posted
    assert not kube.writes_of("Job")  # neither taken over nor changed
    assert controller.reconcile(NS, "ranker").status_written is False  # a resync: no new Event, no write

    kube.remove("Job", NS, builders.job_name("ranker"))
    assert controller.reconcile(NS, "ranker").job_created
    controller.reconcile(NS, "ranker")  # the new Job's watch event
    assert conditions(kube, "ranker")[c.READY]["reason"] == c.PENDING


def test_someone_elses_service_under_a_workers_service_name_is_not_taken_over(
    kube: FakeKube, controller: FineTuneJobController,
) -> None:
    finetunejob(kube, "ranker", resources={"workers": 2})
    kube.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": builders.service_name("ranker"),
                                                                   "namespace": NS}, "spec": {"ports": []}})
    assert not controller.reconcile(NS, "ranker", apply_children=True).job_created
    assert conditions(kube, "ranker")[c.READY]["reason"] == c.CHILD_CONFLICT
    assert not kube.writes_of("Service", "PATCH") and job_of(kube, "ranker") is None


# --- progress -----------------------------------------------------------------------------------------
def test_progress_is_read_from_the_running_trainers_log_and_written_when_it_changes(
    kube: FakeKube, controller: FineTuneJobController, clock: ManualClock,
) -> None:
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    running = pod(kube, clock, "ranker", 1, "Running")
    kube.set_log(NS, running["metadata"]["name"], "loading model\n")  # no progress line yet
    assert controller.reconcile(NS, "ranker").phase == "Running"
    assert "progress" not in status(kube, "ranker")

    line = contracts.progress_record(30, 120, 0.25, 25.0, "2026-12-01T08:00:05Z")
    kube.set_log(NS, running["metadata"]["name"], f"loading model\n{line}\nstep 30/120 (25%) epoch 0.25\n")
    writes = len(kube.writes_of("FineTuneJob", sub="status"))
    assert controller.reconcile(NS, "ranker").status_written
    assert status(kube, "ranker")["progress"] == {"step": 30, "totalSteps": 120, "epoch": 0.25, "percent": 25.0,
                                                  "updatedAt": "2026-12-01T08:00:05Z"}
    assert not controller.reconcile(NS, "ranker").status_written  # the same line: nothing to write
    assert len(kube.writes_of("FineTuneJob", sub="status")) == writes + 1

    kube.fail_next("GET", "Pod", 502, "error dialing backend", name=running["metadata"]["name"])
    assert not controller.reconcile(NS, "ranker").status_written  # an unreadable log keeps what was read
    assert status(kube, "ranker")["progress"]["step"] == 30


def test_the_final_progress_line_is_read_when_the_trainer_succeeds(
    kube: FakeKube, controller: FineTuneJobController, clock: ManualClock,
) -> None:
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    done = pod(kube, clock, "ranker", 1, "Succeeded", message=report())
    kube.set_log(NS, done["metadata"]["name"], contracts.progress_record(120, 120, 1.0, 100.0, "2026-12-01T08:09:00Z"))
    job_finished(kube, "ranker", "Complete", succeeded=1)
    result = controller.reconcile(NS, "ranker")
    assert result.phase == "Succeeded" and result.final
    assert status(kube, "ranker")["progress"]["percent"] == 100.0


def test_a_missing_secret_waits_then_recovers(kube: FakeKube, controller: FineTuneJobController) -> None:
    """Mirrors test_missing_secret_and_claim_wait_then_recover."""
    finetunejob(kube, "ranker", dataset={"uri": "s3://bucket/events.jsonl", "credentialsSecretRef": {"name": "s3"}})
    assert not controller.reconcile(NS, "ranker", apply_children=True).job_created
    ready = conditions(kube, "ranker")[c.READY]
    assert ready["reason"] == c.MISSING_DEPENDENCY and "Secret s3" in ready["message"]
    assert kube.all("ConfigMap", NS) == []  # nothing is created before the dependencies exist
    kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": NS}, "data": {}})
    assert controller.reconcile(NS, "ranker").job_created


# --- a run --------------------------------------------------------------------------------------
def test_running_then_complete_is_succeeded_with_the_termination_message(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_create_to_succeeded_with_the_termination_message."""
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    clock.advance(5)
    pod(kube, clock, "ranker", 1, "Running")
    running = controller.reconcile(NS, "ranker")
    assert running.phase == "Running" and status(kube, "ranker")["attempts"] == 1
    assert status(kube, "ranker")["startTime"] == clock.text()
    clock.advance(60)
    kube.remove("Pod", NS, f"{builders.job_name('ranker')}-1")
    pod(kube, clock, "ranker", 1, "Succeeded", message=report())
    job_finished(kube, "ranker", "Complete", succeeded=1, when=clock.text())
    done = controller.reconcile(NS, "ranker")
    assert done.final and done.phase == "Succeeded"
    st = status(kube, "ranker")
    assert st["model"] == {"uri": "/models/shop/m-1", "version": "m-1"} and st["metrics"] == {"auc": 0.83}
    assert st["completionTime"] == clock.text() and st["keyMetric"] == "auc=0.83"
    found = conditions(kube, "ranker")
    assert found[c.COMPLETE]["status"] == "True" and found[c.READY]["reason"] == c.NO_GATE
    assert [r for _, r in posted] == [JOB_CREATED, c.RUNNING, c.SUCCEEDED]
    # One per pass that changed something; the pass that created the Job wrote none, and the next found its pod
    # running: no Pending.
    assert len(kube.writes_of("FineTuneJob", sub="status")) == 2
    assert all(w[4] == "status" for w in kube.writes_of("FineTuneJob"))  # the user's object is never written


def test_gate_not_passed_is_complete_but_not_ready(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_gate_not_passed_is_complete_but_not_ready."""
    finetunejob(kube, "ranker", evaluation={"gate": {"metric": "auc", "beatBaselines": ["bm25"]}})
    controller.reconcile(NS, "ranker", apply_children=True)
    pod(kube, clock, "ranker", 1, "Succeeded", message=report(metrics={"auc": 0.65}, gatePassed=False))
    job_finished(kube, "ranker", "Complete", succeeded=1)
    controller.reconcile(NS, "ranker")
    found = conditions(kube, "ranker")
    assert found[c.COMPLETE]["status"] == "True" and found[c.GATE_PASSED]["status"] == "False"
    assert found[c.READY]["status"] == "False" and found[c.READY]["reason"] == c.GATE_NOT_MET
    assert status(kube, "ranker")["gatePassed"] is False and ("Warning", c.GATE_NOT_MET) in posted


def test_a_failed_attempt_is_retried_and_counted_then_the_backoff_limit_fails_it(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_a_failed_attempt_is_retried_and_counted and test_failed_job_reports_the_exit_code."""
    finetunejob(kube, "ranker", backoffLimit=1)
    controller.reconcile(NS, "ranker", apply_children=True)
    assert job_of(kube, "ranker")["spec"]["backoffLimit"] == 1  # type: ignore[index]
    pod(kube, clock, "ranker", 1, "Failed", exit_code=3, message="Traceback\nValueError: no rows")
    kube.set_status("Job", NS, builders.job_name("ranker"), {"failed": 1})
    retrying = controller.reconcile(NS, "ranker")
    assert retrying.phase == "Pending"
    ready = conditions(kube, "ranker")[c.READY]
    assert ready["reason"] == c.RETRYING and "after 1 failed attempt(s), backoffLimit 1" in ready["message"]
    assert "exit code 3: ValueError: no rows" in ready["message"] and ("Warning", c.RETRYING) in posted

    clock.advance(10)
    pod(kube, clock, "ranker", 2, "Running")
    assert controller.reconcile(NS, "ranker").phase == "Running"
    assert status(kube, "ranker")["attempts"] == 2
    kube.remove("Pod", NS, f"{builders.job_name('ranker')}-2")
    pod(kube, clock, "ranker", 2, "Failed", exit_code=4, message="RuntimeError: out of memory")
    job_finished(kube, "ranker", "Failed", reason="BackoffLimitExceeded", failed=2)
    failed = controller.reconcile(NS, "ranker")
    assert failed.final and failed.phase == "Failed"
    found = conditions(kube, "ranker")
    assert found[c.FAILED]["reason"] == c.BACKOFF_LIMIT_EXCEEDED and "exit code 4" in found[c.FAILED]["message"]
    assert status(kube, "ranker")["attempts"] == 2 and ("Warning", c.BACKOFF_LIMIT_EXCEEDED) in posted


def test_suspend_and_resume_keep_the_job_and_its_model_version(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_suspend_and_resume_keep_the_model_version."""
    finetunejob(kube, "ranker", suspend=True)
    controller.reconcile(NS, "ranker", apply_children=True)
    controller.reconcile(NS, "ranker")  # the new Job's watch event
    job = job_of(kube, "ranker")
    assert job is not None and job["spec"]["suspend"] is True
    assert status(kube, "ranker")["phase"] == "Suspended"
    assert conditions(kube, "ranker")[c.SUSPENDED]["status"] == "True" and ("Normal", c.SPEC_SUSPENDED) in posted

    kube.patch("FineTuneJob", NS, "ranker", {"spec": {"suspend": False}})  # kubectl patch: generation 2
    resumed = controller.reconcile(NS, "ranker", apply_children=True)  # the spec handler's pass
    after = job_of(kube, "ranker")
    assert after is not None and after["metadata"]["uid"] == job["metadata"]["uid"] and not after["spec"]["suspend"]
    assert after["spec"]["template"] == job["spec"]["template"]  # same model version, same pod
    assert resumed.phase == "Pending" and status(kube, "ranker")["observedGeneration"] == 2
    suspended = conditions(kube, "ranker")[c.SUSPENDED]
    assert suspended["status"] == "False" and suspended["reason"] == c.RESUMED and ("Normal", c.RESUMED) in posted


def test_a_deleted_job_after_success_is_not_recreated(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController,
) -> None:
    """Mirrors test_ttl_deleting_the_job_does_not_retrain."""
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    pod(kube, clock, "ranker", 1, "Succeeded", message=report())
    job_finished(kube, "ranker", "Complete", succeeded=1)
    controller.reconcile(NS, "ranker")
    final = status(kube, "ranker")
    kube.remove("Job", NS, builders.job_name("ranker"))  # the TTL controller
    assert kube.all("Pod", NS) == []  # its pods went with it (garbage collection)
    for apply_children in (False, True):
        result = controller.reconcile(NS, "ranker", apply_children=apply_children)
        assert result.final and not result.job_created
    assert job_of(kube, "ranker") is None and status(kube, "ranker") == final


def test_a_job_that_cannot_create_its_pod_says_why_then_gives_up_after_the_start_timeout(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_a_pod_admission_refuses_fails_the_job_after_the_start_timeout."""
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    job = job_of(kube, "ranker")
    assert job is not None
    kube.put({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "ranker-failed-create", "namespace": NS},
              "involvedObject": {"kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]},
              "reason": "FailedCreate", "type": "Warning", "lastTimestamp": clock.text(),
              "message": 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'})
    clock.advance(5)
    assert controller.reconcile(NS, "ranker").phase == "Pending"
    assert conditions(kube, "ranker")[c.READY]["reason"] == c.PENDING  # young: not asked why yet
    clock.advance(10)
    controller.reconcile(NS, "ranker")
    ready = conditions(kube, "ranker")[c.READY]
    assert ready["reason"] == c.POD_CREATE_FAILED and "violates PodSecurity" in ready["message"]
    clock.advance(50)
    gave_up = controller.reconcile(NS, "ranker")
    assert gave_up.final and gave_up.phase == "Failed"
    assert "gave up" in conditions(kube, "ranker")[c.FAILED]["message"]
    assert job_of(kube, "ranker") is None  # its pod must not hold resources
    assert [w[0] for w in kube.writes_of("Job", "DELETE")] == ["DELETE"]


def test_a_container_that_cannot_start_gives_up_after_the_start_timeout(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController,
) -> None:
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    pod(kube, clock, "ranker", 1, "Pending", waiting="ImagePullBackOff")
    controller.reconcile(NS, "ranker")
    assert conditions(kube, "ranker")[c.READY]["reason"] == "ImagePullBackOff"
    clock.advance(59)
    assert controller.reconcile(NS, "ranker").phase == "Pending"  # not yet
    clock.advance(2)
    assert controller.reconcile(NS, "ranker").phase == "Failed" and job_of(kube, "ranker") is None


def test_deadline_passes_then_raising_it_reruns_in_a_new_job_with_the_same_model_version(
    kube: FakeKube, clock: ManualClock, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_deadline_passes_then_raising_it_reruns_and_resumes."""
    finetunejob(kube, "ranker", activeDeadlineSeconds=30)
    controller.reconcile(NS, "ranker", apply_children=True)
    first = job_of(kube, "ranker")
    assert first is not None
    clock.advance(31)
    job_finished(kube, "ranker", "Failed", reason="DeadlineExceeded", when=clock.text())
    assert controller.reconcile(NS, "ranker").phase == "Failed"
    assert conditions(kube, "ranker")[c.FAILED]["reason"] == c.DEADLINE_EXCEEDED

    clock.advance(5)
    kube.patch("FineTuneJob", NS, "ranker", {"spec": {"activeDeadlineSeconds": 600}})
    rerun = controller.reconcile(NS, "ranker", apply_children=True)
    assert rerun.phase == "Pending" and conditions(kube, "ranker")[c.FAILED]["reason"] == c.DEADLINE_RAISED
    assert job_of(kube, "ranker") is None and ("Normal", c.DEADLINE_RAISED) in posted  # the old Job is deleted
    assert controller.reconcile(NS, "ranker").job_created
    second = job_of(kube, "ranker")
    assert second is not None and second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["spec"]["activeDeadlineSeconds"] == 600
    assert builders.current_model_of(second) == builders.current_model_of(first)
    args = second["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == first["spec"]["template"]["spec"]["containers"][0]["args"]  # same --model-version


def test_a_spec_the_api_server_rejects_is_invalid_without_retries(
    kube: FakeKube, controller: FineTuneJobController, posted: list[tuple[str, str]],
) -> None:
    """Mirrors test_a_spec_the_api_server_rejects_is_invalid_without_retries."""
    finetunejob(kube, "ranker")
    kube.fail_next("PATCH", "Job", 422, 'Job.batch "ranker-trainer" is invalid: spec.template.spec.volumes[0].name')
    result = controller.reconcile(NS, "ranker", apply_children=True)
    assert result.phase == "Failed" and not result.final  # InvalidSpec: a new generation may fix it
    failed = conditions(kube, "ranker")[c.FAILED]
    assert failed["reason"] == c.INVALID_SPEC and "spec.template.spec.volumes[0].name" in failed["message"]
    assert ("Warning", c.INVALID_SPEC) in posted
    writes = len(kube.writes)
    for _ in range(3):  # resyncs do not ask again
        controller.reconcile(NS, "ranker")
    assert len(kube.writes) == writes and job_of(kube, "ranker") is None
    assert controller.reconcile(NS, "ranker", apply_children=True).job_created  # a restart asks again


def test_a_lineage_passes_the_serving_model_as_current(kube: FakeKube, controller: FineTuneJobController) -> None:
    """Mirrors test_a_lineage_passes_the_serving_model_as_current."""
    kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment",
              "metadata": {"name": "shop-ranker", "namespace": NS}, "spec": {"model": {"lineage": "ranker"}},
              "status": {"stable": {"modelUri": "/models/shop/ranker-0", "modelVersion": "ranker-0"}}})
    kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
              "metadata": {"name": "ranker-1", "namespace": NS, "labels": {LINEAGE_LABEL: "ranker"}},
              "spec": {"task": "click-through", "dataset": {"uri": "/data/events.jsonl"}, "output": {"uri": "/models"}}})
    controller.reconcile(NS, "ranker-1", apply_children=True)
    job = job_of(kube, "ranker-1")
    assert job is not None and builders.current_model_of(job) == "/models/shop/ranker-0"


def test_deleting_the_finetunejob_collects_its_children(kube: FakeKube, controller: FineTuneJobController) -> None:
    """Mirrors test_deleting_the_finetunejob_collects_its_children (the fake's garbage collector)."""
    finetunejob(kube, "ranker")
    controller.reconcile(NS, "ranker", apply_children=True)
    kube.remove("FineTuneJob", NS, "ranker")
    assert identities(kube, "ranker") == {}
    assert controller.reconcile(NS, "ranker").gone
