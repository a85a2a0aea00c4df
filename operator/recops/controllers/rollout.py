"""The RecModelDeployment's decisions, as pure functions of what one pass observed.

- which model each source asks for (`select_*`), from FineTuneJob bodies;
- the steering annotations (`apply_retry`, and promote/abort inside `decide`);
- when a canary is analysed (`analysis_due`) and what the analysis says (`evaluate_rules`);
- the rollout itself (`decide`): the next status, the model of each track, the canary's
  replicas and the Events to post.

Nothing here does I/O; the controller reads, calls these, applies and writes status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from recops.api import conditions as c
from recops.api.common import format_time, parse_duration, parse_time
from recops.api.contracts import ABORT_ANNOTATION, LINEAGE_LABEL, PROMOTE_ANNOTATION, RETRY_MODEL_ANNOTATION
from recops.api.recmodeldeployment import AnalysisRule, RecModelDeploymentSpec
from recops.builders.recmodeldeployment import TrackModel, canary_replicas, version_of_uri
from recops.controllers.conditions import find, set_condition
from recops.controllers.status import owned_status
from recops.monitor.rules import Judgement, Lacking, Measurement, Outcome, judge

CONDITION_ORDER = (c.AVAILABLE, c.PROGRESSING, c.DEGRADED, c.READY)
PROMOTIONS_KEPT = 10
REJECTED_KEPT = 100
RATE_METRICS = ("ctr", "conversionRate")  # judged only once the canary (and a relative bound's stable) has minImpressions
# Event reasons besides the condition reasons of recops.api.conditions.
CANARY_STARTED = "CanaryStarted"
CANARY_RESTARTED = "CanaryRestarted"
ANALYSIS_FAILED = "AnalysisFailed"
RETRY_MODEL = "RetryModel"

# Status fields the operator owns (everything else in status is left alone).
STATUS_FIELDS = (
    "phase", "conditions", "observedGeneration", "stable", "canary", "canaryWeight", "canaryStep", "stepStartedAt",
    "analysisFailures", "lastAnalysis", "lastAnalysisTime", "stalledSince", "endpoint", "rejectedModels", "promotions",
    "handledAnnotations",
)


def operator_status(status: Mapping[str, Any] | None) -> dict[str, Any]:
    return owned_status(status, STATUS_FIELDS)


# --- model selection ----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    uri: str
    version: str
    fine_tune_job: str | None = None
    completed_at: str | None = None
    format: str | None = None  # "onnx" or "torch" when a FineTuneJob says which form it serves

    def track(self, revision: int) -> dict[str, Any]:
        out: dict[str, Any] = {"modelUri": self.uri, "modelVersion": self.version, "revision": revision}
        if self.fine_tune_job:
            out["fineTuneJob"] = self.fine_tune_job
        if self.completed_at:
            out["completedAt"] = self.completed_at
        if self.format:
            out["modelFormat"] = self.format
        return out


@dataclass(frozen=True)
class Selection:
    """The model the spec asks for now, or why there is none (reason None: nothing to wait for)."""

    candidate: Candidate | None
    reason: str | None = None
    message: str = ""


def ftj_model(ftj: Mapping[str, Any]) -> Candidate | None:
    """The model of a FineTuneJob that succeeded and passed its gate (or has none), else None."""
    status = ftj.get("status") or {}
    model = status.get("model") or {}
    if status.get("phase") != "Succeeded" or not model.get("uri"):
        return None
    ready = find(status.get("conditions"), c.READY)
    if status.get("gatePassed") is False or (ready is not None and ready.get("status") != "True"):
        return None
    return Candidate(
        uri=str(model["uri"]), version=str(model.get("version") or version_of_uri(model["uri"])),
        fine_tune_job=str(ftj["metadata"]["name"]), completed_at=status.get("completionTime"),
        format="onnx" if (status.get("optimization") or {}).get("served") else "torch",
    )


def rejected_versions(status: Mapping[str, Any]) -> set[str]:
    return {str(r.get("modelVersion")) for r in status.get("rejectedModels") or []}


def _rejected_message(version: str) -> str:
    return (f"model {version} was rolled back; set the annotation {RETRY_MODEL_ANNOTATION}: {version} "
            "to try it again")


def select_uri(uri: str, rejected: set[str]) -> Selection:
    candidate = Candidate(uri=uri, version=version_of_uri(uri))
    if candidate.version in rejected:
        return Selection(None, None, _rejected_message(candidate.version))
    return Selection(candidate)


def select_fine_tune_job(name: str, ftj: Mapping[str, Any] | None, rejected: set[str]) -> Selection:
    if ftj is None:
        return Selection(None, c.MODEL_NOT_FOUND, f"FineTuneJob {name} does not exist")
    status = ftj.get("status") or {}
    candidate = ftj_model(ftj)
    if candidate is None:
        if status.get("phase") == "Failed":
            return Selection(None, c.MODEL_NOT_FOUND, f"FineTuneJob {name} failed: {status.get('message') or ''}")
        if status.get("phase") == "Succeeded":
            return Selection(None, c.MODEL_NOT_FOUND,
                             f"FineTuneJob {name} did not pass its gate: {status.get('message') or ''}")
        return Selection(None, c.WAITING_FOR_MODEL,
                         f"waiting for FineTuneJob {name} to succeed (phase {status.get('phase') or 'Pending'})")
    if candidate.version in rejected:
        return Selection(None, None, _rejected_message(candidate.version))
    return Selection(candidate)


def _completed(candidate: Candidate) -> datetime:
    return parse_time(candidate.completed_at) or datetime.min.replace(tzinfo=UTC)


def select_lineage(lineage: str, ftjs: Sequence[Mapping[str, Any]], stable: Mapping[str, Any] | None,
                   rejected: set[str]) -> Selection:
    """The newest FineTuneJob of the lineage (by completion time) that succeeded, passed its gate and
    completed after the stable model, unless it was rolled back: then there is none, since the models
    before it are superseded (an abort must not roll out an older model that was never asked for)."""
    models = [m for m in (ftj_model(f) for f in ftjs
                          if (f["metadata"].get("labels") or {}).get(LINEAGE_LABEL) == lineage) if m is not None]
    stable_version = (stable or {}).get("modelVersion")
    stable_done = parse_time((stable or {}).get("completedAt"))
    newer = [m for m in models if m.version != stable_version
             and (stable_done is None or stable is None or _completed(m) > stable_done)]
    newest = max(newer, key=lambda m: (_completed(m), m.fine_tune_job or "")) if newer else None
    if newest is not None and newest.version not in rejected:
        return Selection(newest)
    if stable is not None:
        note = f" (the newest, {newest.version}, was rolled back)" if newest is not None else ""
        return Selection(None, None, f"no model of lineage {lineage} newer than {stable_version}{note}")
    if newest is not None:
        return Selection(None, c.WAITING_FOR_MODEL,
                         f"the newest model of lineage {lineage}, {newest.version}, was rolled back; "
                         f"set {RETRY_MODEL_ANNOTATION} to retry it")
    return Selection(None, c.WAITING_FOR_MODEL,
                     f"waiting for a FineTuneJob labelled {LINEAGE_LABEL}={lineage} to succeed and pass its gate")


# --- steering annotations -----------------------------------------------------------------
def new_annotation(annotations: Mapping[str, str], handled: Mapping[str, str], key: str) -> str | None:
    """The annotation's value when it is set and was not acted on yet (a new value acts again)."""
    value = annotations.get(key)
    if value in (None, "") or handled.get(key) == value:
        return None
    return value


