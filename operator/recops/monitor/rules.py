"""Rule evaluation for MonitorPolicy: a small state machine per rule.

Ok -> Pending (bad, but not yet for `for`) -> Breached (bad for at least `for`). Too little
data is InsufficientData and never a breach; a failed query is Error and never a breach.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from recops.api.common import Threshold

OK, PENDING, BREACHED, INSUFFICIENT, ERROR = "Ok", "Pending", "Breached", "InsufficientData", "Error"


@dataclass(frozen=True)
class Measurement:
    value: float | None
    samples: float | None = None
    error: str | None = None
    note: str | None = None  # why there is no value (e.g. no baseline histogram yet), when value is None


@dataclass(frozen=True)
class RuleVerdict:
    state: str
    since: datetime
    value: float | None
    baseline: float | None
    samples: float | None
    message: str

    @property
    def breached(self) -> bool:
        return self.state == BREACHED


def judge(
    *,
    threshold: Threshold,
    hold_for: timedelta,
    min_samples: float,
    measurement: Measurement,
    baseline: float | None,
    previous_state: str | None,
    previous_since: datetime | None,
    now: datetime,
) -> RuleVerdict:
    """The rule's state now, given its last state and what was just measured."""

    def verdict(state: str, message: str, since: datetime | None = None) -> RuleVerdict:
        if since is None:
            since = previous_since if previous_state == state and previous_since else now
        return RuleVerdict(state, since, measurement.value, baseline, measurement.samples, message)

    if measurement.error:
        return verdict(ERROR, measurement.error)
    if measurement.samples is not None and measurement.samples < min_samples:
        return verdict(INSUFFICIENT, f"{measurement.samples:g} samples, fewer than minSamples {min_samples:g}")
    if measurement.value is None or math_isnan(measurement.value):
        return verdict(INSUFFICIENT, measurement.note or "no data")
    bad = threshold.breached(measurement.value, baseline)
    if bad is None:
        return verdict(INSUFFICIENT, "no baseline yet; relative thresholds wait for it")
    described = f"{measurement.value:.4g} vs threshold {threshold.describe()}"
    if baseline is not None and threshold.is_relative:
        described += f" (baseline {baseline:.4g})"
    if not bad:
        return verdict(OK, described)
    if previous_state == BREACHED:
        return verdict(BREACHED, described)
    pending_since = previous_since if previous_state == PENDING and previous_since else now
    if now - pending_since >= hold_for:
        return verdict(BREACHED, f"{described}, held for {hold_for}", since=now)
    return verdict(PENDING, f"{described}, breaching since {pending_since.isoformat()}", since=pending_since)


def math_isnan(value: float) -> bool:
    return value != value
