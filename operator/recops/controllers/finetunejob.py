"""The FineTuneJob controller: read, build, apply, status.

One pass (`reconcile`) is level-based and idempotent: it reads the FineTuneJob, its trainer
Job and the Job's pods; server-side applies the children the spec asks for (nothing new when
they exist); computes the status and writes it through the status subresource only when it
changed. A finished FineTuneJob's status is final: no Job is ever created for it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recops.api import conditions as c
from recops.api.common import API_VERSION, format_time
from recops.api.contracts import LINEAGE_LABEL, last_progress
from recops.api.finetunejob import KIND, PLURAL, FineTuneJob
from recops.api.recmodeldeployment import PLURAL as RMD_PLURAL
from recops.builders import finetunejob as builders
from recops.builders.common import BuilderSettings, label_value
from recops.controllers import finetunejob_status as st
from recops.controllers.cache import WatchCache
from recops.controllers.conditions import age_s, stored_invalid
from recops.controllers.kube import ApiError, Kube, is_rejection, object_path, rejection, resource_path
from recops.controllers.status import EventPoster, ignore_event, parse, write_status

# A Job without a pod after this long is asked why (its FailedCreate Events); before, it is just young.
POD_CREATE_GRACE_S = 10.0

log = logging.getLogger("recops.controllers.finetunejob")

# The tail of the trainer's log read for its newest progress line: bounded, so a chatty trainer costs little.
PROGRESS_TAIL_LINES = 100
PROGRESS_LIMIT_BYTES = 64 * 1024
PROGRESS_READ_TIMEOUT_S = 5.0  # a node that does not answer must not hold the pass up
# Fields of a batch/v1 Job that may change while it exists (those FineTuneJob lets users change).
MUTABLE_JOB_FIELDS = ("suspend", "activeDeadlineSeconds")
JOB_CREATED = "JobCreated"  # Event reason: the trainer Job was created.
# Ready reasons that say something blocks the job; each transition into one is also a Warning Event.
BLOCKED_REASONS = (c.MISSING_DEPENDENCY, c.CHILD_CONFLICT, c.UNSCHEDULABLE, c.RETRYING, c.POD_CREATE_FAILED, *c.CONTAINER_START_FAILURES)
INVALID_PREFIX = "invalid spec: "


def ftj_path(namespace: str, name: str, subresource: str | None = None) -> str:
    return resource_path(API_VERSION, PLURAL, namespace, name, subresource)


def job_path(namespace: str, name: str) -> str:
    return resource_path("batch/v1", "jobs", namespace, builders.job_name(name))


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Seen:
    """What a pass found of the Job before observing its pods."""

    job: dict[str, Any] | None
    waiting: tuple[str, str] | None  # (Ready reason, message) of what blocks the Job's creation
    job_deleting: bool
    job_created: bool  # by this pass


@dataclass
class PassResult:
    """What one pass did (for metrics, logs and tests)."""

    phase: str | None = None
    applied: bool = False
    job_created: bool = False
    status_written: bool = False
    final: bool = False
    gone: bool = False


class FineTuneJobController:
    def __init__(self, kube: Kube, settings: BuilderSettings, post_event: EventPoster = ignore_event,
                 start_timeout_s: float | None = None, now: Callable[[], datetime] = _utc_now,
                 cache: WatchCache | None = None) -> None:
        self.kube = kube
        self.cache = cache  # what the watches last said (controllers/cache.py); None: every read asks the API server
        self.now = now  # a seam for tests: the controller's only clock
        self.settings = settings
        self.post_event = post_event
        self.start_timeout_s = start_timeout_s  # see st.start_given_up; None: wait for ever

    # --- one pass ---------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str, *, apply_children: bool = False,
                  body: dict[str, Any] | None = None, read_log: bool = True) -> PassResult:
        """Bring one FineTuneJob's children and status in line with its spec and what runs.

        `apply_children`: server-side apply every child even when the Job exists (after a
        spec change or a restart); otherwise only a missing Job (and its companions) is applied.
        `body`: the FineTuneJob as a watch event just delivered it (one GET less); else it is read.
        `read_log`: read the trainer's newest progress line (a pass for a pod's or Job's change need not: the
        progress ticks do, and so does the pass that finds the job finished).
        """
        if body is None:
            body = self.read_finetunejob(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return PassResult(gone=True)  # its children go with it (garbage collection)

        job = self.read_job(namespace, name)
        if st.is_final(body.get("status")):
            if st.reruns_after_deadline(body):
                return self._rerun_after_deadline(body, job)
            return self._keep_final(body, job)
        if job is not None and st.restarting(body.get("status")) and self._is_replaced(body, job):
            # The Job that ran out of time (a rerun was recorded before it was deleted): delete it, wait.
            self._delete_job(namespace, name, job)
            job = self.kube.get(job_path(namespace, name))

        return self._reconcile_unfinished(body, job, apply_children, read_log)

    def _reconcile_unfinished(self, body: dict[str, Any], job: dict[str, Any] | None,
                              apply_children: bool, read_log: bool) -> PassResult:
        """An unfinished FineTuneJob: create (or re-apply) its children unless something blocks them, observe what
        runs, write the status."""
        ftj, invalid = self._parse(body, apply_children)
        result = PassResult()
        waiting: tuple[str, str] | None = None
        if job is not None and not of_a_finetunejob(job):
            # Someone else's Job under this name: nothing is created or taken over until it goes.
            waiting = (c.CHILD_CONFLICT, foreign("Job", builders.job_name(body["metadata"]["name"])))
            job = None
        if job is not None and not owned_by(job, body):
            # A Job of an earlier FineTuneJob of the same name, on its way out: wait for it.
            if ftj is not None and not invalid:
                return self._wait_for_earlier_job(body, ftj)
            job = None
        job_deleting = job is not None and bool(job["metadata"].get("deletionTimestamp"))
        if ftj is not None and invalid is None and waiting is None and not job_deleting and \
                (job is None or apply_children):
            job, waiting, invalid = self._ensure_children(body, ftj, job, result)
        if job is not None and job_deleting and st.restarting(body.get("status")):
            job = None  # the old Job of a rerun: the new one is created once it is gone
        if result.job_created:
            # The next pass, a batch period later (controllers/main.py: CHILD_BATCH_SECONDS), observes the Job and
            # its first pod and writes one status for both.
            return result
        if invalid is not None:
            ftj = None
        seen = Seen(job=job, waiting=waiting, job_deleting=job_deleting, job_created=result.job_created)
        observed, fresh = self._observe(body, seen, fresh=False, read_log=read_log)
        new_status = self._compute_status(body, ftj, observed, invalid)
        if st.is_final(new_status) and not fresh:
            # A verdict that is never taken back rests on what the API server says now, not on the watch's
            # latest word: the pods (their termination message) and the trainer's last progress line.
            observed, _ = self._observe(body, seen, fresh=True, read_log=True)
            new_status = self._compute_status(body, ftj, observed, invalid)
        return self._write_outcome(body, ftj, observed, new_status, result)

    def _parse(self, body: dict[str, Any], apply_children: bool) -> tuple[FineTuneJob | None, str | None]:
        ftj, invalid = parse_finetunejob(body)
        if invalid is None and not apply_children:
            # The API server rejected this generation's children once: do not retry every resync. The
            # spec handlers (a new generation, an operator restart or upgrade) try again.
            invalid = stored_invalid(body, c.FAILED, INVALID_PREFIX)
        return ftj, invalid

    def _wait_for_earlier_job(self, body: dict[str, Any], ftj: FineTuneJob) -> PassResult:
        new_status = st.compute_status(body, ftj, st.Observed(job=None), now=format_time(self.now()))
        new_status["message"] = \
            f"waiting for Job {builders.job_name(body['metadata']['name'])} of an earlier FineTuneJob to go"
        return PassResult(phase=new_status.get("phase"), status_written=self.write_status(body, new_status))

    def _ensure_children(self, body: dict[str, Any], ftj: FineTuneJob, job: dict[str, Any] | None,
                         result: PassResult) -> tuple[dict[str, Any] | None, tuple[str, str] | None, str | None]:
        """Apply the children unless a dependency is missing or a name is taken: (the Job, why it waits, why the API
        server refused the spec)."""
        current_model = builders.current_model_of(job) if job is not None else self.lineage_current_model(ftj)
        missing = self.missing_dependencies(ftj, current_model) if job is None else []
        if missing:
            # Nothing is created until they exist; the resync notices when they do.
            namespace = body["metadata"]["namespace"]
            return job, (c.MISSING_DEPENDENCY, f"waiting for {', '.join(missing)}: not found in {namespace}"), None
        try:
            return self._apply_children(body, ftj, job, current_model, result), None, None
        except ChildConflict as conflict:
            # Someone else's object under a child's name: nothing is created until it goes.
            return job, (c.CHILD_CONFLICT, str(conflict)), None
        except ApiError as error:
            if not is_rejection(error):  # transient or a permission problem: back off, retry
                raise
            return job, None, rejection(error)

    def _observe(self, body: dict[str, Any], seen: Seen, *, fresh: bool, read_log: bool) -> tuple[st.Observed, bool]:
        """The Job's pods, the trainer's progress (`read_log`) and, for a Job without a pod past its grace, why it has
        none; and whether the pods are as the API server lists them now (`fresh` asks for that) rather than as the
        watch last said."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        job = seen.job
        pods: list[dict[str, Any]] = []
        if job is not None and not seen.job_created:  # a Job created in this pass has no pods yet: no need to ask
            pods, fresh = self.pods_of(namespace, name, job, fresh=fresh)
        observed = st.Observed(job=job, pods=of_job(pods, job), waiting=seen.waiting)
        if read_log:
            observed.progress = self.read_progress(observed)
        if job is not None and not observed.pods and not seen.job_deleting and \
                age_s(job, format_time(self.now())) > POD_CREATE_GRACE_S:
            observed.create_failures = self.create_failures(job)
        return observed, fresh or job is None or seen.job_created

    def _compute_status(self, body: dict[str, Any], ftj: FineTuneJob | None, observed: st.Observed,
                        invalid: str | None) -> dict[str, Any]:
        return st.compute_status(body, ftj, observed, now=format_time(self.now()), invalid=invalid,
                                 start_timeout_s=self.start_timeout_s)

    def _write_outcome(self, body: dict[str, Any], ftj: FineTuneJob | None, observed: st.Observed,
                       new_status: dict[str, Any], result: PassResult) -> PassResult:
        """Write the status, post its transitions' Events, and let a finished job's Job go."""
        result.status_written = self.write_status(body, new_status)
        result.phase = new_status.get("phase")
        result.final = st.is_final(new_status)
        if result.status_written:
            self._post_transition_events(body, new_status)
        job = observed.job
        if result.final and job is not None and \
                not (observed.job_condition("Complete") or observed.job_condition("Failed")):
            # Given up on a trainer that could not start (st.start_given_up): its pod must not hold resources.
            meta = body["metadata"]
            self._delete_job(meta["namespace"], meta["name"], job)
        elif result.final and ftj is not None:
            self.expire(job, builders.job_ttl_seconds(ftj, self.settings))
        return result

    def create_failures(self, job: dict[str, Any]) -> list[str]:
        """The Job controller's FailedCreate Events for this Job (a ResourceQuota, Pod Security admission or a webhook
        refusing its pod), oldest first; nothing if they cannot be read."""
        meta = job["metadata"]
        selector = f"involvedObject.kind=Job,involvedObject.name={meta['name']},involvedObject.uid={meta['uid']}," \
                   "reason=FailedCreate"
        try:
            events = self.kube.list(resource_path("v1", "events", meta["namespace"]), field_selector=selector)
        except ApiError:
            return []
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [str(e.get("message") or "") for e in events]

    def _apply_children(self, body: dict[str, Any], ftj: FineTuneJob, job: dict[str, Any] | None,
                        current_model: str | None, result: PassResult) -> dict[str, Any] | None:
        """Server-side apply every child (the Job last); returns the Job."""
        name = body["metadata"]["name"]
        for manifest in builders.children(ftj, self.settings, current_model):
            if manifest["kind"] != "Job":
                self._refuse_foreign(body, manifest)
                self.kube.apply(manifest)
            elif job is not None:
                job = self._apply_existing_job(body, manifest)
            else:
                job = self._written(self.kube.apply(manifest))
                result.job_created = True
        result.applied = True
        if result.job_created:
            self.post_event(body, "Normal", JOB_CREATED,
                            f"created Job {builders.job_name(name)} for model {builders.model_version(ftj)}")
        return job

    def _refuse_foreign(self, body: dict[str, Any], manifest: dict[str, Any]) -> None:
        """ChildConflict if an object of this child's name exists and is not this FineTuneJob's: a forced apply
        would take it over."""
        existing = self.kube.get(object_path(manifest))
        if existing is not None and not owned_by(existing, body):
            raise ChildConflict(foreign(manifest["kind"], manifest["metadata"]["name"]))

    def read_progress(self, observed: st.Observed) -> dict[str, Any] | None:
        """The newest progress line in the log of the trainer's rank-0 pod (the Contracts' progress), or None
        when there is none or the log cannot be read (a node without logs, a pod gone)."""
        pod = observed.reporting_pod()
        if pod is None:
            return None
        meta = pod["metadata"]
        try:
            text = self.kube.read_log(meta["namespace"], meta["name"], builders.CONTAINER_NAME,
                                      tail_lines=PROGRESS_TAIL_LINES, limit_bytes=PROGRESS_LIMIT_BYTES,
                                      timeout_s=PROGRESS_READ_TIMEOUT_S)
        except Exception as error:  # progress is best effort: never fails a pass
            log.debug("log of pod %s/%s not read: %s", meta["namespace"], meta["name"], error)
            return None
        return last_progress(text)

    def missing_dependencies(self, ftj: FineTuneJob, current_model: str | None) -> list[str]:
        """The Secrets and PersistentVolumeClaims the trainer pod needs that do not exist."""
        namespace = builders.namespace_of(ftj)
        missing = [f"Secret {secret}" for secret in builders.credential_secrets(ftj)
                   if self.kube.get(resource_path("v1", "secrets", namespace, secret)) is None]
        missing += [f"PersistentVolumeClaim {claim}" for claim in builders.claims(ftj, current_model)
                    if self.kube.get(resource_path("v1", "persistentvolumeclaims", namespace, claim)) is None]
        return missing

    def _rerun_after_deadline(self, body: dict[str, Any], job: dict[str, Any] | None) -> PassResult:
        """DeadlineExceeded, then the spec changed: record the rerun, then delete the old Job (in this
        order, so a restart in between finds the rerun recorded and deletes the Job then)."""
        meta = body["metadata"]
        new_status = st.rerun_status(body, now=format_time(self.now()))
        written = self.write_status(body, new_status)
        self.post_event(body, "Normal", c.DEADLINE_RAISED, str(new_status["message"]))
        if job is not None:
            self._delete_job(meta["namespace"], meta["name"], job)
        return PassResult(phase=new_status["phase"], status_written=written)

    def _is_replaced(self, body: dict[str, Any], job: dict[str, Any]) -> bool:
        """Whether `job` is the one a rerun replaces: created before the rerun was recorded."""
        failed: dict[str, Any] = next(
            (x for x in (body.get("status") or {}).get("conditions") or [] if x["type"] == c.FAILED), {})
        created = job["metadata"].get("creationTimestamp") or ""
        return bool(created and created < str(failed.get("lastTransitionTime") or ""))

    def _delete_job(self, namespace: str, name: str, job: dict[str, Any]) -> None:
        if not job["metadata"].get("deletionTimestamp"):
            try:
                self.kube.delete(job_path(namespace, name), propagation="Background",
                                 uid=job["metadata"]["uid"])
            except ApiError as error:
                if error.status not in (404, 409):  # gone, or a different Job by now
                    raise

    def _apply_existing_job(self, body: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
        """Apply the Job again; if its (immutable) template no longer matches what this operator
        builds (an upgraded operator), change only the fields a running Job accepts."""
        try:
            return self._written(self.kube.apply(manifest))
        except ApiError as error:
            if error.status != 422:
                raise
        mutable = {k: manifest["spec"][k] for k in MUTABLE_JOB_FIELDS if k in manifest["spec"]}
        if "activeDeadlineSeconds" not in mutable:
            mutable["activeDeadlineSeconds"] = None
        log.warning("Job %s/%s differs from what this operator builds; updating only %s",
                    manifest["metadata"]["namespace"], manifest["metadata"]["name"], sorted(mutable))
        return self._written(self.kube.merge_patch(object_path(manifest), {"spec": mutable}))

    def _keep_final(self, body: dict[str, Any], job: dict[str, Any] | None) -> PassResult:
        """A finished FineTuneJob: never recreate or re-run anything; just let the Job and pods go."""
        status = body.get("status") or {}
        generation = body["metadata"].get("generation")
        written = self.write_status(body, {**st.operator_status(status), "observedGeneration": generation})
        ftj, _ = parse_finetunejob(body)
        self.expire(job, builders.job_ttl_seconds(ftj, self.settings) if ftj is not None else self.settings.job_ttl_seconds)
        return PassResult(phase=status.get("phase"), final=True, status_written=written)

    # --- reads ------------------------------------------------------------------------------
    def read_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._watched_or_read(KIND, namespace, name, ftj_path(namespace, name))

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The trainer Job of FineTuneJob `name`."""
        return self._watched_or_read("Job", namespace, builders.job_name(name), job_path(namespace, name))

    def _watched_or_read(self, kind: str, namespace: str, name: str, path: str) -> dict[str, Any] | None:
        """The object as the watch last said, else as the API server says (None: it does not exist)."""
        found = self.cache.get(kind, namespace, name) if self.cache is not None else None
        return found if found is not None else self.kube.get(path)

    def pods_of(self, namespace: str, name: str, job: dict[str, Any], *,
                fresh: bool = True) -> tuple[list[dict[str, Any]], bool]:
        """Every trainer pod of this FineTuneJob (of any Job it had), and whether the API server listed them now.
        Unless `fresh`: the pods the watch last reported, if it reported any, or none if the Job counts none."""
        if not fresh and self.cache is not None:
            known = self.cache.pods(namespace, label_value(name))
            if known or not counts_pods(job):
                return known, False
        selector = ",".join(f"{k}={v}" for k, v in builders.selector_labels(name).items())
        return self.kube.list(resource_path("v1", "pods", namespace), label_selector=selector), True

    def lineage_current_model(self, ftj: FineTuneJob) -> str | None:
        """The stable model of the RecModelDeployment following this job's lineage, if any."""
        lineage = (ftj.metadata.get("labels") or {}).get(LINEAGE_LABEL)
        if not lineage:
            return None
        rmds = self.kube.list(resource_path(API_VERSION, RMD_PLURAL, builders.namespace_of(ftj)))
        for rmd in sorted(rmds, key=lambda r: r["metadata"]["name"]):
            follows = ((rmd.get("spec") or {}).get("model") or {}).get("lineage") == lineage
            stable_uri = ((rmd.get("status") or {}).get("stable") or {}).get("modelUri")
            if follows and stable_uri:
                return str(stable_uri)
        return None

    # --- writes -----------------------------------------------------------------------------
    def write_status(self, body: dict[str, Any], new_status: dict[str, Any]) -> bool:
        """Merge-patch the status subresource with what changed; False when nothing did."""
        meta = body["metadata"]
        written = write_status(self.kube, ftj_path(meta["namespace"], meta["name"], "status"),
                               st.operator_status(body.get("status")), new_status)
        if written is None:
            return False
        self._written(written)
        return True

    def _written(self, obj: dict[str, Any]) -> dict[str, Any]:
        """An object as this operator's write returned it: the newest state, until the watch says otherwise."""
        if self.cache is not None:
            self.cache.observe(obj)
        return obj

    def expire(self, job: dict[str, Any] | None, ttl: int | None) -> None:
        """Give a finished FineTuneJob's Job its TTL (see builders.job_ttl_seconds); a TTL changed later follows."""
        if job is None or ttl is None or job["metadata"].get("deletionTimestamp") or \
                (job.get("spec") or {}).get("ttlSecondsAfterFinished") == ttl:
            return
        try:
            self.kube.merge_patch(object_path(job), {"spec": {"ttlSecondsAfterFinished": ttl}})
        except ApiError as error:
            if error.status != 404:  # gone already
                raise

    def _post_transition_events(self, body: dict[str, Any], new: dict[str, Any]) -> None:
        old_phase = (body.get("status") or {}).get("phase")
        phase = new.get("phase")
        old_ready: dict[str, Any] = next((x for x in (body.get("status") or {}).get("conditions") or [] if x["type"] == c.READY), {})
        new_ready: dict[str, Any] = next((x for x in new.get("conditions") or [] if x["type"] == c.READY), {})
        if new_ready.get("reason") in BLOCKED_REASONS and new.get("phase") != "Failed" and (
            (old_ready.get("reason"), old_ready.get("message")) != (new_ready.get("reason"), new_ready.get("message"))
        ):
            # Each new cause (another failed attempt, another missing object) is one Event; an unchanged
            # one is not repeated on resync. Giving up on it is the Failed Event below.
            self.post_event(body, "Warning", str(new_ready["reason"]), str(new_ready.get("message") or ""))
        if phase == old_phase:
            return
        message = str(new.get("message") or "")
        ready: dict[str, Any] = next((x for x in new.get("conditions", []) if x["type"] == c.READY), {})
        if old_phase == "Suspended" and phase != "Suspended" and not (body.get("spec") or {}).get("suspend"):
            # Whatever the first pass after a resume sees (Pending, or already Running or Succeeded when the
            # pod was quick), the resume itself is an Event: kubectl describe must not depend on timing.
            self.post_event(body, "Normal", c.RESUMED, message)
        if phase == "Failed":
            failed: dict[str, Any] = next((x for x in new.get("conditions", []) if x["type"] == c.FAILED), {})
            self.post_event(body, "Warning", str(failed.get("reason") or c.TRAINER_FAILED), message)
        elif phase == "Succeeded":
            self.post_event(body, "Normal", c.SUCCEEDED, message)
            if ready.get("reason") == c.GATE_NOT_MET:
                self.post_event(body, "Warning", c.GATE_NOT_MET, str(ready.get("message") or ""))
        elif phase == "Suspended":
            self.post_event(body, "Normal", c.SPEC_SUSPENDED, message)
        elif phase == "Running":
            self.post_event(body, "Normal", c.RUNNING, message)


class ChildConflict(Exception):
    """An object of a child's name exists and is not this FineTuneJob's."""


def foreign(kind: str, name: str) -> str:
    return f"{kind} {name} exists and is not owned by this FineTuneJob: delete or rename it"


def of_a_finetunejob(child: dict[str, Any]) -> bool:
    """Whether a FineTuneJob (this one or an earlier one of the same name) owns the object."""
    return any(ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{API_VERSION.split('/')[0]}/")
               for ref in child["metadata"].get("ownerReferences") or [])


def owned_by(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences") or [])


def counts_pods(job: dict[str, Any]) -> bool:
    """Whether the Job's status counts any pod (the Job controller's word: none yet, right after its creation)."""
    status = job.get("status") or {}
    return any(status.get(k) for k in ("active", "ready", "succeeded", "failed", "terminating",
                                       "uncountedTerminatedPods"))


def of_job(pods: list[dict[str, Any]], job: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The pods of `job` (not of an earlier, deleted Job of the same FineTuneJob)."""
    if job is None:
        return []
    uid = job["metadata"].get("uid")
    return [p for p in pods if any(ref.get("uid") == uid for ref in p["metadata"].get("ownerReferences") or [])]


def parse_finetunejob(body: dict[str, Any]) -> tuple[FineTuneJob | None, str | None]:
    """The FineTuneJob model, or the reason its spec cannot be acted on."""
    return parse(body, FineTuneJob, builders.problems)


__all__ = ["KIND", "FineTuneJobController", "PassResult", "parse_finetunejob"]