Event = tuple[str, str, str]  # (Normal|Warning, reason, message)


def apply_retry(status: dict[str, Any], annotations: Mapping[str, str]) -> list[Event]:
    """recops.dev/retry-model: VERSION takes VERSION off the rejected list (in place); Degraded clears."""
    handled = dict(status.get("handledAnnotations") or {})
    value = new_annotation(annotations, handled, RETRY_MODEL_ANNOTATION)
    if value is None:
        return []
    handled[RETRY_MODEL_ANNOTATION] = value
    status["handledAnnotations"] = handled
    before = status.get("rejectedModels") or []
    status["rejectedModels"] = [r for r in before if r.get("modelVersion") != value]
    status["retried"] = True  # transient: read (and dropped) by decide
    found = len(before) != len(status["rejectedModels"])
    what = f"model {value} may be rolled out again" if found else f"model {value} was not on the rejected list"
    return [("Normal", RETRY_MODEL, what)]


# --- analysis -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackMeasurements:
    """One metric of both tracks over the analysis window; the stable track is the reference."""

    canary: Measurement
    stable: Measurement

    @classmethod
    def failed(cls, error: str) -> TrackMeasurements:
        return cls(Measurement(None, error=error), Measurement(None, error=error))


def evaluate_rules(rules: Sequence[AnalysisRule], min_impressions: int,
                   measured: Mapping[str, TrackMeasurements]) -> list[dict[str, Any]]:
    """Each rule's state: Pass, Fail, Inconclusive (too little traffic) or Error (a query failed), judged by
    the one rule judge (recops.monitor.rules) with the stable track as the reference."""
    return [_rule_result(rule, min_impressions, measured.get(rule.metric)) for rule in rules]


