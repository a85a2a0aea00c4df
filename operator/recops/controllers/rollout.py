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
from recops.api.recmodeldeployment import AnalysisRule, CanarySpec, RecModelDeploymentSpec
from recops.builders.recmodeldeployment import TrackModel, canary_replicas, version_of_uri
from recops.controllers.conditions import Conditions, ConditionState, find
from recops.controllers.status import owned_status
from recops.monitor.rules import Judgement, Lacking, Measurement, Outcome, judge

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


def _next_revision(status: Mapping[str, Any]) -> int:
    return int((status.get("stable") or {}).get("revision") or 0) + 1


NO_ROLLBACK = ConditionState(False, c.RECONCILED, "no rollback to report")
NOTHING_DECIDED = ConditionState(False, c.RECONCILED, "")


@dataclass
class RolloutPass:
    """One `decide` in the making: the new status, the Events, and what the steps decided of Degraded and
    Progressing."""

    status: dict[str, Any]
    now: datetime
    handled: dict[str, str]
    events: list[Event] = field(default_factory=list)
    degraded: ConditionState = NO_ROLLBACK
    progressing: ConditionState = NOTHING_DECIDED

    @property
    def stable(self) -> dict[str, Any]:
        return dict(self.status["stable"])

    @property
    def canary(self) -> dict[str, Any] | None:
        canary = self.status.get("canary")
        return dict(canary) if canary else None

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def take_annotation(self, annotations: Mapping[str, str], key: str) -> str | None:
        """The steering annotation's value when it is new, recorded as handled from now on."""
        value = new_annotation(annotations, self.handled, key)
        if value is not None:
            self.handled[key] = value
        return value

    def end_canary(self, rejected: str | None = None) -> None:
        """Take the canary off (rejected with that reason, when given)."""
        canary = self.canary
        if canary and rejected is not None:
            _reject(self.status, canary, rejected, self.now)
        _clear_canary(self.status)


def decide(spec: RecModelDeploymentSpec, annotations: Mapping[str, str], generation: int | None,
           old_status: Mapping[str, Any], selection: Selection, observed: Observed,
           analysis: list[dict[str, Any]] | None, now: datetime, endpoint: str | None = None) -> Plan:
    """The next status and what each track serves. `analysis`: this pass's rule results, when one was due."""
    state = _begin(old_status, now)
    candidate = selection.candidate
    # The first model serves at once: there is nothing to compare a canary with.
    if not state.status.get("stable"):
        if candidate is None:
            state.progressing = ConditionState(False, selection.reason or c.WAITING_FOR_MODEL, selection.message)
            return _finish(state, spec, generation, observed, selection, endpoint)
        _promote(state.status, candidate.track(1), "initial", now)
        state.event("Normal", c.PROMOTED, f"serving model {candidate.version} ({candidate.uri})")
    wanted = _wanted(state, candidate)
    if spec.rollout.strategy == "RollingUpdate" or spec.rollout.canary is None:
        _rolling_update(state, wanted, annotations)
    else:
        _canary_rollout(state, spec, wanted, annotations, observed, analysis)
    state.status["handledAnnotations"] = state.handled
    return _finish(state, spec, generation, observed, selection, endpoint)


def _begin(old_status: Mapping[str, Any], now: datetime) -> RolloutPass:
    """The pass starts from the stored status; Degraded stays as it was unless a model was just retried."""
    status = operator_status(old_status)
    state = RolloutPass(status, now, handled=dict(status.get("handledAnnotations") or {}))
    degraded = find(status.get("conditions"), c.DEGRADED)
    if degraded and degraded.get("status") == "True" and not old_status.get("retried"):
        state.degraded = ConditionState(True, str(degraded.get("reason")), str(degraded.get("message") or ""))
    return state


