"""The MonitorPolicy's status, as pure functions of what one evaluation measured and decided.

The controller (recops.controllers.monitorpolicy) does the I/O; these set the conditions, the
rules' entries and the retrain records, and say which Events the changes are worth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recops.api import conditions as c
from recops.api.common import format_time
from recops.api.monitorpolicy import MonitorPolicySpec
from recops.controllers.conditions import Conditions, find
from recops.controllers.status import owned_status
from recops.monitor.retrain import OwnedJob, RetrainDecision
from recops.monitor.rules import BREACHED, ERROR, OK, PENDING, RuleVerdict

# Operator-owned status keys (everything the controller writes).
STATUS_FIELDS = ("conditions", "observedGeneration", "lastEvaluationTime", "rules", "baseline", "lastRetrain",
                 "retrains")
RETRAINS_KEPT = 100
Event = tuple[str, str, str]  # (Normal|Warning, reason, message)


def operator_status(status: Mapping[str, Any] | None) -> dict[str, Any]:
    return owned_status(status, STATUS_FIELDS)


@dataclass
class PolicyStatus:
    """One evaluation's status in the making: what was stored, what will be, and the conditions."""

    old: dict[str, Any]
    new: dict[str, Any]
    conditions: Conditions

    @classmethod
    def begin(cls, body: Mapping[str, Any], now: datetime) -> PolicyStatus:
        old = operator_status(body.get("status"))
        generation = body["metadata"].get("generation")
        stamp = format_time(now)
        new = {**old, "lastEvaluationTime": stamp, "observedGeneration": generation}
        return cls(old, new, Conditions(list(old.get("conditions") or []), generation, stamp))

    @property
    def previous_rules(self) -> dict[str, Any]:
        """Each rule's entry of the last evaluation, by name (its state and since continue from there)."""
        return {r.get("name"): r for r in self.old.get("rules") or []}

    def finished(self) -> dict[str, Any]:
        """The status to store: conditions in their order, empty fields left out."""
        return operator_status({**self.new, "conditions": self.conditions.ordered(c.MONITORPOLICY_CONDITIONS)})


@dataclass
class Judged:
    """What this evaluation's rules said."""

    verdicts: dict[str, RuleVerdict] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # failed queries, the first one first
    model_version: str | None = None  # the target's stable model; None: nothing was asked of Prometheus

    @property
    def breached(self) -> list[str]:
        return [name for name, verdict in self.verdicts.items() if verdict.state == BREACHED]


def target_missing(conditions: Conditions, spec: MonitorPolicySpec) -> None:
    message = f"RecModelDeployment {spec.target_ref.name} does not exist; the policy waits for it"
    conditions.set(c.READY, False, c.TARGET_NOT_FOUND, message)
    conditions.set(c.HEALTHY, None, c.TARGET_NOT_FOUND, message)


def no_stable_model(conditions: Conditions, spec: MonitorPolicySpec) -> str:
    message = f"RecModelDeployment {spec.target_ref.name} has no stable model yet"
    conditions.set(c.READY, False, c.WAITING_FOR_MODEL, message)
    return message


def judged_conditions(conditions: Conditions, spec: MonitorPolicySpec, judged: Judged) -> str:
    """MetricsUnavailable, Ready and Healthy from what was measured; the evaluation's result for the metrics."""
    result = "ok" if judged.model_version else "no_stable_model"
    if judged.errors:
        conditions.set(c.METRICS_UNAVAILABLE, True, c.QUERY_FAILED, judged.errors[0][:4096])
        if judged.model_version:
            conditions.set(c.READY, False, c.QUERY_FAILED, judged.errors[0][:4096])
        result = "metrics_unavailable"
    elif judged.model_version:  # without a stable model nothing was asked of Prometheus
        conditions.set(c.METRICS_UNAVAILABLE, False, c.METRICS_OK, "Prometheus answered every query")
        conditions.set(c.READY, True, c.RECONCILED,
                       f"{len(spec.rules)} rules evaluated on {spec.target_ref.name} (model {judged.model_version})")
    verdicts = judged.verdicts
    if judged.breached:
        conditions.set(c.HEALTHY, False, c.RULE_BREACHED,
                       "; ".join(f"{n}: {verdicts[n].message}" for n in judged.breached)[:4096])
        return "breached"
    if verdicts and all(v.state == ERROR for v in verdicts.values()):
        conditions.set(c.HEALTHY, None, c.QUERY_FAILED, (judged.errors[0] if judged.errors else "every query failed")[:4096])
    else:
        counts = {state: sum(v.state == state for v in verdicts.values()) for state in (OK, PENDING)}
        rest = len(verdicts) - sum(counts.values())
        conditions.set(c.HEALTHY, True, c.RULES_OK,
                       f"{counts[OK]} ok, {counts[PENDING]} pending, {rest} with too little data or failing")
    return result