def _rule_result(rule: AnalysisRule, min_impressions: int, m: TrackMeasurements | None) -> dict[str, Any]:
    threshold = rule.threshold
    entry: dict[str, Any] = {"metric": rule.metric, "threshold": threshold.describe()}
    m = m or TrackMeasurements.failed("not measured")
    # CTR and conversion rate need minImpressions; latency and error rate one request.
    min_samples = min_impressions if rule.metric in RATE_METRICS else 1
    judgement = judge(threshold, m.canary, min_samples=min_samples, reference=m.stable)
    if judgement.outcome is Outcome.ERROR:
        return {**entry, "state": "Error", "message": (judgement.error or "query failed")[:500]}
    for track, measurement in (("canary", m.canary), ("stable", m.stable)):
        if measurement.usable:
            assert measurement.value is not None
            entry[track] = round(measurement.value, 6)
    bound = threshold.bound(m.stable.value if m.stable.usable else None)
    if bound is not None:
        entry["threshold"] = f"{threshold.describe()} (bound {bound:.4g})"[:128]
    state = {Outcome.GOOD: "Pass", Outcome.BAD: "Fail"}.get(judgement.outcome, "Inconclusive")
    return {**entry, "state": state, "message": _analysis_message(rule, min_impressions, m, judgement)}


def _analysis_message(rule: AnalysisRule, min_impressions: int, m: TrackMeasurements, judgement: Judgement) -> str:
    metric, threshold = rule.metric, rule.threshold
    if judgement.lacking in (Lacking.SAMPLES, Lacking.REFERENCE_SAMPLES):
        if metric not in RATE_METRICS:
            return f"{metric}: no {'canary' if judgement.lacking is Lacking.SAMPLES else 'stable'} requests in the window"
        canary_n, stable_n = int(m.canary.samples or 0), int(m.stable.samples or 0)
        return (f"{metric}: too little traffic (canary {canary_n}, stable {stable_n} impressions; "
                f"{min_impressions} needed on each)")
    if judgement.lacking is Lacking.VALUE:
        return f"{metric}: no canary value in the window"
    if judgement.lacking is Lacking.REFERENCE:
        return f"{metric}: no stable value to compare with"
    stable_text = f", stable {m.stable.value:.4g}" if m.stable.usable else ""
    if judgement.outcome is Outcome.BAD:
        return (f"{metric} of the canary is {judgement.value:.4g}{stable_text}: breaches its threshold "
                f"{threshold.describe()} (bound {judgement.bound:.4g})")
    return f"{metric} {judgement.value:.4g}{stable_text} within {threshold.describe()}"