def _wanted(state: RolloutPass, candidate: Candidate | None) -> Candidate | None:
    """The candidate when it is not the stable model; a canary goes when the spec asks for the stable model again."""
    stable = state.stable
    if candidate is None or candidate.version != stable["modelVersion"]:
        return candidate
    canary = state.canary
    if canary:
        state.event("Normal", c.ABORTED, f"canary {canary['modelVersion']} removed: the spec asks for the "
                                         f"stable model {stable['modelVersion']} again")
        state.end_canary()
    return None


def _rolling_update(state: RolloutPass, wanted: Candidate | None, annotations: Mapping[str, str]) -> None:
    state.end_canary()
    if wanted is not None:
        state.event("Normal", c.ROLLING_UPDATE,
                    f"rolling the stable track from {state.stable['modelVersion']} to {wanted.version}")
        _promote(state.status, wanted.track(_next_revision(state.status)), "rollingUpdate", state.now)
        state.degraded = ConditionState(False, c.PROMOTED, f"model {wanted.version} promoted")
    for key in (ABORT_ANNOTATION, PROMOTE_ANNOTATION):
        state.take_annotation(annotations, key)  # nothing to promote or abort outside a canary


def _canary_rollout(state: RolloutPass, spec: RecModelDeploymentSpec, wanted: Candidate | None,
                    annotations: Mapping[str, str], observed: Observed, analysis: list[dict[str, Any]] | None) -> None:
    """People's annotations first, then a new canary if one is wanted, then one step of the running canary."""
    wanted = _abort_by_annotation(state, annotations, wanted)
    wanted = _promote_by_annotation(state, annotations, wanted)
    _start_canary_of(state, spec, wanted)
    canary = state.canary
    if canary:
        if state.degraded.status:
            state.degraded = ConditionState(False, CANARY_STARTED,
                                            f"a newer candidate ({canary['modelVersion']}) is rolling out")
        _canary_step(state, spec, observed, analysis)


def _abort_by_annotation(state: RolloutPass, annotations: Mapping[str, str],
                         wanted: Candidate | None) -> Candidate | None:
    canary = state.canary
    if state.take_annotation(annotations, ABORT_ANNOTATION) is None or not canary:
        return wanted
    reason = f"aborted with the annotation {ABORT_ANNOTATION}"
    state.event("Warning", c.ABORTED, f"canary {canary['modelVersion']} {reason}; "
                                      f"{state.stable['modelVersion']} serves all traffic")
    state.degraded = ConditionState(True, c.ABORTED, f"canary {canary['modelVersion']} {reason}")
    state.end_canary(rejected=reason)
    return None


def _promote_by_annotation(state: RolloutPass, annotations: Mapping[str, str],
                           wanted: Candidate | None) -> Candidate | None:
    if state.take_annotation(annotations, PROMOTE_ANNOTATION) is None:
        return wanted
    target = state.canary or (wanted.track(_next_revision(state.status)) if wanted else None)
    if not target:
        return wanted
    state.event("Normal", c.PROMOTED,
                f"model {target['modelVersion']} promoted with the annotation {PROMOTE_ANNOTATION}")
    _promote(state.status, target, "annotation", state.now)
    state.end_canary()
    state.degraded = ConditionState(False, c.PROMOTED, f"model {target['modelVersion']} promoted")
    return None


def _start_canary_of(state: RolloutPass, spec: RecModelDeploymentSpec, wanted: Candidate | None) -> None:
    """A canary of `wanted`, unless one of it (or of a newer model) runs already."""
    assert spec.rollout.canary is not None
    canary = state.canary
    if wanted is None or (canary and not _newer(wanted, canary)):
        return
    _start_canary(state.status, spec, wanted, state.now)
    if canary:
        state.event("Normal", CANARY_RESTARTED,
                    f"canary restarted with the newer model {wanted.version} (was {canary['modelVersion']})")
    else:
        state.event("Normal", CANARY_STARTED,
                    f"canary {wanted.version} started at {spec.rollout.canary.steps[0].weight}% of traffic")


def _stable_count(spec: RecModelDeploymentSpec, observed: Observed) -> int:
    if spec.autoscaling is not None:
        return observed.stable_replicas or spec.autoscaling.min_replicas
    return spec.replicas if spec.replicas is not None else 1


