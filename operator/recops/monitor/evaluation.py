"""One evaluation of a MonitorPolicy's rules: measure each rule in Prometheus, then judge it.

Measuring is async (the operator's event loop); judging and the baseline bookkeeping are pure.
Every built-in metric is measured on the stable track of the target, pinned to the stable
model's version, so that a window never mixes two models (right after a promotion the new
model simply has too few samples: InsufficientData, never a breach).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from recops.api.common import format_time, parse_duration, parse_time
from recops.api.monitorpolicy import MonitorRule
from recops.monitor.drift import psi
from recops.monitor.prometheus import PrometheusError
from recops.monitor.promql import TrackSelector, builtin_query, score_histogram_query
from recops.monitor.rules import ERROR, Measurement, PreviousState, RuleVerdict, judge_policy_rule


class MetricsSource(Protocol):
    """What evaluation needs from Prometheus (recops.monitor.prometheus.Prometheus)."""

    async def value(self, promql: str) -> float | None: ...

    async def histogram(self, promql: str) -> tuple[list[float], list[float]]: ...


@dataclass(frozen=True)
class Histogram:
    upper_bounds: list[float]
    counts: list[float]  # cumulative, as Prometheus keeps them

    @property
    def total(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def to_status(self) -> dict[str, Any]:
        """status.baseline.scoreHistogram. JSON has no infinity: the +Inf bound is left out of
        upperBounds, so `counts` then has one entry more than `upperBounds` (the total)."""
        finite = [b for b in self.upper_bounds if math.isfinite(b)]
        return {"upperBounds": finite, "counts": list(self.counts)}

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> Histogram | None:
        if not data or not data.get("counts"):
            return None
        bounds = [float(b) for b in data.get("upperBounds") or []]
        counts = [float(c) for c in data["counts"]]
        if len(counts) == len(bounds) + 1:
            bounds.append(math.inf)
        return cls(bounds, counts)


def _finite_bounds(bounds: Sequence[float]) -> list[str]:
    return ["+Inf" if b == float("inf") else f"{b:g}" for b in bounds]


def drift_value(current: Histogram, baseline: Histogram) -> float:
    """PSI of the current score histogram against the baseline's (same bucket bounds)."""
    if _finite_bounds(current.upper_bounds) != _finite_bounds(baseline.upper_bounds):
        raise ValueError(
            f"score buckets changed since the baseline ({_finite_bounds(baseline.upper_bounds)} -> "
            f"{_finite_bounds(current.upper_bounds)})"
        )
    return psi(current.counts, baseline.counts)


async def measure_rule(
    source: MetricsSource,
    rule: MonitorRule,
    selector: TrackSelector,
    *,
    window: str | None = None,
    baseline_histogram: Histogram | None = None,
) -> Measurement:
    """The rule's value over `window` (default: the rule's own) and the samples behind it."""
    window = window or rule.window
    try:
        if rule.metric == "query":
            assert rule.query is not None
            return Measurement(value=await source.value(rule.query))
        if rule.metric == "scoreDrift":
            bounds, counts = await source.histogram(score_histogram_query(selector, window))
            current = Histogram(bounds, counts)
            if current.total <= 0:
                return Measurement(value=None, samples=0.0, note="no scores in the window")
            if baseline_histogram is None:
                return Measurement(value=None, samples=current.total, note="no baseline score histogram yet")
            try:
                return Measurement(value=drift_value(current, baseline_histogram), samples=current.total)
            except ValueError as err:
                return Measurement(value=None, samples=current.total, error=str(err))
        return await measure_builtin(source, rule.metric, selector, window)
    except PrometheusError as err:
        return Measurement(value=None, error=str(err))


async def measure_rules(source: MetricsSource, rules: list[MonitorRule], selector: TrackSelector, *,
                        baseline_histogram: Histogram | None = None) -> list[Measurement]:
    """Every rule's measurement (`measure_rule`), queried concurrently; in the rules' order."""
    return list(await asyncio.gather(*(
        measure_rule(source, rule, selector, baseline_histogram=baseline_histogram) for rule in rules)))


