"""The MonitorPolicy controller: measure, judge, maybe retrain, write the status.

One evaluation (`evaluate`) reads the policy, its target RecModelDeployment and the
FineTuneJobs the policy created; measures every rule in Prometheus over the target's stable
track pinned to the stable model; captures a baseline after each promotion; judges the rules
(Ok, Pending, Breached, InsufficientData, Error); creates at most one FineTuneJob per breach
when cooldown, maxPerDay, in-flight and mid-canary allow; prunes finished jobs beyond
historyLimit; and writes the status once, only what changed. Missing data never retrains.

An evaluation is a plain function run in a worker thread, like every pass (controllers/work.py);
its Prometheus queries run on the operator's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from recops.api import conditions as c
from recops.api.common import API_VERSION, format_time, parse_duration, parse_time
from recops.api.finetunejob import PLURAL as FTJ_PLURAL
from recops.api.monitorpolicy import PLURAL, MonitorPolicy, MonitorPolicySpec
from recops.api.recmodeldeployment import PLURAL as RMD_PLURAL
from recops.builders import monitorpolicy as builders
from recops.controllers import monitorpolicy_status as mps
from recops.controllers.conditions import is_true
from recops.controllers.kube import ApiError, Kube, resource_path
from recops.controllers.status import EventPoster, ignore_event, parse, write_status
from recops.controllers.work import on_loop
from recops.monitor import evaluation as ev
from recops.monitor.prometheus import Prometheus, PrometheusAuth, auth_for
from recops.monitor.promql import TrackSelector
from recops.monitor.retrain import (
    OwnedJob,
    RetrainDecision,
    decide_retrain,
    jobs_to_prune,
    next_sequence,
    recent_records,
)
from recops.monitor.rules import Measurement, RuleVerdict

log = logging.getLogger("recops.controllers.monitorpolicy")

DEFAULT_INTERVAL = 60.0
# The longest an evaluation waits for its queries on the operator's loop (each query has its own timeout too).
PROMETHEUS_WAIT_S = 120.0


def mp_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return resource_path(API_VERSION, PLURAL, namespace, name, subresource)


def ftj_path(namespace: str, name: str | None = None) -> str:
    return resource_path(API_VERSION, FTJ_PLURAL, namespace, name)


def rmd_path(namespace: str, name: str) -> str:
    return resource_path(API_VERSION, RMD_PLURAL, namespace, name)


class MonitorMetrics:
    """recops_operator_monitor_* series: evaluations by result, breaches and retrains by policy."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.evaluations = Counter(
            "recops_operator_monitor_evaluations_total",
            "MonitorPolicy evaluations, by result (ok, breached, metrics_unavailable, target_not_found, "
            "no_stable_model, invalid).", ["namespace", "policy", "result"], registry=registry,
        )
        self.breaches = Counter(
            "recops_operator_monitor_breaches_total", "Rules that entered Breached, by policy and rule.",
            ["namespace", "policy", "rule"], registry=registry,
        )
        self.retrains = Counter(
            "recops_operator_monitor_retrains_total", "FineTuneJobs created by MonitorPolicies.",
            ["namespace", "policy"], registry=registry,
        )


@dataclass
class Evaluation:
    """What one evaluation did (for the scheduler, metrics, logs and tests)."""

    interval: float = DEFAULT_INTERVAL
    result: str = "ok"
    status_written: bool = False
    created: str | None = None
    pruned: list[str] = field(default_factory=list)
    gone: bool = False


def took_over_at(target_status: dict[str, Any]) -> str | None:
    """When the target's stable model began to serve: its latest promotion, else (a first model with no
    promotion recorded) its FineTuneJob's completion. A baseline is measured from then."""
    version = (target_status.get("stable") or {}).get("modelVersion")
    for promotion in reversed(target_status.get("promotions") or []):
        if promotion.get("modelVersion") == version and promotion.get("promotedAt"):
            return str(promotion["promotedAt"])
    completed = (target_status.get("stable") or {}).get("completedAt")
    return str(completed) if completed else None


def owned_jobs(items: list[dict[str, Any]], policy_uid: str) -> list[OwnedJob]:
    """The FineTuneJobs this policy (this uid, not an earlier namesake) created."""
    jobs = []
    for item in items:
        meta = item["metadata"]
        if not any(ref.get("uid") == policy_uid for ref in meta.get("ownerReferences") or []):
            continue
        conditions = (item.get("status") or {}).get("conditions") or []
        finished = is_true(conditions, c.COMPLETE) or is_true(conditions, c.FAILED)
        try:
            sequence = int((meta.get("annotations") or {}).get(builders.SEQUENCE_ANNOTATION, "0"))
        except ValueError:
            sequence = 0
        created = parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
        jobs.append(OwnedJob(meta["name"], created, finished, sequence))
    return jobs