@dataclass(frozen=True)
class CanaryStep:
    """Where a running canary stands: its step, weight and the pods it needs there."""

    canary: CanarySpec
    version: str
    index: int
    weight: int
    replicas: int
    stable_replicas: int

    @classmethod
    def of(cls, status: Mapping[str, Any], spec: RecModelDeploymentSpec, observed: Observed) -> CanaryStep:
        canary_spec = spec.rollout.canary
        assert canary_spec is not None
        index = int(status.get("canaryStep") or 0)
        weight = canary_spec.steps[min(index, len(canary_spec.steps) - 1)].weight
        stable_n = _stable_count(spec, observed)
        return cls(canary_spec, str(status["canary"]["modelVersion"]), index, weight,
                   canary_replicas(stable_n, weight), stable_n)

    @property
    def where(self) -> str:
        return (f"step {self.index + 1}/{len(self.canary.steps)} ({self.weight}%, {self.replicas} canary : "
                f"{self.stable_replicas} stable pods)")

    def says(self, what: str) -> str:
        return f"canary {self.version} {what}"


def _canary_step(state: RolloutPass, spec: RecModelDeploymentSpec, observed: Observed,
                 analysis: list[dict[str, Any]] | None) -> None:
    """One pass of a running canary: wait for its pods, judge the analysis, step, promote or roll back."""
    step = CanaryStep.of(state.status, spec, observed)
    state.status["canaryWeight"] = step.weight
    if observed.canary_version != step.version or observed.canary_ready < step.replicas:
        _wait_for_pods(state, step, observed)
        return
    if not state.status.get("stepStartedAt"):
        state.status["stepStartedAt"] = format_time(state.now)
    if analysis is None:
        state.progressing = _last_judgement(state.status, step)
        return
    state.status["lastAnalysis"] = [{k: v for k, v in r.items() if k != "message"} for r in analysis]
    state.status["lastAnalysisTime"] = format_time(state.now)
    outcome, message = verdict(analysis)
    if outcome != "Inconclusive":
        state.status.pop("stalledSince", None)  # a verdict (Pass or Fail) is progress
    if outcome == "Fail":
        _analysis_failed(state, step, message)
    elif outcome == "Inconclusive":
        _analysis_inconclusive(state, step, message)
    else:
        _analysis_passed(state, spec, step)


def _wait_for_pods(state: RolloutPass, step: CanaryStep, observed: Observed) -> None:
    # The pause counts only from when the canary's pods serve (and status is not rewritten every pass).
    state.status.pop("stepStartedAt", None)
    problem = f": {observed.problem}" if observed.problem else ""
    waiting = f"waiting for its pods to be ready ({observed.canary_ready}/{step.replicas}){problem}"
    if stalled_too_long(state.status, step.canary.progress_deadline_seconds, state.now):
        _roll_back_stalled(state, step, waiting)
    else:
        state.progressing = ConditionState(True, c.CANARY_STEP, step.says(f"{step.where}: {waiting}"))


def _last_judgement(status: Mapping[str, Any], step: CanaryStep) -> ConditionState:
    """Nothing judged this pass: the last judgement stands."""
    previous = find(status.get("conditions"), c.PROGRESSING)
    if previous and previous.get("status") == "True" and previous.get("reason") in (c.CANARY_STEP, c.INCONCLUSIVE) \
            and "waiting for its pods" not in str(previous.get("message")):
        return ConditionState(True, str(previous["reason"]), str(previous.get("message") or ""))
    return ConditionState(True, c.CANARY_STEP, step.says(f"{step.where}: analysing"))


