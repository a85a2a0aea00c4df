"""The one rule judge (recops.monitor.rules), as canary analysis and MonitorPolicy use it, on the inputs where
their two former judges disagreed."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

from recops.api.common import Threshold
from recops.api.monitorpolicy import MonitorRule
from recops.api.recmodeldeployment import AnalysisRule
from recops.controllers import rollout
from recops.monitor import evaluation as ev
from recops.monitor.promql import TrackSelector
from recops.monitor.rules import (
    BREACHED,
    ERROR,
    INSUFFICIENT,
    OK,
    Lacking,
    Measurement,
    Outcome,
    PreviousState,
    judge,
    judge_policy_rule,
)
from tests.support.fake_prometheus import FakePrometheus

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NAN = float("nan")
# A MonitorPolicy state for each canary state, when `for` is 0.
CANARY_TO_POLICY = {"Pass": OK, "Fail": BREACHED, "Inconclusive": INSUFFICIENT, "Error": ERROR}


def canary_state(threshold: Threshold, canary: Measurement, stable: Measurement, min_impressions: int = 100) -> str:
    [result] = rollout.evaluate_rules([AnalysisRule(metric="ctr", threshold=threshold)], min_impressions,
                                      {"ctr": rollout.TrackMeasurements(canary, stable)})
    return str(result["state"])


def policy_state(threshold: Threshold, measured: Measurement, baseline: float | None, min_samples: int = 100) -> str:
    return judge_policy_rule(threshold, measured, min_samples=min_samples, baseline=baseline,
                             hold_for=timedelta(0), previous=PreviousState(), now=T0).state


def test_a_nan_value_is_too_little_data_for_both() -> None:
    """Prometheus answers NaN for 0/0; the canary judge used to compare it (NaN < bound is False: Pass)."""
    stable = Measurement(0.2, 500)
    for threshold in (Threshold(below=0.1), Threshold(relative_decrease=0.1)):
        assert canary_state(threshold, Measurement(NAN, 500), stable) == "Inconclusive"
        assert policy_state(threshold, Measurement(NAN, 500), 0.2) == INSUFFICIENT
    # A NaN reference cannot make a bound either.
    assert canary_state(Threshold(relative_decrease=0.1), Measurement(0.05, 500), Measurement(NAN, 500)) == \
        "Inconclusive"
    assert policy_state(Threshold(relative_decrease=0.1), Measurement(0.05, 500), NAN) == INSUFFICIENT


def test_no_server_errors_is_an_error_rate_of_zero_for_monitor_policy_too() -> None:
    """MonitorPolicy used to see 'no data' (InsufficientData for ever) where canary analysis saw 0."""
    rule = MonitorRule.model_validate({"name": "errors", "metric": "errorRate", "threshold": {"above": 0.01},
                                       "minSamples": 10})
    selector = TrackSelector("shop", "ranker", "stable", "a")
    measured = asyncio.run(ev.measure_rule(FakePrometheus({"requests": 40.0}), rule, selector))
    assert measured == Measurement(0.0, 40.0)
    verdict = ev.judge_rules([rule], {"errors": measured}, {}, None, T0)["errors"]
    assert verdict.state == OK and verdict.value == 0.0
    with_errors = asyncio.run(ev.measure_rule(FakePrometheus({"requests": 40.0, "errorRate": 0.05}), rule, selector))
    assert ev.judge_rules([rule], {"errors": with_errors}, {}, None, T0)["errors"].state == BREACHED


def test_the_reference_counts_only_for_a_relative_bound() -> None:
    """An absolute bound needs the canary's minImpressions, not the stable track's (the canary judge used to
    wait for both; MonitorPolicy never needed a baseline for an absolute bound)."""
    thin_stable = Measurement(0.2, 20)
    assert canary_state(Threshold(below=0.1), Measurement(0.05, 500), thin_stable) == "Fail"
    assert canary_state(Threshold(below=0.1), Measurement(0.15, 500), thin_stable) == "Pass"
    judgement = judge(Threshold(relative_decrease=0.1), Measurement(0.05, 500), min_samples=100, reference=thin_stable)
    assert (judgement.outcome, judgement.lacking) == (Outcome.UNKNOWN, Lacking.REFERENCE_SAMPLES)
    # A failed reference query is an error only where the reference is needed.
    broken = Measurement(None, error="refused")
    assert canary_state(Threshold(below=0.1), Measurement(0.05, 500), broken) == "Fail"
    assert canary_state(Threshold(relative_decrease=0.1), Measurement(0.05, 500), broken) == "Error"


def test_both_kinds_reach_the_same_verdict_on_the_same_measurements() -> None:
    thresholds = [Threshold(below=0.1), Threshold(above=0.1), Threshold(relative_decrease=0.2),
                  Threshold(relative_increase=0.2)]
    values = [None, NAN, 0.0, 0.05, 0.1, 0.15, 0.3]
    samples = [0.0, 99.0, 100.0, 5000.0]
    references = [None, 0.1, 0.2]
    errors = [None, "refused"]
    for threshold, value, n, reference, error in itertools.product(thresholds, values, samples, references, errors):
        measured = Measurement(value, n, error)
        stable = Measurement(reference, 5000.0)
        expected = policy_state(threshold, measured, reference if threshold.is_relative else None)
        got = canary_state(threshold, measured, stable)
        assert CANARY_TO_POLICY[got] == expected, (threshold, value, n, reference, error, got, expected)


def test_the_bound_is_reported_where_it_was_compared() -> None:
    judgement = judge(Threshold(relative_decrease=0.1), Measurement(0.17, 500), min_samples=100,
                      reference=Measurement(0.2, 900))
    assert judgement.outcome is Outcome.BAD and judgement.reference == 0.2
    assert abs((judgement.bound or 0) - 0.18) < 1e-12
    assert judge(Threshold(above=500), Measurement(120, 40), min_samples=1).bound == 500
    # A query rule counts no samples: only its value is judged.
    assert judge(Threshold(above=1), Measurement(3.5), min_samples=100).outcome is Outcome.BAD