def mid_canary(target: dict[str, Any]) -> bool:
    status = target.get("status") or {}
    return bool(status.get("canary")) or status.get("phase") == "Canary"


class MonitorPolicyController:
    def __init__(
        self,
        kube: Kube,
        *,
        default_prometheus_url: str | None = None,
        prometheus_auth: PrometheusAuth | None = None,
        post_event: EventPoster = ignore_event,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        prometheus_timeout: float = 10.0,
        prometheus_factory: Callable[..., Prometheus] = Prometheus,
    ) -> None:
        self.kube = kube
        # A seam for tests (an in-memory Prometheus); called as Prometheus(url, timeout_seconds=..., auth=...).
        self.prometheus_factory = prometheus_factory
        self.default_prometheus_url = default_prometheus_url
        self.prometheus_auth = prometheus_auth
        self.post_event = post_event
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.prometheus_timeout = prometheus_timeout
        # Why the last retrain was not started, per policy: an Event only when it changes.
        self.last_block: dict[tuple[str, str], str | None] = {}
        # The operator's event loop, where the Prometheus queries run; None (tests, tools): a loop of their own.
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- one evaluation -------------------------------------------------------------------
    def evaluate(self, namespace: str, name: str) -> Evaluation:
        """Measure, judge, maybe retrain, and write the status once (only what changed)."""
        body = self.kube.get(mp_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.last_block.pop((namespace, name), None)
            return Evaluation(gone=True)
        now = self.clock().replace(microsecond=0)
        status = mps.PolicyStatus.begin(body, now)
        policy, invalid = parse(body, MonitorPolicy)
        if policy is None:
            status.conditions.set(c.READY, False, c.INVALID_SPEC, (invalid or "invalid spec")[:4096])
            return self._finish(body, status, Evaluation(result="invalid"))
        spec = policy.spec
        result = Evaluation(interval=max(parse_duration(spec.interval).total_seconds(), 1.0))
        target = self.kube.get(rmd_path(namespace, spec.target_ref.name))
        if target is None:
            mps.target_missing(status.conditions, spec)
            result.result = "target_not_found"
            return self._finish(body, status, result)
        judged = self._judge(body, spec, target, status, now)
        result.result = mps.judged_conditions(status.conditions, spec, judged)
        jobs = self._owned_jobs(body)
        decision = self._retrain(body, spec, target, jobs, judged.breached, status, now, result)
        mps.retraining_condition(status, jobs, decision, bool(judged.breached))
        if spec.retrain is not None:
            result.pruned = self._prune(body, jobs, spec.retrain.history_limit)
        self._rule_events(body, status.previous_rules, judged.verdicts)
        return self._finish(body, status, result)

    def _owned_jobs(self, body: dict[str, Any]) -> list[OwnedJob]:
        meta = body["metadata"]
        selector = ",".join(f"{k}={v}" for k, v in builders.retrain_selector(meta["name"]).items())
        items = self.kube.list(ftj_path(meta["namespace"]), selector)
        return owned_jobs(items, meta["uid"])

    def _judge(self, body: dict[str, Any], spec: MonitorPolicySpec, target: dict[str, Any],
               status: mps.PolicyStatus, now: datetime) -> mps.Judged:
        """Measure every rule on the target's stable model (capturing its baseline first) and judge it."""
        target_status = target.get("status") or {}
        stable = {**(target_status.get("stable") or {}), "tookOverAt": took_over_at(target_status)}
        judged = mps.Judged(model_version=stable.get("modelVersion"))
        baseline_values: dict[str, float] | None = None
        if not judged.model_version:
            message = mps.no_stable_model(status.conditions, spec)
            measurements = {r.name: Measurement(value=None, note=message) for r in spec.rules}
        elif not (url := spec.prometheus.url or self.default_prometheus_url):
            judged.errors.append("no Prometheus: set spec.prometheus.url or the operator's --prometheus-url")
            measurements = {r.name: Measurement(value=None, error=judged.errors[0]) for r in spec.rules}
        else:
            namespace = body["metadata"]["namespace"]
            selector = TrackSelector(namespace, spec.target_ref.name, "stable", judged.model_version)
            prometheus = self.prometheus_factory(url, timeout_seconds=self.prometheus_timeout,
                                                 auth=auth_for(url, self.default_prometheus_url, self.prometheus_auth))
            baseline = self._baseline(body, spec, status.old.get("baseline"), stable, selector, prometheus,
                                      now, judged.errors)
            status.new["baseline"] = baseline
            captured = bool(baseline.get("capturedAt"))
            histogram = ev.Histogram.from_status(baseline.get("scoreHistogram")) if captured else None
            measured = on_loop(ev.measure_rules(prometheus, spec.rules, selector, baseline_histogram=histogram),
                               self.loop, PROMETHEUS_WAIT_S)
            measurements = dict(zip((r.name for r in spec.rules), measured, strict=True))
            baseline_values = baseline.get("values") if captured else None
            judged.errors += [m.error for m in measurements.values() if m.error]
        judged.verdicts = ev.judge_rules(spec.rules, measurements, status.previous_rules, baseline_values, now)
        status.new["rules"] = [ev.rule_status(rule, judged.verdicts[rule.name]) for rule in spec.rules]
        return judged

    def _retrain(self, body: dict[str, Any], spec: MonitorPolicySpec, target: dict[str, Any],
                 jobs: list[OwnedJob], breached: list[str], status: mps.PolicyStatus, now: datetime,
                 result: Evaluation) -> RetrainDecision:
        """Create a FineTuneJob when a breach asks for one and nothing holds it back (recops.monitor.retrain)."""
        old_records = status.old.get("retrains") or []
        recorded = {r["fineTuneJob"]: t for r in old_records if (t := parse_time(r.get("createdAt"))) is not None}
        decision = decide_retrain(breached=breached, retrain=spec.retrain, jobs=jobs, recorded=recorded,
                                  target_mid_canary=mid_canary(target), now=now)
        status.new["retrains"] = [dict(r) for r in recent_records(old_records, now)]
        event_log = (((target.get("spec") or {}).get("serving") or {}).get("eventLog") or {}).get("uri")
        if decision.create and not event_log:
            decision = RetrainDecision(False, f"{decision.reason}; the target logs no events "
                                              "(spec.serving.eventLog.uri), so there is nothing to retrain on",
                                       "no-event-log")
        if decision.create and spec.retrain is not None and event_log:
            created, new_object = self._create_retrain(body, spec, target, event_log, now, jobs,
                                                       len(status.new["retrains"]), decision.reason)
            if created is not None:
                mps.record_retrain(status, created, decision.reason)
                jobs.append(OwnedJob(created, now, False))
                result.created = created
                if new_object:
                    meta = body["metadata"]
                    self.metrics.retrains.labels(namespace=meta["namespace"], policy=meta["name"]).inc()
        self._note_block(body, decision.blocked_by, decision.reason)
        return decision

    # --- baseline ---------------------------------------------------------------------------
    def _baseline(self, body: dict[str, Any], spec: MonitorPolicySpec, previous: dict[str, Any] | None,
                  stable: dict[str, Any], selector: TrackSelector, prometheus: Prometheus, now: datetime,
                  errors: list[str]) -> dict[str, Any]:
        model_version = stable["modelVersion"]
        if previous and previous.get("modelVersion") == model_version:
            baseline = dict(previous)
        else:
            # A new stable model (a promotion, or the first one seen): measure it from when it took over.
            promoted = parse_time(stable.get("tookOverAt"))
            started = min(promoted, now) if promoted else now
            baseline = {"modelVersion": model_version, "startedAt": format_time(started)}
            self.post_event(body, "Normal", "BaselineStarted",
                            f"measuring {spec.baseline_window} of model {model_version} as the new baseline")
        if baseline.get("capturedAt"):
            return baseline
        started_at = parse_time(baseline.get("startedAt")) or now
        if not ev.baseline_due(started_at, spec.baseline_window, now):
            return baseline
        measured = on_loop(ev.measure_baseline(prometheus, spec.rules, selector, spec.baseline_window), self.loop,
                           PROMETHEUS_WAIT_S)
        if measured.error:
            errors.append(measured.error)
            return baseline
        if not measured.complete:
            log.info("baseline of %s not complete yet: %s", model_version, "; ".join(measured.lacking))
            return baseline
        baseline["values"] = {k: round(v, 6) for k, v in measured.values.items()}
        if measured.histogram is not None:
            baseline["scoreHistogram"] = measured.histogram.to_status()
        baseline["capturedAt"] = format_time(now)
        values = ", ".join(f"{k}={v:.4g}" for k, v in measured.values.items()) or "no values"
        self.post_event(body, "Normal", "BaselineCaptured", f"baseline of model {model_version}: {values}")
        return baseline

    # --- retrain ----------------------------------------------------------------------------
    def _create_retrain(self, body: dict[str, Any], spec: MonitorPolicySpec, target: dict[str, Any],
                        event_log: str, now: datetime, jobs: list[OwnedJob], recorded_count: int,
                        reason: str) -> tuple[str | None, bool]:
        """(the job's name or None when it could not be created, whether this call created it)."""
        assert spec.retrain is not None
        lineage = ((target.get("spec") or {}).get("model") or {}).get("lineage")
        since = now - parse_duration(spec.retrain.data_window)
        manifest = builders.retrain_job(body, spec, lineage=lineage, event_log_uri=event_log, since=since,
                                        sequence=next_sequence(jobs, recorded_count), reason=reason)
        name = str(manifest["metadata"]["name"])
        namespace = body["metadata"]["namespace"]
        try:
            self.kube.request("POST", ftj_path(namespace), manifest)
        except ApiError as error:
            if error.status == 409:  # created by an earlier pass that did not get to record it
                log.info("FineTuneJob %s/%s exists already", namespace, name)
                return name, False
            message = f"cannot create FineTuneJob {name}: {error.status} {_api_message(error)}"
            self.post_event(body, "Warning", "RetrainFailed", message)
            log.warning("%s/%s: %s", namespace, body["metadata"]["name"], message)
            return None, False
        self.post_event(body, "Normal", c.RETRAIN_STARTED,
                        f"created FineTuneJob {name} ({reason}) on {event_log} since {format_time(since)}")
        return name, True

    def _prune(self, body: dict[str, Any], jobs: list[OwnedJob], history_limit: int) -> list[str]:
        names = jobs_to_prune(jobs, history_limit)
        namespace = body["metadata"]["namespace"]
        for job_name in names:
            try:
                self.kube.request("DELETE", ftj_path(namespace, job_name))
            except ApiError as error:
                if error.status != 404:
                    raise
        if names:
            self.post_event(body, "Normal", "RetrainPruned",
                            f"deleted finished FineTuneJobs beyond historyLimit {history_limit}: {', '.join(names)}")
        return names

    # --- events and the status write ------------------------------------------------------
    def _note_block(self, body: dict[str, Any], blocked_by: str | None, reason: str) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if blocked_by in (None, "no-breach"):
            self.last_block[key] = blocked_by
            return
        if self.last_block.get(key) != blocked_by:
            self.post_event(body, "Normal", "RetrainSkipped", reason)
        self.last_block[key] = blocked_by

    def _rule_events(self, body: dict[str, Any], previous: dict[str, Any], verdicts: dict[str, RuleVerdict]) -> None:
        meta = body["metadata"]
        for rule, (type_, reason, message) in mps.rule_events(previous, verdicts):
            if reason == c.RULE_BREACHED:
                self.metrics.breaches.labels(namespace=meta["namespace"], policy=meta["name"], rule=rule).inc()
            self.post_event(body, type_, reason, message)

    def _finish(self, body: dict[str, Any], status: mps.PolicyStatus, result: Evaluation) -> Evaluation:
        new = status.finished()
        for type_, reason, message in mps.condition_events(status.old.get("conditions") or [], new["conditions"]):
            self.post_event(body, type_, reason, message)
        meta = body["metadata"]
        self.metrics.evaluations.labels(namespace=meta["namespace"], policy=meta["name"], result=result.result).inc()
        try:
            written = write_status(self.kube, mp_path(meta["namespace"], meta["name"], "status"), status.old, new)
            result.status_written = written is not None
        except ApiError as error:
            if error.status != 404:  # deleted meanwhile: nothing to record
                raise
            result.status_written = True
        return result


def _api_message(error: ApiError) -> str:
    import json

    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def interval_of(body: dict[str, Any]) -> float:
    """The policy's interval in seconds (the default when the spec cannot be read)."""
    try:
        return max(parse_duration(str((body.get("spec") or {}).get("interval") or "1m")).total_seconds(), 1.0)
    except ValueError:
        return DEFAULT_INTERVAL


__all__ = ["Evaluation", "MonitorMetrics", "MonitorPolicyController", "interval_of"]
