"""The one rule judge, for canary analysis and MonitorPolicy alike.

`judge` says whether one measured value is good or bad against a threshold, or why it cannot
say (too few samples, no value, no reference for a relative bound, a failed query). Each kind
turns that into its own states: canary analysis into Pass/Fail/Inconclusive/Error
(`recops.controllers.rollout`), MonitorPolicy through `hold` into a small state machine per
rule: Ok -> Pending (bad, but not yet for `for`) -> Breached (bad for at least `for`). Too
little data is InsufficientData and never a breach; a failed query is Error and never a breach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from recops.api.common import Threshold

# MonitorPolicy rule states (status.rules[].state).
OK, PENDING, BREACHED, INSUFFICIENT, ERROR = "Ok", "Pending", "Breached", "InsufficientData", "Error"


@dataclass(frozen=True)
class Measurement:
    """One metric of one track (or one PromQL query) over a window, and the samples behind it."""

    value: float | None
    samples: float | None = None  # None: the metric has no sample count (a `query` rule)
    error: str | None = None  # the query failed
    note: str | None = None  # why there is no value (e.g. no baseline histogram yet), when value is None

    @property
    def usable(self) -> bool:
        """A value to compare: Prometheus answers NaN for 0/0 and empty quantiles."""
        return self.value is not None and not math.isnan(self.value)


class Outcome(Enum):
    GOOD = "good"
    BAD = "bad"
    UNKNOWN = "unknown"  # too little data to say; never bad
    ERROR = "error"  # a query failed; never bad


class Lacking(Enum):
    """What an UNKNOWN judgement lacked."""

    SAMPLES = "samples"  # the measured track has fewer than min_samples
    VALUE = "value"  # the measured track has no value
    REFERENCE_SAMPLES = "reference samples"  # the reference (stable track) has fewer than min_samples
    REFERENCE = "reference"  # a relative bound and no reference value (no baseline, no stable value)


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    value: float | None = None
    reference: float | None = None  # the baseline or stable value a relative bound was computed from
    bound: float | None = None  # the value the threshold compared with
    lacking: Lacking | None = None
    error: str | None = None


def judge(threshold: Threshold, measured: Measurement, *, min_samples: float,
          reference: Measurement | None = None) -> Judgement:
    """Whether `measured` is bad against `threshold`; relative bounds compare with `reference`.

    The reference matters only to a relative bound, and then it needs min_samples (when it counts
    them) like the measured value does.
    """
    value = measured.value if measured.usable else None
    if measured.error:
        return Judgement(Outcome.ERROR, error=measured.error)
    if threshold.is_relative and reference is not None and reference.error:
        return Judgement(Outcome.ERROR, value=value, error=reference.error)
    if measured.samples is not None and measured.samples < min_samples:
        return Judgement(Outcome.UNKNOWN, value=value, lacking=Lacking.SAMPLES)
    if value is None:
        return Judgement(Outcome.UNKNOWN, lacking=Lacking.VALUE)
    if not threshold.is_relative:
        bound = threshold.bound(None)
        return Judgement(Outcome.BAD if threshold.breached(value) else Outcome.GOOD, value=value, bound=bound)
    if reference is not None and reference.samples is not None and reference.samples < min_samples:
        return Judgement(Outcome.UNKNOWN, value=value, lacking=Lacking.REFERENCE_SAMPLES)
    if reference is None or not reference.usable:
        return Judgement(Outcome.UNKNOWN, value=value, lacking=Lacking.REFERENCE)
    assert reference.value is not None
    bad = threshold.breached(value, reference.value)
    return Judgement(Outcome.BAD if bad else Outcome.GOOD, value=value, reference=reference.value,
                     bound=threshold.bound(reference.value))


# --- MonitorPolicy: the rule's state over evaluations ---------------------------------------
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


@dataclass(frozen=True)
class PreviousState:
    """A rule's state and since from the last evaluation (status.rules[])."""

    state: str | None = None
    since: datetime | None = None

    def since_if(self, state: str) -> datetime | None:
        return self.since if self.state == state else None


def policy_message(threshold: Threshold, measured: Measurement, judgement: Judgement, min_samples: float) -> str:
    """What status.rules[].message says about a judgement."""
    if judgement.outcome is Outcome.ERROR:
        return judgement.error or "query failed"
    if judgement.lacking is Lacking.SAMPLES:
        return f"{measured.samples:g} samples, fewer than minSamples {min_samples:g}"
    if judgement.lacking is Lacking.VALUE:
        return measured.note or "no data"
    if judgement.lacking is not None:
        return "no baseline yet; relative thresholds wait for it"
    described = f"{judgement.value:.4g} vs threshold {threshold.describe()}"
    if judgement.reference is not None:
        described += f" (baseline {judgement.reference:.4g})"
    return described


def hold(judgement: Judgement, message: str, *, hold_for: timedelta, previous: PreviousState,
         now: datetime) -> tuple[str, datetime, str]:
    """A MonitorPolicy rule's (state, since, message): bad turns Breached only after `hold_for`."""
    if judgement.outcome is Outcome.ERROR:
        state = ERROR
    elif judgement.outcome is Outcome.UNKNOWN:
        state = INSUFFICIENT
    elif judgement.outcome is Outcome.GOOD:
        state = OK
    elif previous.state == BREACHED:
        state = BREACHED
    else:
        pending_since = previous.since_if(PENDING) or now
        if now - pending_since >= hold_for:
            return BREACHED, now, f"{message}, held for {hold_for}"
        return PENDING, pending_since, f"{message}, breaching since {pending_since.isoformat()}"
    return state, previous.since_if(state) or now, message


def judge_policy_rule(threshold: Threshold, measured: Measurement, *, min_samples: float, baseline: float | None,
                      hold_for: timedelta, previous: PreviousState, now: datetime) -> RuleVerdict:
    """A MonitorPolicy rule's verdict now, from what was just measured and its last state."""
    reference = Measurement(baseline) if baseline is not None else None
    judgement = judge(threshold, measured, min_samples=min_samples, reference=reference)
    message = policy_message(threshold, measured, judgement, min_samples)
    state, since, message = hold(judgement, message, hold_for=hold_for, previous=previous, now=now)
    return RuleVerdict(state, since, measured.value, baseline, measured.samples, message)
