"""A FineTuneJob's status, computed from what is observed: its trainer Job and the Job's pods.

Pure: no I/O and no Kopf, so every state is unit-tested. The reconciler writes the result
only when it differs from the stored status. `status.progress` is the newest progress line the
controller found in the trainer's log (`Observed.progress`), else the one stored before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from recops.api import conditions as c
from recops.api.conditions import FINETUNEJOB_CONDITIONS
from recops.api.contracts import Optimization, TerminationMessage
from recops.api.finetunejob import FineTuneJob
from recops.api.gate import decide_gate
from recops.builders import finetunejob as ftj_builder
from recops.controllers.conditions import Conditions, age_s, find, is_true
from recops.controllers.status import owned_status

VERDICT_CONDITIONS = (c.GATE_PASSED, c.OPTIMIZED)  # only a succeeded job has them
MESSAGE_LIMIT = 1024
# Reasons the batch/v1 Job controller gives its Failed condition, mapped to ours.
JOB_FAILURE_REASONS = {
    "BackoffLimitExceeded": c.BACKOFF_LIMIT_EXCEEDED,
    "DeadlineExceeded": c.DEADLINE_EXCEEDED,
    # Indexed (multi-worker) Jobs with backoffLimitPerIndex: a worker ran out of retries.
    "FailedIndexes": c.BACKOFF_LIMIT_EXCEEDED,
    "MaxFailedIndexesExceeded": c.BACKOFF_LIMIT_EXCEEDED,
}
STATUS_FIELDS = (
    "phase", "conditions", "observedGeneration", "startTime", "completionTime", "attempts", "model",
    "metrics", "baseline", "currentModel", "debiased", "optimization", "keyMetric", "gatePassed", "message",
    "progress",
)


def operator_status(status: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a stored status the operator owns (all it writes), without empty values."""
    return owned_status(status, STATUS_FIELDS)


class ClippedConditions(Conditions):
    """A FineTuneJob's conditions: messages clipped to MESSAGE_LIMIT (a trainer's error can be long)."""

    def set(self, type_: str, status: bool | None, reason: str, message: str = "") -> None:
        super().set(type_, status, reason, clip(message))

    def drop_verdicts(self) -> None:
        """Only a succeeded job has GatePassed and Optimized."""
        self.items = [x for x in self.items if x.get("type") not in VERDICT_CONDITIONS]


def conditions_of(old: dict[str, Any], generation: int | None, now: str) -> ClippedConditions:
    return ClippedConditions(list(old.get("conditions") or []), generation, now)


def is_final(status: dict[str, Any] | None) -> bool:
    """Complete, or Failed for a reason other than an invalid spec: nothing changes it any more
    (except a spec change after DeadlineExceeded: see `reruns_after_deadline`)."""
    conditions = (status or {}).get("conditions") or []
    if is_true(conditions, c.COMPLETE):
        return True
    failed = find(conditions, c.FAILED)
    return bool(failed and failed.get("status") == "True" and failed.get("reason") != c.INVALID_SPEC)


def reruns_after_deadline(body: dict[str, Any]) -> bool:
    """A FineTuneJob that failed with DeadlineExceeded and whose spec changed since (activeDeadlineSeconds
    raised or removed; the only other mutable field, suspend, must be false): it runs again in a new
    Job with the same model version, so the trainer resumes from its checkpoints."""
    status = body.get("status") or {}
    failed = find(status.get("conditions"), c.FAILED) or {}
    if failed.get("status") != "True" or failed.get("reason") != c.DEADLINE_EXCEEDED:
        return False
    spec = body.get("spec") or {}
    generation = body.get("metadata", {}).get("generation")
    return failed.get("observedGeneration") != generation and not spec.get("suspend")


def restarting(status: dict[str, Any] | None) -> bool:
    """Between `reruns_after_deadline` and the new Job: the old (failed) Job is on its way out."""
    failed = find((status or {}).get("conditions"), c.FAILED) or {}
    return failed.get("status") == "False" and failed.get("reason") == c.DEADLINE_RAISED