def verdict(results: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The step's verdict (Fail > Inconclusive > Pass) and the messages that decided it."""
    failed = [r["message"] for r in results if r["state"] == "Fail"]
    if failed:
        return "Fail", "; ".join(failed)
    waiting = [r["message"] for r in results if r["state"] in ("Inconclusive", "Error")]
    if waiting:
        return "Inconclusive", "; ".join(waiting)
    return "Pass", "; ".join(r["message"] for r in results) or "no rules"


def analysis_due(spec: RecModelDeploymentSpec, status: Mapping[str, Any], now: datetime) -> bool:
    """Analyse every `interval`, and at once when the step's pause has just run out."""
    canary_spec = spec.rollout.canary
    if canary_spec is None or not status.get("canary") or status.get("canaryStep") is None:
        return False
    last = parse_time(status.get("lastAnalysisTime"))
    if last is None:
        return True
    if now - last >= parse_duration(canary_spec.analysis.interval):
        return True
    pause_end = _pause_end(spec, status)
    return pause_end is not None and last < pause_end <= now


def _pause_end(spec: RecModelDeploymentSpec, status: Mapping[str, Any]) -> datetime | None:
    canary_spec = spec.rollout.canary
    started = parse_time(status.get("stepStartedAt"))
    step = status.get("canaryStep")
    if canary_spec is None or started is None or step is None or step >= len(canary_spec.steps):
        return None
    return started + parse_duration(canary_spec.steps[step].pause)


# --- the rollout --------------------------------------------------------------------------
@dataclass
class Observed:
    """What runs: the Deployments' replica counts (None: the Deployment does not exist)."""

    stable_replicas: int | None = None  # spec.replicas of the stable Deployment (what an HPA set)
    stable_ready: int = 0
    stable_version: str | None = None  # the model version of the stable Deployment's template
    stable_rolled_out: bool = False  # every replica runs the current template and is ready
    canary_ready: int = 0
    canary_version: str | None = None
    problem: str | None = None  # why pods are not ready (a waiting reason, a crash), if known


@dataclass
class Plan:
    status: dict[str, Any]
    stable: TrackModel | None = None
    canary: TrackModel | None = None
    canary_replicas: int = 0
    stable_replicas: int | None = None  # None: the HPA owns them
    events: list[Event] = field(default_factory=list)
    active: bool = False  # a rollout is under way: the controller re-checks often


def _track_model(track: Mapping[str, Any] | None) -> TrackModel | None:
    if not track:
        return None
    return TrackModel(uri=str(track["modelUri"]), version=str(track["modelVersion"]), format=track.get("modelFormat"))


def _newer(candidate: Candidate, track: Mapping[str, Any]) -> bool:
    """Whether `candidate` should replace the model of `track` (a canary)."""
    if candidate.version == track.get("modelVersion"):
        return False
    mine, theirs = parse_time(candidate.completed_at), parse_time(track.get("completedAt"))
    if mine is None or theirs is None:
        return True  # pinned URIs: the spec changed
    return mine > theirs


def _reject(status: dict[str, Any], track: Mapping[str, Any], reason: str, now: datetime) -> None:
    entry = {"modelVersion": track["modelVersion"], "modelUri": track["modelUri"], "reason": reason[:1024],
             "rejectedAt": format_time(now)}
    kept = [r for r in status.get("rejectedModels") or [] if r.get("modelVersion") != track["modelVersion"]]
    status["rejectedModels"] = [*kept, entry][-REJECTED_KEPT:]


def _promote(status: dict[str, Any], track: Mapping[str, Any], by: str, now: datetime) -> None:
    previous = status.get("stable") or {}
    promotion: dict[str, Any] = {"modelVersion": track["modelVersion"], "promotedAt": format_time(now), "by": by}
    if previous.get("modelVersion"):
        promotion["fromVersion"] = previous["modelVersion"]
    status["stable"] = {k: v for k, v in track.items() if k != "readyReplicas"}
    status["promotions"] = ((status.get("promotions") or []) + [promotion])[-PROMOTIONS_KEPT:]


def _clear_canary(status: dict[str, Any]) -> None:
    for key in ("canary", "canaryWeight", "canaryStep", "stepStartedAt", "analysisFailures", "lastAnalysis",
                "lastAnalysisTime", "stalledSince"):
        status.pop(key, None)


def _start_canary(status: dict[str, Any], spec: RecModelDeploymentSpec, candidate: Candidate, now: datetime) -> None:
    assert spec.rollout.canary is not None
    _clear_canary(status)
    revision = int((status.get("stable") or {}).get("revision") or 0) + 1
    status.update(canary=candidate.track(revision), canaryStep=0, canaryWeight=spec.rollout.canary.steps[0].weight,
                  stepStartedAt=format_time(now), analysisFailures=0)


def decide(spec: RecModelDeploymentSpec, annotations: Mapping[str, str], generation: int | None,
           old_status: Mapping[str, Any], selection: Selection, observed: Observed,
           analysis: list[dict[str, Any]] | None, now: datetime, endpoint: str | None = None) -> Plan:
    """The next status and what each track serves. `analysis`: this pass's rule results, when one was due."""
    status = operator_status(old_status)
    retried = bool(old_status.get("retried"))
    status.pop("retried", None)
    events: list[Event] = []
    handled = dict(status.get("handledAnnotations") or {})
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    degraded = find(conditions, c.DEGRADED)
    degraded_state: tuple[bool, str, str] = (
        (True, str(degraded.get("reason")), str(degraded.get("message") or ""))
        if degraded and degraded.get("status") == "True" and not retried
        else (False, c.RECONCILED, "no rollback to report")
    )
    progressing: tuple[bool, str, str] = (False, c.RECONCILED, "")
    candidate = selection.candidate
    now_text = format_time(now)

    # The first model serves at once: there is nothing to compare a canary with.
    if not status.get("stable"):
        if candidate is None:
            return _finish(Plan(status), spec, generation, conditions, observed, selection, degraded_state,
                           (False, selection.reason or c.WAITING_FOR_MODEL, selection.message), now_text, endpoint)
        _promote(status, candidate.track(1), "initial", now)
        events.append(("Normal", c.PROMOTED, f"serving model {candidate.version} ({candidate.uri})"))
    stable = status["stable"]
    wanted = candidate if candidate is not None and candidate.version != stable["modelVersion"] else None
    canary = status.get("canary")
    if canary and candidate is not None and candidate.version == stable["modelVersion"]:
        events.append(("Normal", c.ABORTED, f"canary {canary['modelVersion']} removed: the spec asks for the "
                                            f"stable model {stable['modelVersion']} again"))
        _clear_canary(status)
        canary = None

    if spec.rollout.strategy == "RollingUpdate" or spec.rollout.canary is None:
        if canary:
            _clear_canary(status)
            canary = None
        if wanted is not None:
            events.append(("Normal", c.ROLLING_UPDATE,
                           f"rolling the stable track from {stable['modelVersion']} to {wanted.version}"))
            _promote(status, wanted.track(int(stable.get("revision") or 0) + 1), "rollingUpdate", now)
            degraded_state = (False, c.PROMOTED, f"model {wanted.version} promoted")
        for key in (ABORT_ANNOTATION, PROMOTE_ANNOTATION):
            value = new_annotation(annotations, handled, key)
            if value is not None:
                handled[key] = value  # nothing to promote or abort outside a canary
    else:
        canary_spec = spec.rollout.canary
        abort = new_annotation(annotations, handled, ABORT_ANNOTATION)
        promote = new_annotation(annotations, handled, PROMOTE_ANNOTATION)
        if abort is not None:
            handled[ABORT_ANNOTATION] = abort
            if canary:
                reason = f"aborted with the annotation {ABORT_ANNOTATION}"
                _reject(status, canary, reason, now)
                events.append(("Warning", c.ABORTED, f"canary {canary['modelVersion']} {reason}; "
                                                     f"{stable['modelVersion']} serves all traffic"))
                degraded_state = (True, c.ABORTED, f"canary {canary['modelVersion']} {reason}")
                _clear_canary(status)
                canary = None
                wanted = None
        if promote is not None:
            handled[PROMOTE_ANNOTATION] = promote
            target = canary or (wanted.track(int(stable.get("revision") or 0) + 1) if wanted else None)
            if target:
                events.append(("Normal", c.PROMOTED,
                               f"model {target['modelVersion']} promoted with the annotation {PROMOTE_ANNOTATION}"))
                _promote(status, target, "annotation", now)
                _clear_canary(status)
                canary, wanted = None, None
                degraded_state = (False, c.PROMOTED, f"model {target['modelVersion']} promoted")
        if canary and wanted is not None and _newer(wanted, canary):
            events.append(("Normal", CANARY_RESTARTED,
                           f"canary restarted with the newer model {wanted.version} (was {canary['modelVersion']})"))
            _start_canary(status, spec, wanted, now)
            canary = status["canary"]
        elif not canary and wanted is not None:
            _start_canary(status, spec, wanted, now)
            canary = status["canary"]
            events.append(("Normal", CANARY_STARTED,
                           f"canary {wanted.version} started at {canary_spec.steps[0].weight}% of traffic"))
        if canary:
            degraded_state = (False, CANARY_STARTED, f"a newer candidate ({canary['modelVersion']}) is rolling out") \
                if degraded_state[0] else degraded_state
            progressing, degraded_state = _canary_step(status, spec, observed, analysis, events, now,
                                                       degraded_state)

    status["handledAnnotations"] = handled
    plan = Plan(status, stable=_track_model(status["stable"]), events=events)
    return _finish(plan, spec, generation, conditions, observed, selection, degraded_state, progressing, now_text,
                   endpoint)


def _stable_count(spec: RecModelDeploymentSpec, observed: Observed) -> int:
    if spec.autoscaling is not None:
        return observed.stable_replicas or spec.autoscaling.min_replicas
    return spec.replicas if spec.replicas is not None else 1


def _canary_step(status: dict[str, Any], spec: RecModelDeploymentSpec, observed: Observed,
                 analysis: list[dict[str, Any]] | None, events: list[Event], now: datetime,
                 degraded_state: tuple[bool, str, str]) -> tuple[tuple[bool, str, str], tuple[bool, str, str]]:
    """One pass of a running canary: wait for its pods, judge the analysis, step, promote or roll back."""
    canary_spec = spec.rollout.canary
    assert canary_spec is not None
    canary = status["canary"]
    step = int(status.get("canaryStep") or 0)
    weight = canary_spec.steps[min(step, len(canary_spec.steps) - 1)].weight
    status["canaryWeight"] = weight
    stable_n = _stable_count(spec, observed)
    wanted_replicas = canary_replicas(stable_n, weight)
    where = f"step {step + 1}/{len(canary_spec.steps)} ({weight}%, {wanted_replicas} canary : {stable_n} stable pods)"
    if observed.canary_version != canary["modelVersion"] or observed.canary_ready < wanted_replicas:
        # The pause counts only from when the canary's pods serve (and status is not rewritten every pass).
        status.pop("stepStartedAt", None)
        problem = f": {observed.problem}" if observed.problem else ""
        waiting = f"waiting for its pods to be ready ({observed.canary_ready}/{wanted_replicas}){problem}"
        if stalled_too_long(status, canary_spec.progress_deadline_seconds, now):
            return _roll_back_stalled(status, canary, waiting, canary_spec.progress_deadline_seconds, events, now)
        return (True, c.CANARY_STEP, f"canary {canary['modelVersion']} {where}: {waiting}"), degraded_state
    if not status.get("stepStartedAt"):
        status["stepStartedAt"] = format_time(now)
    pause_end = _pause_end(spec, status)
    if analysis is None:
        # Nothing judged this pass: the last judgement stands.
        previous = find(status.get("conditions"), c.PROGRESSING)
        if previous and previous.get("status") == "True" and previous.get("reason") in (c.CANARY_STEP, c.INCONCLUSIVE) \
                and "waiting for its pods" not in str(previous.get("message")):
            return (True, str(previous["reason"]), str(previous.get("message") or "")), degraded_state
        return (True, c.CANARY_STEP, f"canary {canary['modelVersion']} {where}: analysing"), degraded_state

    status["lastAnalysis"] = [{k: v for k, v in r.items() if k != "message"} for r in analysis]
    status["lastAnalysisTime"] = format_time(now)
    state, message = verdict(analysis)
    if state != "Inconclusive":
        status.pop("stalledSince", None)  # a verdict (Pass or Fail) is progress
    if state == "Fail":
        failures = int(status.get("analysisFailures") or 0) + 1
        status["analysisFailures"] = failures
        if failures >= canary_spec.failure_limit:
            reason = f"rolled back after {failures} failed analyses: {message}"
            _reject(status, canary, reason, now)
            events.append(("Warning", c.ROLLED_BACK, f"canary {canary['modelVersion']} {reason}"))
            _clear_canary(status)
            return ((False, c.ROLLED_BACK, f"canary {canary['modelVersion']} {reason}"),
                    (True, c.ROLLED_BACK, f"canary {canary['modelVersion']} {reason}"))
        events.append(("Warning", ANALYSIS_FAILED,
                       f"canary {canary['modelVersion']} failed analysis {failures}/{canary_spec.failure_limit}: "
                       f"{message}"))
        return (True, c.CANARY_STEP, f"canary {canary['modelVersion']} {where}: analysis failed "
                                     f"{failures}/{canary_spec.failure_limit}: {message}"[:2000]), degraded_state
    if state == "Inconclusive":
        if stalled_too_long(status, canary_spec.progress_deadline_seconds, now):
            return _roll_back_stalled(status, canary, f"analysis inconclusive: {message}",
                                      canary_spec.progress_deadline_seconds, events, now)
        return (True, c.INCONCLUSIVE, f"canary {canary['modelVersion']} {where} waits: {message}"[:2000]), \
            degraded_state
    if pause_end is not None and now < pause_end:
        left = max(0, int((pause_end - now).total_seconds()))
        return (True, c.CANARY_STEP, f"canary {canary['modelVersion']} {where}: analysis passed; "
                                     f"next step in {left}s"), degraded_state
    if step + 1 < len(canary_spec.steps):
        next_weight = canary_spec.steps[step + 1].weight
        status.update(canaryStep=step + 1, canaryWeight=next_weight, stepStartedAt=format_time(now))
        events.append(("Normal", c.CANARY_STEP,
                       f"canary {canary['modelVersion']} passed step {step + 1}; now at {next_weight}%"))
        return (True, c.CANARY_STEP, f"canary {canary['modelVersion']} moved to step {step + 2}/"
                                     f"{len(canary_spec.steps)} ({next_weight}%)"), degraded_state
    events.append(("Normal", c.PROMOTED, f"canary {canary['modelVersion']} passed every step and was promoted"))
    _promote(status, canary, "analysis", now)
    _clear_canary(status)
    return (False, c.PROMOTED, f"model {canary['modelVersion']} promoted"), (False, c.PROMOTED,
                                                                             f"model {canary['modelVersion']} promoted")


def stalled_too_long(status: dict[str, Any], deadline_seconds: int, now: datetime) -> bool:
    """Whether a canary without a verdict (pods not ready, or analysis Inconclusive) has passed its progress
    deadline; the first such pass records `stalledSince` (a Pass or Fail verdict clears it)."""
    since = parse_time(status.get("stalledSince"))
    if since is None:
        status["stalledSince"] = format_time(now)
        return False
    return deadline_seconds > 0 and (now - since).total_seconds() >= deadline_seconds


def _roll_back_stalled(status: dict[str, Any], canary: Mapping[str, Any], why: str, deadline_seconds: int,
                       events: list[Event], now: datetime) -> tuple[tuple[bool, str, str], tuple[bool, str, str]]:
    """Roll back a canary that had no verdict for its progress deadline: promoting an unmeasured model is unsafe."""
    reason = (f"rolled back: no verdict for {deadline_seconds}s (rollout.canary.progressDeadlineSeconds) "
              f"since {status.get('stalledSince')}; {why}")[:1024]
    _reject(status, canary, reason, now)
    events.append(("Warning", c.PROGRESS_DEADLINE_EXCEEDED, f"canary {canary['modelVersion']} {reason}"[:1024]))
    _clear_canary(status)
    message = f"canary {canary['modelVersion']} {reason}"[:2000]
    return (False, c.PROGRESS_DEADLINE_EXCEEDED, message), (True, c.PROGRESS_DEADLINE_EXCEEDED, message)


def _finish(plan: Plan, spec: RecModelDeploymentSpec, generation: int | None, conditions: list[dict[str, Any]],
            observed: Observed, selection: Selection, degraded_state: tuple[bool, str, str],
            progressing: tuple[bool, str, str], now: str, endpoint: str | None) -> Plan:
    status = plan.status
    stable = status.get("stable")
    canary = status.get("canary")
    plan.stable_replicas = None if spec.autoscaling is not None else (spec.replicas if spec.replicas is not None else 1)
    if canary:
        plan.canary = _track_model(canary)
        plan.canary_replicas = canary_replicas(_stable_count(spec, observed), int(status.get("canaryWeight") or 1))
    if stable:
        stable["readyReplicas"] = observed.stable_ready
    if canary:
        canary["readyReplicas"] = observed.canary_ready
    if endpoint:
        status["endpoint"] = endpoint

    def set_(type_: str, value: bool | None, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, value, reason, message, generation=generation, now=now)

    rolled_out = bool(stable) and observed.stable_version == (stable or {}).get("modelVersion") \
        and observed.stable_rolled_out
    if stable:
        if observed.stable_ready > 0:
            set_(c.AVAILABLE, True, c.MINIMUM_REPLICAS, f"{observed.stable_ready} stable replica(s) ready")
        else:
            problem = f": {observed.problem}" if observed.problem else ""
            set_(c.AVAILABLE, False, c.REPLICAS_UNAVAILABLE, f"no stable replica is ready{problem}")
    else:
        set_(c.AVAILABLE, False, selection.reason or c.WAITING_FOR_MODEL, selection.message)
    if not stable:
        set_(c.PROGRESSING, False, selection.reason or c.WAITING_FOR_MODEL, selection.message)
    elif canary:
        set_(c.PROGRESSING, True, progressing[1], progressing[2])
    elif not rolled_out:
        problem = f" ({observed.problem})" if observed.problem else ""
        set_(c.PROGRESSING, True, c.ROLLING_UPDATE,
             f"the stable Deployment is rolling out model {stable['modelVersion']}{problem}")
    elif progressing[1] in (c.PROMOTED, c.ROLLED_BACK, c.PROGRESS_DEADLINE_EXCEEDED):
        set_(c.PROGRESSING, False, progressing[1], progressing[2])
    else:
        note = f"; {selection.message}" if selection.message else ""
        set_(c.PROGRESSING, False, c.RECONCILED, f"model {stable['modelVersion']} serves all traffic{note}")
    set_(c.DEGRADED, degraded_state[0], degraded_state[1], degraded_state[2])
    if not stable:
        set_(c.READY, False, selection.reason or c.WAITING_FOR_MODEL, selection.message)
        status["phase"] = "Pending"
    elif canary:
        set_(c.READY, False, progressing[1], progressing[2])
        status["phase"] = "Canary"
    elif not rolled_out:
        set_(c.READY, False, c.ROLLING_UPDATE, f"model {stable['modelVersion']} is rolling out")
        status["phase"] = "Progressing"
    elif degraded_state[0]:
        set_(c.READY, True, degraded_state[1], f"model {stable['modelVersion']} serves all traffic after: "
                                               f"{degraded_state[2]}")
        status["phase"] = "Failed"
    else:
        set_(c.READY, True, c.RECONCILED, f"model {stable['modelVersion']} serves all traffic")
        status["phase"] = "Serving"
    status["conditions"] = sorted(conditions, key=lambda x: CONDITION_ORDER.index(x["type"])
                                  if x["type"] in CONDITION_ORDER else len(CONDITION_ORDER))
    status["observedGeneration"] = generation
    plan.active = bool(canary) or not rolled_out
    plan.status = operator_status(status)
    return plan


__all__ = [
    "Candidate", "Observed", "Plan", "Selection", "TrackMeasurements", "analysis_due", "apply_retry", "decide",
    "evaluate_rules", "select_fine_tune_job", "select_lineage", "select_uri", "verdict",
]