def record_retrain(status: PolicyStatus, name: str, reason: str) -> None:
    record = {"fineTuneJob": name, "createdAt": status.conditions.now, "reason": reason[:1024]}
    status.new["lastRetrain"] = record
    kept = [r for r in status.new.get("retrains") or [] if r.get("fineTuneJob") != name]
    status.new["retrains"] = [*kept, record][-RETRAINS_KEPT:]


def retraining_condition(status: PolicyStatus, jobs: Sequence[OwnedJob], decision: RetrainDecision,
                         breached: bool) -> None:
    running = sorted(j.name for j in jobs if not j.finished)
    if running:
        status.conditions.set(c.RETRAINING, True, c.RETRAIN_STARTED, f"FineTuneJob {running[0]} is training")
    elif jobs or status.old.get("lastRetrain"):
        last = (status.new.get("lastRetrain") or {}).get("fineTuneJob") or max(jobs, key=lambda j: j.created_at).name
        extra = f"; {decision.reason}" if breached else ""
        status.conditions.set(c.RETRAINING, False, c.RETRAIN_FINISHED, f"FineTuneJob {last} finished{extra}"[:4096])
    else:
        status.conditions.set(c.RETRAINING, False, c.NO_RETRAIN,
                              decision.reason[:4096] if breached else "no retrain yet")


def rule_events(previous: Mapping[str, Any], verdicts: Mapping[str, RuleVerdict]) -> list[tuple[str, Event]]:
    """(rule, Event) for each rule whose state changed to Breached, Pending, or back to Ok."""
    events: list[tuple[str, Event]] = []
    for rule, verdict in verdicts.items():
        before = (previous.get(rule) or {}).get("state")
        if before == verdict.state:
            continue
        if verdict.state == BREACHED:
            events.append((rule, ("Warning", c.RULE_BREACHED, f"rule {rule} breached: {verdict.message}")))
        elif verdict.state == PENDING:
            events.append((rule, ("Normal", "RulePending", f"rule {rule} is bad, waiting for 'for': {verdict.message}")))
        elif verdict.state == OK and before in (BREACHED, PENDING):
            events.append((rule, ("Normal", "RuleRecovered", f"rule {rule} is ok again: {verdict.message}")))
    return events


def condition_events(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[Event]:
    """Events for the condition changes a person should hear of: metrics lost and back, the target gone, an
    invalid spec, a retrain finished."""
    def state(conditions: Sequence[dict[str, Any]], type_: str) -> tuple[str | None, str | None, str]:
        found = find(conditions, type_) or {}
        return found.get("status"), found.get("reason"), str(found.get("message") or "")

    events: list[Event] = []
    before, after = state(old, c.METRICS_UNAVAILABLE), state(new, c.METRICS_UNAVAILABLE)
    if after[0] == "True" and before[0] != "True":
        events.append(("Warning", c.QUERY_FAILED, after[2]))
    elif after[0] == "False" and before[0] == "True":
        events.append(("Normal", c.METRICS_OK, "Prometheus answers again"))
    ready_before, ready_after = state(old, c.READY), state(new, c.READY)
    for reason in (c.TARGET_NOT_FOUND, c.INVALID_SPEC):
        if ready_after[1] == reason and ready_before[1] != reason:
            events.append(("Warning", reason, ready_after[2]))
    retraining_before, retraining_after = state(old, c.RETRAINING), state(new, c.RETRAINING)
    if retraining_before[0] == "True" and retraining_after[0] == "False":
        events.append(("Normal", c.RETRAIN_FINISHED, retraining_after[2]))
    return events