def rerun_status(body: dict[str, Any], *, now: str) -> dict[str, Any]:
    """The status that records a rerun after DeadlineExceeded (attempts and startTime are kept)."""
    old = operator_status(body.get("status"))
    generation = body.get("metadata", {}).get("generation")
    message = "the spec changed after the deadline passed: a new trainer Job resumes from the checkpoints"
    status: dict[str, Any] = {k: v for k, v in old.items() if k in ("startTime", "attempts", "progress")}
    status.update(phase="Pending", observedGeneration=generation, message=message)
    conditions = conditions_of(old, generation, now)
    for type_ in (c.COMPLETE, c.FAILED, c.SUSPENDED, c.READY):
        conditions.set(type_, False, c.DEADLINE_RAISED, message)
    conditions.drop_verdicts()
    status["conditions"] = conditions.ordered(FINETUNEJOB_CONDITIONS)
    return status


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- what the pods say -----------------------------------------------------------------------------
@dataclass
class TrainerExit:
    """The trainer container's terminated state in one pod."""

    pod: str
    exit_code: int | None
    reason: str | None
    raw_message: str | None
    finished_at: str | None
    report: TerminationMessage | None = None

    @property
    def error(self) -> str | None:
        if self.report is not None and self.report.error:
            return self.report.error
        if self.report is None and self.raw_message:
            return self.raw_message.strip().splitlines()[-1] if self.raw_message.strip() else None
        return None