async def measure_builtin(source: MetricsSource, metric: str, selector: TrackSelector, window: str) -> Measurement:
    """A built-in metric of one track and its samples (no series at all: 0 samples). Raises PrometheusError."""
    query = builtin_query(metric, selector, window)
    value = await source.value(query.value)
    samples = (await source.value(query.samples)) if query.samples else None
    samples = samples if samples is not None or not query.samples else 0.0
    if metric == "errorRate" and value is None and samples:
        # Requests but no 5xx series at all: PromQL's ratio is empty, the error rate is 0.
        value = 0.0
    return Measurement(value=value, samples=samples)


@dataclass
class BaselineMeasurement:
    """What a baseline window of the stable model showed, and what it still lacks."""

    values: dict[str, float] = field(default_factory=dict)
    histogram: Histogram | None = None
    lacking: list[str] = field(default_factory=list)  # why it cannot be stored yet
    error: str | None = None

    @property
    def complete(self) -> bool:
        return not self.lacking and self.error is None


async def measure_baseline(
    source: MetricsSource, rules: Sequence[MonitorRule], selector: TrackSelector, window: str
) -> BaselineMeasurement:
    """Each rule's value over the baseline window, and the score histogram.

    A rule that compares with the baseline (relative threshold, or scoreDrift) needs at least its
    minSamples in the window; until then the baseline is not complete and is not stored.
    """
    out = BaselineMeasurement()
    try:
        bounds, counts = await source.histogram(score_histogram_query(selector, window))
    except PrometheusError as err:
        out.error = str(err)
        return out
    histogram = Histogram(bounds, counts)
    out.histogram = histogram if histogram.total > 0 else None
    for rule in rules:
        needs_baseline = rule.threshold.is_relative or rule.metric == "scoreDrift"
        if rule.metric == "scoreDrift":
            if histogram.total < max(rule.min_samples, 1):
                out.lacking.append(f"{rule.name}: {histogram.total:g} scores, fewer than minSamples {rule.min_samples}")
            else:
                out.values[rule.name] = 0.0  # drift of the baseline against itself
            continue
        measured = await measure_rule(source, rule, selector, window=window)
        if measured.error:
            out.error = measured.error
            return out
        enough = measured.samples is None or measured.samples >= rule.min_samples
        if measured.value is not None and enough:
            out.values[rule.name] = measured.value
        elif needs_baseline:
            samples = "no data" if measured.samples is None else f"{measured.samples:g} samples"
            out.lacking.append(f"{rule.name}: {samples}, fewer than minSamples {rule.min_samples}")
    return out


def judge_rules(
    rules: Sequence[MonitorRule],
    measurements: Mapping[str, Measurement],
    previous: Mapping[str, Mapping[str, Any]],
    baseline_values: Mapping[str, float] | None,
    now: datetime,
) -> dict[str, RuleVerdict]:
    """Each rule's verdict, continuing from its previous state and since (status.rules)."""
    verdicts = {}
    for rule in rules:
        before = previous.get(rule.name) or {}
        baseline = (baseline_values or {}).get(rule.name) if rule.threshold.is_relative else None
        verdicts[rule.name] = judge_policy_rule(
            rule.threshold, measurements[rule.name], min_samples=rule.min_samples, baseline=baseline,
            hold_for=parse_duration(rule.for_),
            previous=PreviousState(before.get("state"), parse_time(before.get("since"))), now=now,
        )
    return verdicts


def rule_status(rule: MonitorRule, verdict: RuleVerdict) -> dict[str, Any]:
    """status.rules[] entry (camelCase, None fields left out)."""
    entry: dict[str, Any] = {
        "name": rule.name,
        "threshold": rule.threshold.describe(),
        "state": verdict.state,
        "since": format_time(verdict.since),
        "message": verdict.message[:1024],
    }
    if verdict.value is not None and verdict.state != ERROR:
        entry["value"] = round(verdict.value, 6)
    if verdict.baseline is not None:
        entry["baseline"] = round(verdict.baseline, 6)
    if verdict.samples is not None:
        entry["samples"] = round(verdict.samples, 3)
    return entry


def baseline_due(started_at: datetime, window: str, now: datetime) -> bool:
    return now - started_at >= parse_duration(window)


def window_ago(now: datetime, window: str) -> datetime:
    return now - parse_duration(window)


__all__ = [
    "BaselineMeasurement", "Histogram", "MetricsSource", "baseline_due", "drift_value", "format_time", "judge_rules",
    "measure_baseline", "measure_builtin", "measure_rule", "parse_time", "rule_status", "window_ago",
]