def _analysis_failed(state: RolloutPass, step: CanaryStep, message: str) -> None:
    failures = int(state.status.get("analysisFailures") or 0) + 1
    state.status["analysisFailures"] = failures
    limit = step.canary.failure_limit
    if failures >= limit:
        reason = f"rolled back after {failures} failed analyses: {message}"
        state.end_canary(rejected=reason)
        state.event("Warning", c.ROLLED_BACK, step.says(reason))
        state.progressing = ConditionState(False, c.ROLLED_BACK, step.says(reason))
        state.degraded = ConditionState(True, c.ROLLED_BACK, step.says(reason))
        return
    state.event("Warning", ANALYSIS_FAILED, step.says(f"failed analysis {failures}/{limit}: {message}"))
    state.progressing = ConditionState(
        True, c.CANARY_STEP, step.says(f"{step.where}: analysis failed {failures}/{limit}: {message}")[:2000])


def _analysis_inconclusive(state: RolloutPass, step: CanaryStep, message: str) -> None:
    if stalled_too_long(state.status, step.canary.progress_deadline_seconds, state.now):
        _roll_back_stalled(state, step, f"analysis inconclusive: {message}")
    else:
        state.progressing = ConditionState(True, c.INCONCLUSIVE, step.says(f"{step.where} waits: {message}")[:2000])


def _analysis_passed(state: RolloutPass, spec: RecModelDeploymentSpec, step: CanaryStep) -> None:
    """After the pause, the next step; after the last step, promotion."""
    pause_end = _pause_end(spec, state.status)
    if pause_end is not None and state.now < pause_end:
        left = max(0, int((pause_end - state.now).total_seconds()))
        state.progressing = ConditionState(True, c.CANARY_STEP,
                                           step.says(f"{step.where}: analysis passed; next step in {left}s"))
        return
    steps = step.canary.steps
    if step.index + 1 < len(steps):
        next_weight = steps[step.index + 1].weight
        state.status.update(canaryStep=step.index + 1, canaryWeight=next_weight, stepStartedAt=format_time(state.now))
        state.event("Normal", c.CANARY_STEP, step.says(f"passed step {step.index + 1}; now at {next_weight}%"))
        state.progressing = ConditionState(
            True, c.CANARY_STEP, step.says(f"moved to step {step.index + 2}/{len(steps)} ({next_weight}%)"))
        return
    state.event("Normal", c.PROMOTED, step.says("passed every step and was promoted"))
    canary = state.canary
    assert canary is not None
    _promote(state.status, canary, "analysis", state.now)
    state.end_canary()
    state.progressing = state.degraded = ConditionState(False, c.PROMOTED, f"model {step.version} promoted")


def stalled_too_long(status: dict[str, Any], deadline_seconds: int, now: datetime) -> bool:
    """Whether a canary without a verdict (pods not ready, or analysis Inconclusive) has passed its progress
    deadline; the first such pass records `stalledSince` (a Pass or Fail verdict clears it)."""
    since = parse_time(status.get("stalledSince"))
    if since is None:
        status["stalledSince"] = format_time(now)
        return False
    return deadline_seconds > 0 and (now - since).total_seconds() >= deadline_seconds


def _roll_back_stalled(state: RolloutPass, step: CanaryStep, why: str) -> None:
    """Roll back a canary that had no verdict for its progress deadline: promoting an unmeasured model is unsafe."""
    deadline = step.canary.progress_deadline_seconds
    reason = (f"rolled back: no verdict for {deadline}s (rollout.canary.progressDeadlineSeconds) "
              f"since {state.status.get('stalledSince')}; {why}")[:1024]
    state.end_canary(rejected=reason)
    state.event("Warning", c.PROGRESS_DEADLINE_EXCEEDED, step.says(reason)[:1024])
    message = step.says(reason)[:2000]
    state.progressing = ConditionState(False, c.PROGRESS_DEADLINE_EXCEEDED, message)
    state.degraded = ConditionState(True, c.PROGRESS_DEADLINE_EXCEEDED, message)


