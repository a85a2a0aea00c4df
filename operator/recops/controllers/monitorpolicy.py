"""The MonitorPolicy controller: measure, judge, maybe retrain, write the status.

One evaluation (`evaluate`) reads the policy, its target RecModelDeployment and the
FineTuneJobs the policy created; measures every rule in Prometheus over the target's stable
track pinned to the stable model; captures a baseline after each promotion; judges the rules
(Ok, Pending, Breached, InsufficientData, Error); creates at most one FineTuneJob per breach
when cooldown, maxPerDay, in-flight and mid-canary allow; prunes finished jobs beyond
historyLimit; and writes the status once, only what changed. Missing data never retrains.

Evaluation is async (Prometheus queries run on the event loop); Kubernetes calls run in
worker threads through the same `Kube` client as the other controllers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from recops.api import conditions as c
from recops.api.common import API_VERSION, parse_duration
from recops.api.finetunejob import PLURAL as FTJ_PLURAL
from recops.api.monitorpolicy import PLURAL, MonitorPolicy, MonitorPolicySpec
from recops.api.recmodeldeployment import PLURAL as RMD_PLURAL
from recops.api.validation import format_errors
from recops.builders import monitorpolicy as builders
from recops.controllers.conditions import find, is_true, ordered, set_condition
from recops.controllers.kube import ApiError, Kube, resource_path
from recops.monitor import evaluation as ev
from recops.monitor.prometheus import Prometheus, PrometheusAuth, auth_for
from recops.monitor.promql import TrackSelector
from recops.monitor.retrain import OwnedJob, decide_retrain, jobs_to_prune, next_sequence, recent_records
from recops.monitor.rules import BREACHED, ERROR, OK, PENDING, Measurement, RuleVerdict

log = logging.getLogger("recops.controllers.monitorpolicy")

EventPoster = Callable[[dict[str, Any], str, str, str], None]
CONDITION_ORDER = (c.READY, c.HEALTHY, c.RETRAINING, c.METRICS_UNAVAILABLE)
# Operator-owned status keys (everything the controller writes).
STATUS_KEYS = ("conditions", "observedGeneration", "lastEvaluationTime", "rules", "baseline", "lastRetrain", "retrains")
DEFAULT_INTERVAL = 60.0


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


def parse(body: dict[str, Any]) -> tuple[MonitorPolicySpec | None, str | None]:
    manifest = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    try:
        return MonitorPolicy.model_validate(manifest).spec, None
    except ValidationError as error:
        return None, "; ".join(format_errors(error))


def took_over_at(target_status: dict[str, Any]) -> str | None:
    """When the target's stable model began to serve: its latest promotion, else (a first model with no
    promotion recorded) its FineTuneJob's completion. A baseline is measured from then."""
    version = (target_status.get("stable") or {}).get("modelVersion")
    for promotion in reversed(target_status.get("promotions") or []):
        if promotion.get("modelVersion") == version and promotion.get("promotedAt"):
            return str(promotion["promotedAt"])
    completed = (target_status.get("stable") or {}).get("completedAt")
    return str(completed) if completed else None