def parse_termination_message(text: str | None) -> TerminationMessage | None:
    """The trainer's JSON report, or None when the message is something else (e.g. a log tail)."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return TerminationMessage.model_validate(data)
    except ValidationError:
        return None


def trainer_exit(pod: dict[str, Any]) -> TrainerExit | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") != ftj_builder.CONTAINER_NAME:
            continue
        terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
        if not terminated:
            return None
        raw = terminated.get("message")
        return TrainerExit(
            pod=pod["metadata"]["name"],
            exit_code=terminated.get("exitCode"),
            reason=terminated.get("reason"),
            raw_message=raw,
            finished_at=terminated.get("finishedAt"),
            report=parse_termination_message(raw),
        )
    return None


def completion_index(pod: dict[str, Any]) -> int | None:
    """The worker (torchrun node rank) of a pod of an Indexed Job; None for a one-worker Job."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(ftj_builder.COMPLETION_INDEX_ANNOTATION) or (
        meta.get("labels") or {}).get(ftj_builder.COMPLETION_INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class Observed:
    job: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    # The Job controller's FailedCreate Event messages for the Job, newest last (read only while the Job has no pod).
    create_failures: list[str] = field(default_factory=list)
    # Why the Job is not created yet (reason, message), e.g. a missing Secret.
    waiting: tuple[str, str] | None = None
    # The newest progress line of the trainer's log (the Contracts' progress), if one was read.
    progress: dict[str, Any] | None = None

    @property
    def workers(self) -> int:
        spec = (self.job or {}).get("spec") or {}
        return int(spec.get("completions") or 1) if spec.get("completionMode") == "Indexed" else 1

    def job_condition(self, type_: str) -> dict[str, Any] | None:
        if self.job is None:
            return None
        for cond in (self.job.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_ and cond.get("status") == "True":
                return dict(cond)
        return None

    def pods_in_phase(self, phase: str) -> list[dict[str, Any]]:
        return sorted(
            (p for p in self.pods if (p.get("status") or {}).get("phase") == phase),
            key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
        )

    def attempts(self) -> int:
        """Trainer attempts started: pods started (finished ones as the Job counts them, plus those
        running now); with many workers, the most pods any one worker (completion index) started."""
        if self.workers > 1:
            per_index: dict[int | None, int] = {}
            for pod in self.started_pods():
                index = completion_index(pod)
                per_index[index] = per_index.get(index, 0) + 1
            job_status = (self.job or {}).get("status") or {}
            finished = int(job_status.get("succeeded") or 0) + int(job_status.get("failed") or 0)
            counted = -(-(finished + len(self.pods_in_phase("Running"))) // self.workers)  # ceil
            return max([counted, *per_index.values()])
        job_status = (self.job or {}).get("status") or {}
        finished = int(job_status.get("succeeded") or 0) + int(job_status.get("failed") or 0)
        return max(finished + len(self.pods_in_phase("Running")), len(self.started_pods()))

    def reporting_pod(self) -> dict[str, Any] | None:
        """The pod whose log carries the progress: the newest running (or just succeeded) rank-0 trainer pod."""
        rank0 = [p for p in self.pods if self.workers == 1 or completion_index(p) == 0]
        for phase in ("Running", "Succeeded"):
            candidates = [p for p in self.pods_in_phase(phase) if p in rank0]
            if candidates:
                return candidates[-1]
        return None

    def started_pods(self) -> list[dict[str, Any]]:
        return [p for phase in ("Running", "Succeeded", "Failed") for p in self.pods_in_phase(phase)]

    def first_start(self) -> str | None:
        times = [t for p in self.started_pods() if (t := (p.get("status") or {}).get("startTime"))]
        return min(times) if times else None

    def start_failure(self) -> tuple[str, str] | None:
        """(the kubelet's reason, a message naming the pod and container) when a container cannot start."""
        for pod in self.pods_in_phase("Pending"):
            status = pod.get("status") or {}
            for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in c.CONTAINER_START_FAILURES:
                    return waiting["reason"], (f"trainer pod {pod['metadata']['name']} container {container.get('name')}: "
                                               f"{waiting['reason']}: {waiting.get('message') or ''}").strip()[:1000]
        return None

    def unschedulable(self) -> str | None:
        for pod in self.pods_in_phase("Pending"):
            for cond in (pod.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and (
                    cond.get("reason") == "Unschedulable"
                ):
                    return str(cond.get("message") or "no node can take the trainer pod")
        return None


def key_metric(ftj: FineTuneJob | None, metrics: dict[str, float]) -> str | None:
    if not metrics:
        return None
    names: list[str] = []
    if ftj is not None:
        if ftj.spec.evaluation.gate is not None:
            names.append(ftj.spec.evaluation.gate.metric)
        names += ftj.spec.evaluation.metrics
    names += sorted(metrics)
    name = next(n for n in names if n in metrics)
    return f"{name}={metrics[name]:.4g}"


# --- the status ------------------------------------------------------------------------------------
def compute_status(
    body: dict[str, Any],
    ftj: FineTuneJob | None,
    observed: Observed,
    *,
    now: str,
    invalid: str | None = None,
    start_timeout_s: float | None = None,
) -> dict[str, Any]:
    """The operator's part of the FineTuneJob's status for what is observed now (`start_given_up` for
    `start_timeout_s`)."""
    old = operator_status(body.get("status"))
    generation = body.get("metadata", {}).get("generation")
    status: dict[str, Any] = {k: v for k, v in old.items() if k in ("startTime", "attempts", "progress")}
    if observed.progress is not None:
        status["progress"] = observed.progress
    status["observedGeneration"] = generation
    conditions = conditions_of(old, generation, now)
    complete, failed = observed.job_condition("Complete"), observed.job_condition("Failed")
    if invalid is not None or ftj is None:
        _invalid(status, conditions, invalid)
    else:
        _started(status, observed)
        if complete is not None:
            _succeeded(status, ftj, observed, complete, conditions, now)
        elif failed is not None:
            _failed(status, observed, failed, conditions, now)
        else:
            _not_finished(status, old, ftj, observed, conditions, start_timeout_s)
    status["conditions"] = conditions.ordered(FINETUNEJOB_CONDITIONS)
    return _clean(status)


def _invalid(status: dict[str, Any], conditions: ClippedConditions, invalid: str | None) -> None:
    message = clip(f"invalid spec: {invalid}")
    status.update(phase="Failed", message=message)
    for type_ in (c.COMPLETE, c.READY, c.SUSPENDED):
        conditions.set(type_, False, c.INVALID_SPEC, message)
    conditions.set(c.FAILED, True, c.INVALID_SPEC, message)
    conditions.drop_verdicts()


def _started(status: dict[str, Any], observed: Observed) -> None:
    """startTime (the first pod's start, kept once set) and attempts (never fewer than counted before)."""
    first_start = observed.first_start()
    if first_start and not status.get("startTime"):
        status["startTime"] = first_start
    if observed.job is not None:
        status["attempts"] = max(int(status.get("attempts") or 0), observed.attempts())


def _not_finished(status: dict[str, Any], old: dict[str, Any], ftj: FineTuneJob, observed: Observed,
                  conditions: ClippedConditions, start_timeout_s: float | None) -> None:
    """Pending, Running or Suspended; or Failed when the trainer has been kept from starting too long."""
    previous_suspended = conditions.get(c.SUSPENDED) or {}
    was_suspended = previous_suspended.get("status") == "True" or previous_suspended.get("reason") == c.RESUMED
    phase, reason, message = _unfinished(ftj, observed)
    if phase == "Running" and old.get("phase") == "Running" and not observed.pods_in_phase("Running"):
        # The trainer exited and the Job controller marks the Job Complete or Failed moments later: the
        # running status stands until then (one status write less per job; the outcome says the rest).
        message = str(old.get("message") or message)
    gave_up = start_given_up(observed, reason, message, now=conditions.now, timeout_s=start_timeout_s)
    if gave_up is not None:
        status.update(phase="Failed", completionTime=conditions.now, message=clip(gave_up))
        for type_, value in ((c.COMPLETE, False), (c.FAILED, True), (c.SUSPENDED, False), (c.READY, False)):
            conditions.set(type_, value, reason, gave_up)
    else:
        status.update(phase=phase, message=message)
        for type_ in (c.COMPLETE, c.FAILED, c.READY):
            conditions.set(type_, False, reason, message)
        if phase == "Suspended":
            conditions.set(c.SUSPENDED, True, c.SPEC_SUSPENDED, message)
        else:
            conditions.set(c.SUSPENDED, False, c.RESUMED if was_suspended else reason, message)
    conditions.drop_verdicts()


def start_given_up(observed: Observed, reason: str, message: str, *, now: str,
                   timeout_s: float | None) -> str | None:
    """The Failed message when the trainer has been kept from starting for longer than `timeout_s` by what does
    not change by itself: a container that cannot start (image, Secret key, config) since its pod was created, or a
    Job that cannot create its pod (admission, a webhook, a LimitRange) since it was created. A ResourceQuota frees
    up as other pods finish, so a job waiting on one waits on, as one waiting for a node does."""
    if not timeout_s:
        return None
    if reason in c.CONTAINER_START_FAILURES:
        blocked = observed.pods_in_phase("Pending")
    elif reason == c.POD_CREATE_FAILED and "exceeded quota" not in message and observed.job is not None:
        blocked = [observed.job]
    else:
        return None
    if not blocked or min(age_s(o, now) for o in blocked) <= timeout_s:
        return None
    return f"{message} (for more than {timeout_s:g} s, the operator's --start-timeout-seconds: gave up; fix the " \
           "cause and create the FineTuneJob again)"


def _unfinished(ftj: FineTuneJob, observed: Observed) -> tuple[str, str, str]:
    job = observed.job
    if job is None:
        if observed.waiting is not None:
            return "Pending", observed.waiting[0], observed.waiting[1]
        return "Pending", c.PENDING, "creating the trainer Job"
    running = observed.pods_in_phase("Running")
    if (job.get("spec") or {}).get("suspend") and not running:
        if ftj.spec.suspend:
            return "Suspended", c.SPEC_SUSPENDED, "spec.suspend is set: no trainer pod runs"
        return "Pending", c.PENDING, "the Job is suspended by its queue until admitted"
    unschedulable = observed.unschedulable()
    workers = observed.workers
    finished = _finished_workers(observed)
    if finished >= workers and not running:
        # The trainer exited 0; the Job controller has yet to mark the Job Complete. Still Running, so
        # that the phase never steps back to Pending on the way to Succeeded.
        return "Running", c.RUNNING, "the trainer finished; waiting for the Job to complete"
    if running and workers > 1:
        # All workers must run for torchrun's rendezvous; until then the job is still pending.
        attempt = observed.attempts()
        if len(running) + finished >= workers:
            return "Running", c.RUNNING, f"all {workers} workers are running (attempt {attempt})"
        if unschedulable:
            return "Pending", c.UNSCHEDULABLE, f"{len(running)}/{workers} workers running; {unschedulable}"
        return "Pending", c.PENDING, f"{len(running)}/{workers} workers running (attempt {attempt})"
    if running:
        attempt = observed.attempts()
        return "Running", c.RUNNING, f"trainer pod {running[-1]['metadata']['name']} is running (attempt {attempt})"
    if unschedulable:
        return "Pending", c.UNSCHEDULABLE, unschedulable
    if (start_failure := observed.start_failure()) is not None:
        return "Pending", *start_failure
    if observed.create_failures and not observed.pods:
        return "Pending", c.POD_CREATE_FAILED, f"the Job cannot create the trainer pod: {observed.create_failures[-1]}"
    last_failure = _last_exit(observed, "Failed")
    if last_failure is not None:
        failed_attempts = max(int(((job.get("status") or {}).get("failed")) or 0),
                              len(observed.pods_in_phase("Failed")))
        limit = _backoff_limit(job)
        if workers == 1 and isinstance(limit, int) and failed_attempts > limit:
            # No retry is left: the Job controller is about to mark the Job Failed. Still Running, so that the
            # phase never steps back to Pending on the way to Failed.
            return "Running", c.RUNNING, f"the trainer failed; waiting for the Job to fail: {_describe_failure(last_failure)}"
        return "Pending", c.RETRYING, (
            f"retrying after {failed_attempts} failed attempt(s), backoffLimit {_backoff_limit(job)}: "
            f"{_describe_failure(last_failure)}"
        )
    return "Pending", c.PENDING, "waiting for the trainer pod to start"


def _finished_workers(observed: Observed) -> int:
    """Workers whose newest pod succeeded (one worker: 1 when the newest pod did)."""
    newest: dict[int | None, dict[str, Any]] = {}
    for pod in sorted(observed.pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "",
                                                     p["metadata"]["name"])):
        newest[completion_index(pod)] = pod
    return sum((p.get("status") or {}).get("phase") == "Succeeded" for p in newest.values())


def _backoff_limit(job: dict[str, Any]) -> int | str:
    spec = job.get("spec") or {}
    value = spec.get("backoffLimitPerIndex", spec.get("backoffLimit"))
    return int(value) if value is not None else "unset"


def _last_exit(observed: Observed, phase: str) -> TrainerExit | None:
    """The trainer's exit in the newest pod of `phase`; for success, the rank-0 worker's (its report is
    the model's: only global rank 0 writes the termination message)."""
    pods = observed.pods_in_phase(phase)
    if phase == "Succeeded" and observed.workers > 1:
        pods = [p for p in pods if completion_index(p) == 0] or pods
    for pod in reversed(pods):
        found = trainer_exit(pod)
        if found is not None:
            return found
    return None


def _describe_failure(exit_: TrainerExit) -> str:
    code = f"exit code {exit_.exit_code}" if exit_.exit_code is not None else "no exit code"
    error = exit_.error
    return f"trainer pod {exit_.pod} failed with {code}" + (f": {error}" if error else "")


def _succeeded(status: dict[str, Any], ftj: FineTuneJob, observed: Observed, complete: dict[str, Any],
               conditions: ClippedConditions, now: str) -> None:
    exit_ = _last_exit(observed, "Succeeded")
    report = exit_.report if exit_ is not None else None
    report = report or TerminationMessage()
    uri = report.model_uri or ftj_builder.expected_model_uri(ftj)
    version = report.model_version or ftj_builder.model_version(ftj)
    job_status = (observed.job or {}).get("status") or {}
    status.update(
        phase="Succeeded",
        completionTime=job_status.get("completionTime") or complete.get("lastTransitionTime") or now,
        model={"uri": uri, "version": version},
        metrics=report.metrics or None,
        baseline=report.baseline or None,
        currentModel=report.current_model,
        debiased=report.debiased.model_dump(by_alias=True, exclude_none=True) if report.debiased else None,
        optimization=optimization_status(report.optimization),
        keyMetric=key_metric(ftj, report.metrics),
    )
    if report.optimization is not None:
        served = report.optimization.served
        conditions.set(c.OPTIMIZED, served, c.OPTIMIZED_SERVED if served else c.FULL_PRECISION_KEPT, report.optimization.reason)
    if not status.get("startTime"):
        status["startTime"] = job_status.get("startTime") or status["completionTime"]
    message = f"model {version} written to {uri}"
    conditions.set(c.COMPLETE, True, c.SUCCEEDED, message)
    conditions.set(c.FAILED, False, c.SUCCEEDED, message)
    conditions.set(c.SUSPENDED, False, c.SUCCEEDED, message)
    gate = ftj.spec.evaluation.gate
    if gate is None:
        status["gatePassed"] = None
        conditions.set(c.READY, True, c.NO_GATE, message + "; no gate")
        status["message"] = message
        return
    decision = decide_gate(gate, report.metrics, report.baseline, report.current_model, report.debiased)
    passed, why = bool(decision.passed), decision.summary
    if report.gate_passed is not None and report.gate_passed != passed:
        # The trainer judged on everything; its message may have dropped the baseline to stay under 4 KB.
        passed = report.gate_passed
        why = f"the trainer's gate on {gate.metric} " + ("passed" if passed else "did not pass")
    status["gatePassed"] = passed
    status["message"] = clip(f"{message}; {why}")
    reason = c.GATE_MET if passed else c.GATE_NOT_MET
    conditions.set(c.GATE_PASSED, passed, reason, why)
    conditions.set(c.READY, passed, reason, why)


def optimization_status(optimization: Optimization | None) -> dict[str, Any] | None:
    """status.optimization: what spec.optimize decided (the served model's metrics are status.metrics)."""
    if optimization is None:
        return None
    return {k: v for k, v in {
        "format": optimization.format, "quantization": optimization.quantization, "served": optimization.served,
        "spearman": optimization.spearman, "top10Overlap": optimization.top10_overlap,
        "latencyMsPer100": optimization.latency_ms_per100 or None,
        "fullPrecisionMetrics": optimization.full_precision_metrics or None, "reason": clip(optimization.reason),
    }.items() if v is not None}


def _failed(status: dict[str, Any], observed: Observed, failed: dict[str, Any], conditions: ClippedConditions,
            now: str) -> None:
    reason = JOB_FAILURE_REASONS.get(str(failed.get("reason")), c.TRAINER_FAILED)
    exit_ = _last_exit(observed, "Failed")
    if exit_ is not None:
        message = _describe_failure(exit_)
    else:
        message = str(failed.get("message") or failed.get("reason") or "the trainer Job failed")
    if reason == c.DEADLINE_EXCEEDED:
        message = f"activeDeadlineSeconds passed; {message}"
    status.update(
        phase="Failed",
        completionTime=failed.get("lastTransitionTime") or now,
        message=clip(message),
    )
    if exit_ is not None and exit_.report is not None and exit_.report.metrics:
        status["metrics"] = exit_.report.metrics
    conditions.set(c.COMPLETE, False, reason, message)
    conditions.set(c.FAILED, True, reason, message)
    conditions.set(c.SUSPENDED, False, reason, message)
    conditions.set(c.READY, False, reason, message)


def _clean(status: dict[str, Any]) -> dict[str, Any]:
    """Without None, [] and {} (e.g. no metrics): as operator_status reads a stored status, so equal states compare
    equal, and a field that becomes empty is written as null, which removes it (a merge patch of {} would not)."""
    return operator_status(status)