# --- the status of a pass -----------------------------------------------------------------
def _finish(state: RolloutPass, spec: RecModelDeploymentSpec, generation: int | None, observed: Observed,
            selection: Selection, endpoint: str | None) -> Plan:
    """The plan of children and the conditions and phase of what this pass decided."""
    status = state.status
    stable, canary = status.get("stable"), status.get("canary")
    plan = Plan(status, stable=_track_model(stable), events=state.events)
    plan.stable_replicas = None if spec.autoscaling is not None else (spec.replicas if spec.replicas is not None else 1)
    if canary:
        plan.canary = _track_model(canary)
        plan.canary_replicas = canary_replicas(_stable_count(spec, observed), int(status.get("canaryWeight") or 1))
        canary["readyReplicas"] = observed.canary_ready
    if stable:
        stable["readyReplicas"] = observed.stable_ready
    if endpoint:
        status["endpoint"] = endpoint
    rolled_out = bool(stable) and observed.stable_version == (stable or {}).get("modelVersion") \
        and observed.stable_rolled_out
    conditions = Conditions(list(status.get("conditions") or []), generation, format_time(state.now))
    waiting = ConditionState(False, selection.reason or c.WAITING_FOR_MODEL, selection.message)
    conditions.put(c.AVAILABLE, _available(stable, observed, waiting))
    conditions.put(c.PROGRESSING, _progressing(status, observed, selection, state.progressing, rolled_out, waiting))
    conditions.put(c.DEGRADED, state.degraded)
    ready, status["phase"] = _ready_and_phase(status, state.degraded, state.progressing, rolled_out, waiting)
    conditions.put(c.READY, ready)
    status["conditions"] = conditions.ordered(c.RECMODELDEPLOYMENT_CONDITIONS)
    status["observedGeneration"] = generation
    plan.active = bool(canary) or not rolled_out
    plan.status = operator_status(status)
    return plan


def _available(stable: Mapping[str, Any] | None, observed: Observed, waiting: ConditionState) -> ConditionState:
    if not stable:
        return waiting
    if observed.stable_ready > 0:
        return ConditionState(True, c.MINIMUM_REPLICAS, f"{observed.stable_ready} stable replica(s) ready")
    problem = f": {observed.problem}" if observed.problem else ""
    return ConditionState(False, c.REPLICAS_UNAVAILABLE, f"no stable replica is ready{problem}")


def _progressing(status: Mapping[str, Any], observed: Observed, selection: Selection, decided: ConditionState,
                 rolled_out: bool, waiting: ConditionState) -> ConditionState:
    stable = status.get("stable")
    if not stable:
        return waiting
    if status.get("canary"):
        return ConditionState(True, decided.reason, decided.message)
    if not rolled_out:
        problem = f" ({observed.problem})" if observed.problem else ""
        return ConditionState(True, c.ROLLING_UPDATE,
                              f"the stable Deployment is rolling out model {stable['modelVersion']}{problem}")
    if decided.reason in (c.PROMOTED, c.ROLLED_BACK, c.PROGRESS_DEADLINE_EXCEEDED):
        return ConditionState(False, decided.reason, decided.message)
    note = f"; {selection.message}" if selection.message else ""
    return ConditionState(False, c.RECONCILED, f"model {stable['modelVersion']} serves all traffic{note}")


def _ready_and_phase(status: Mapping[str, Any], degraded: ConditionState, decided: ConditionState, rolled_out: bool,
                     waiting: ConditionState) -> tuple[ConditionState, str]:
    stable = status.get("stable")
    if not stable:
        return waiting, "Pending"
    if status.get("canary"):
        return ConditionState(False, decided.reason, decided.message), "Canary"
    if not rolled_out:
        return ConditionState(False, c.ROLLING_UPDATE, f"model {stable['modelVersion']} is rolling out"), "Progressing"
    if degraded.status:
        return ConditionState(True, degraded.reason, f"model {stable['modelVersion']} serves all traffic after: "
                                                     f"{degraded.message}"), "Failed"
    return ConditionState(True, c.RECONCILED, f"model {stable['modelVersion']} serves all traffic"), "Serving"


__all__ = [
    "Candidate", "Observed", "Plan", "Selection", "TrackMeasurements", "analysis_due", "apply_retry",
    "decide", "evaluate_rules", "select_fine_tune_job", "select_lineage", "select_uri", "verdict",
]