def operator_status(status: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (status or {}).items() if k in STATUS_KEYS}


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
        created = ev.parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
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
        post_event: EventPoster | None = None,
        metrics: MonitorMetrics | None = None,
        instance: str = "recops-operator",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        prometheus_timeout: float = 10.0,
        prometheus_factory: Callable[..., Prometheus] = Prometheus,
    ) -> None:
        self.kube = kube
        # A seam for tests (an in-memory Prometheus); called as Prometheus(url, timeout_seconds=..., auth=...).
        self.prometheus_factory = prometheus_factory
        self.default_prometheus_url = default_prometheus_url
        self.prometheus_auth = prometheus_auth
        # Kopf's kopf.event() works only inside its per-object processing; evaluations run on
        # the operator's own schedule, so by default Events are created through the API directly.
        self.post_event = post_event or self._post_event
        self.instance = instance
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.prometheus_timeout = prometheus_timeout
        # Why the last retrain was not started, per policy: an Event only when it changes.
        self.last_block: dict[tuple[str, str], str | None] = {}

    def _post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Create a core/v1 Event about `body` in a worker thread (fire and forget; failures are logged)."""
        manifest = event_manifest(body, type_, reason, message, self.instance, self.clock())

        def create() -> None:
            try:
                self.kube.request("POST", resource_path("v1", "events", manifest["metadata"]["namespace"]), manifest)
            except Exception as error:  # an Event is worth a log line, never a failed evaluation
                log.warning("cannot post Event %s on %s: %s", reason, body["metadata"].get("name"), error)

        try:
            asyncio.get_running_loop().run_in_executor(None, create)
        except RuntimeError:  # no event loop (called from a thread): post inline
            create()

    async def _kube(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # --- one evaluation -------------------------------------------------------------------
    async def evaluate(self, namespace: str, name: str) -> Evaluation:
        body = await self._kube(self.kube.get, mp_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.last_block.pop((namespace, name), None)
            return Evaluation(gone=True)
        now = self.clock().replace(microsecond=0)
        stamp = ev.format_time(now)
        generation = body["metadata"].get("generation")
        old = operator_status(body.get("status"))
        new: dict[str, Any] = {**old, "lastEvaluationTime": stamp, "observedGeneration": generation}
        conditions: list[dict[str, Any]] = list(old.get("conditions") or [])

        def condition(type_: str, status: bool | None, reason: str, message: str = "") -> None:
            nonlocal conditions
            conditions = set_condition(conditions, type_, status, reason, message[:4096], generation=generation,
                                       now=stamp)

        spec, invalid = parse(body)
        if spec is None:
            condition(c.READY, False, c.INVALID_SPEC, invalid or "invalid spec")
            return await self._finish(body, old, new, conditions, Evaluation(result="invalid"))
        result = Evaluation(interval=max(parse_duration(spec.interval).total_seconds(), 1.0))

        target = await self._kube(self.kube.get, rmd_path(namespace, spec.target_ref.name))
        if target is None:
            message = f"RecModelDeployment {spec.target_ref.name} does not exist; the policy waits for it"
            condition(c.READY, False, c.TARGET_NOT_FOUND, message)
            condition(c.HEALTHY, None, c.TARGET_NOT_FOUND, message)
            result.result = "target_not_found"
            return await self._finish(body, old, new, conditions, result)

        items = await self._kube(self.kube.list, ftj_path(namespace),
                                 ",".join(f"{k}={v}" for k, v in builders.retrain_selector(name).items()))
        jobs = owned_jobs(items, body["metadata"]["uid"])
        target_status = target.get("status") or {}
        stable = {**(target_status.get("stable") or {}), "tookOverAt": took_over_at(target_status)}
        model_version = stable.get("modelVersion")
        previous_rules = {r.get("name"): r for r in old.get("rules") or []}
        verdicts: dict[str, RuleVerdict] = {}
        errors: list[str] = []
        baseline_values: dict[str, float] | None = None

        if not model_version:
            message = f"RecModelDeployment {spec.target_ref.name} has no stable model yet"
            measurements = {r.name: Measurement(value=None, note=message) for r in spec.rules}
            verdicts = ev.judge_rules(spec.rules, measurements, previous_rules, None, now)
            condition(c.READY, False, c.WAITING_FOR_MODEL, message)
            result.result = "no_stable_model"
        else:
            selector = TrackSelector(namespace, spec.target_ref.name, "stable", model_version)
            url = spec.prometheus.url or self.default_prometheus_url
            if not url:
                errors.append("no Prometheus: set spec.prometheus.url or the operator's --prometheus-url")
                measurements = {r.name: Measurement(value=None, error=errors[0]) for r in spec.rules}
            else:
                prometheus = self.prometheus_factory(url, timeout_seconds=self.prometheus_timeout,
                                        auth=auth_for(url, self.default_prometheus_url, self.prometheus_auth))
                baseline = await self._baseline(body, spec, old.get("baseline"), stable, selector, prometheus, now,
                                                errors)
                new["baseline"] = baseline
                captured = bool(baseline.get("capturedAt"))
                histogram = ev.Histogram.from_status(baseline.get("scoreHistogram")) if captured else None
                measured = await asyncio.gather(*(
                    ev.measure_rule(prometheus, rule, selector, baseline_histogram=histogram) for rule in spec.rules
                ))
                measurements = dict(zip((r.name for r in spec.rules), measured, strict=True))
                baseline_values = baseline.get("values") if captured else None
            verdicts = ev.judge_rules(spec.rules, measurements, previous_rules, baseline_values, now)
            errors += [m.error for m in measurements.values() if m.error]

        new["rules"] = [ev.rule_status(rule, verdicts[rule.name]) for rule in spec.rules]
        breached = [n for n, v in verdicts.items() if v.state == BREACHED]

        # Conditions from what was measured.
        if errors:
            condition(c.METRICS_UNAVAILABLE, True, c.QUERY_FAILED, errors[0])
            if model_version:
                condition(c.READY, False, c.QUERY_FAILED, errors[0])
            result.result = "metrics_unavailable"
        elif model_version:  # without a stable model nothing was asked of Prometheus
            condition(c.METRICS_UNAVAILABLE, False, c.METRICS_OK, "Prometheus answered every query")
            condition(c.READY, True, c.RECONCILED,
                      f"{len(spec.rules)} rules evaluated on {spec.target_ref.name} (model {model_version})")
        if breached:
            condition(c.HEALTHY, False, c.RULE_BREACHED,
                      "; ".join(f"{n}: {verdicts[n].message}" for n in breached))
            result.result = "breached"
        elif verdicts and all(v.state == ERROR for v in verdicts.values()):
            condition(c.HEALTHY, None, c.QUERY_FAILED, errors[0] if errors else "every query failed")
        else:
            counts = {state: sum(v.state == state for v in verdicts.values()) for state in (OK, PENDING)}
            rest = len(verdicts) - sum(counts.values())
            condition(c.HEALTHY, True, c.RULES_OK,
                      f"{counts[OK]} ok, {counts[PENDING]} pending, {rest} with too little data or failing")

        # The retrain decision, on what exists now.
        recorded = {r["fineTuneJob"]: t for r in old.get("retrains") or []
                    if (t := ev.parse_time(r.get("createdAt"))) is not None}
        decision = decide_retrain(breached=breached, retrain=spec.retrain, jobs=jobs, recorded=recorded,
                                  target_mid_canary=mid_canary(target), now=now)
        retrains = [dict(r) for r in recent_records(old.get("retrains") or [], now)]
        if decision.create and spec.retrain is not None:
            event_log = (((target.get("spec") or {}).get("serving") or {}).get("eventLog") or {}).get("uri")
            if not event_log:
                decision = type(decision)(False, f"{decision.reason}; the target logs no events "
                                                 "(spec.serving.eventLog.uri), so there is nothing to retrain on",
                                          "no-event-log")
            else:
                created, new_object = await self._create_retrain(body, spec, target, event_log, now, jobs,
                                                                 len(retrains), decision.reason)
                if created is not None:
                    record = {"fineTuneJob": created, "createdAt": stamp, "reason": decision.reason[:1024]}
                    new["lastRetrain"] = record
                    retrains = [r for r in retrains if r.get("fineTuneJob") != created] + [record]
                    jobs.append(OwnedJob(created, now, False))
                    result.created = created
                    if new_object:
                        self.metrics.retrains.labels(namespace=namespace, policy=name).inc()
        new["retrains"] = retrains[-100:]
        self._note_block(body, decision.blocked_by, decision.reason)

        running = sorted(j.name for j in jobs if not j.finished)
        if running:
            condition(c.RETRAINING, True, c.RETRAIN_STARTED, f"FineTuneJob {running[0]} is training")
        elif jobs or old.get("lastRetrain"):
            last = (new.get("lastRetrain") or {}).get("fineTuneJob") or max(jobs, key=lambda j: j.created_at).name
            extra = f"; {decision.reason}" if breached else ""
            condition(c.RETRAINING, False, c.RETRAIN_FINISHED, f"FineTuneJob {last} finished{extra}")
        else:
            condition(c.RETRAINING, False, c.NO_RETRAIN, decision.reason if breached else "no retrain yet")

        if spec.retrain is not None:
            result.pruned = await self._prune(body, jobs, spec.retrain.history_limit)

        self._rule_events(body, previous_rules, verdicts)
        return await self._finish(body, old, new, conditions, result)

    # --- baseline ---------------------------------------------------------------------------
    async def _baseline(self, body: dict[str, Any], spec: MonitorPolicySpec, previous: dict[str, Any] | None,
                        stable: dict[str, Any], selector: TrackSelector, prometheus: Prometheus, now: datetime,
                        errors: list[str]) -> dict[str, Any]:
        model_version = stable["modelVersion"]
        if previous and previous.get("modelVersion") == model_version:
            baseline = dict(previous)
        else:
            # A new stable model (a promotion, or the first one seen): measure it from when it took over.
            promoted = ev.parse_time(stable.get("tookOverAt"))
            started = min(promoted, now) if promoted else now
            baseline = {"modelVersion": model_version, "startedAt": ev.format_time(started)}
            self.post_event(body, "Normal", "BaselineStarted",
                            f"measuring {spec.baseline_window} of model {model_version} as the new baseline")
        if baseline.get("capturedAt"):
            return baseline
        started_at = ev.parse_time(baseline.get("startedAt")) or now
        if not ev.baseline_due(started_at, spec.baseline_window, now):
            return baseline
        measured = await ev.measure_baseline(prometheus, spec.rules, selector, spec.baseline_window)
        if measured.error:
            errors.append(measured.error)
            return baseline
        if not measured.complete:
            log.info("baseline of %s not complete yet: %s", model_version, "; ".join(measured.lacking))
            return baseline
        baseline["values"] = {k: round(v, 6) for k, v in measured.values.items()}
        if measured.histogram is not None:
            baseline["scoreHistogram"] = measured.histogram.to_status()
        baseline["capturedAt"] = ev.format_time(now)
        values = ", ".join(f"{k}={v:.4g}" for k, v in measured.values.items()) or "no values"
        self.post_event(body, "Normal", "BaselineCaptured", f"baseline of model {model_version}: {values}")
        return baseline

    # --- retrain ----------------------------------------------------------------------------
    async def _create_retrain(self, body: dict[str, Any], spec: MonitorPolicySpec, target: dict[str, Any],
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
            await self._kube(self.kube.request, "POST", ftj_path(namespace), manifest)
        except ApiError as error:
            if error.status == 409:  # created by an earlier pass that did not get to record it
                log.info("FineTuneJob %s/%s exists already", namespace, name)
                return name, False
            message = f"cannot create FineTuneJob {name}: {error.status} {_api_message(error)}"
            self.post_event(body, "Warning", "RetrainFailed", message)
            log.warning("%s/%s: %s", namespace, body["metadata"]["name"], message)
            return None, False
        self.post_event(body, "Normal", c.RETRAIN_STARTED,
                        f"created FineTuneJob {name} ({reason}) on {event_log} since {ev.format_time(since)}")
        return name, True

    async def _prune(self, body: dict[str, Any], jobs: list[OwnedJob], history_limit: int) -> list[str]:
        names = jobs_to_prune(jobs, history_limit)
        namespace = body["metadata"]["namespace"]
        for job_name in names:
            try:
                await self._kube(self.kube.request, "DELETE", ftj_path(namespace, job_name))
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
        for rule, verdict in verdicts.items():
            before = (previous.get(rule) or {}).get("state")
            if before == verdict.state:
                continue
            if verdict.state == BREACHED:
                self.metrics.breaches.labels(namespace=meta["namespace"], policy=meta["name"], rule=rule).inc()
                self.post_event(body, "Warning", c.RULE_BREACHED, f"rule {rule} breached: {verdict.message}")
            elif verdict.state == PENDING:
                self.post_event(body, "Normal", "RulePending", f"rule {rule} is bad, waiting for 'for': {verdict.message}")
            elif verdict.state == OK and before in (BREACHED, PENDING):
                self.post_event(body, "Normal", "RuleRecovered", f"rule {rule} is ok again: {verdict.message}")

    async def _finish(self, body: dict[str, Any], old: dict[str, Any], new: dict[str, Any],
                      conditions: list[dict[str, Any]], result: Evaluation) -> Evaluation:
        new["conditions"] = ordered(conditions, CONDITION_ORDER)
        self._condition_events(body, old.get("conditions") or [], new["conditions"])
        meta = body["metadata"]
        self.metrics.evaluations.labels(namespace=meta["namespace"], policy=meta["name"], result=result.result).inc()
        new = {k: v for k, v in new.items() if v is not None}
        if new != old:
            patch = {k: new.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
            try:
                await self._kube(self.kube.merge_patch, mp_path(meta["namespace"], meta["name"], "status"),
                                 {"status": patch})
            except ApiError as error:
                if error.status != 404:  # deleted meanwhile: nothing to record
                    raise
            result.status_written = True
        return result

    def _condition_events(self, body: dict[str, Any], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
        def state(conditions: list[dict[str, Any]], type_: str) -> tuple[str | None, str | None]:
            found = find(conditions, type_)
            return (found.get("status"), found.get("reason")) if found else (None, None)

        before, after = state(old, c.METRICS_UNAVAILABLE), state(new, c.METRICS_UNAVAILABLE)
        if after[0] == "True" and before[0] != "True":
            self.post_event(body, "Warning", c.QUERY_FAILED, str(find(new, c.METRICS_UNAVAILABLE)["message"]))  # type: ignore[index]
        elif after[0] == "False" and before[0] == "True":
            self.post_event(body, "Normal", c.METRICS_OK, "Prometheus answers again")
        ready_before, ready_after = state(old, c.READY), state(new, c.READY)
        if ready_after[1] == c.TARGET_NOT_FOUND and ready_before[1] != c.TARGET_NOT_FOUND:
            self.post_event(body, "Warning", c.TARGET_NOT_FOUND, str(find(new, c.READY)["message"]))  # type: ignore[index]
        elif ready_after[1] == c.INVALID_SPEC and ready_before[1] != c.INVALID_SPEC:
            self.post_event(body, "Warning", c.INVALID_SPEC, str(find(new, c.READY)["message"]))  # type: ignore[index]
        retraining_before, retraining_after = state(old, c.RETRAINING), state(new, c.RETRAINING)
        if retraining_before[0] == "True" and retraining_after[0] == "False":
            self.post_event(body, "Normal", c.RETRAIN_FINISHED, str(find(new, c.RETRAINING)["message"]))  # type: ignore[index]


def event_manifest(body: dict[str, Any], type_: str, reason: str, message: str, instance: str,
                   now: datetime) -> dict[str, Any]:
    """A core/v1 Event about a recops object, as `kubectl describe` shows them."""
    meta = body["metadata"]
    stamp = ev.format_time(now)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"recops-{meta['name'][:200]}-", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind", "MonitorPolicy"),
                           "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": "recops-operator"},
        "reportingComponent": "recops-operator", "reportingInstance": instance[:128],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


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
