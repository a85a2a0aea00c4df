"""PromQL expansion, PSI and the rule state machine of MonitorPolicy and canary analysis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from recops.api.common import Threshold
from recops.monitor.drift import bucket_shares, psi
from recops.monitor.prometheus import PrometheusError, parse_vector, single_value
from recops.monitor.promql import TrackSelector, builtin_query, score_histogram_query
from recops.monitor.rules import (
    BREACHED,
    ERROR,
    INSUFFICIENT,
    OK,
    PENDING,
    Measurement,
    PreviousState,
    judge_policy_rule,
)

SEL = TrackSelector("shop", "ranker", "canary")
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def test_ctr_is_clicks_over_impressions_of_one_track() -> None:
    q = builtin_query("ctr", SEL, "5m")
    sel = '{recops_namespace="shop",recops_deployment="ranker",track="canary"}'
    assert q.value == f"sum(increase(recops_clicks_total{sel}[5m])) / sum(increase(recops_impressions_total{sel}[5m]))"
    assert q.samples == f"sum(increase(recops_impressions_total{sel}[5m]))"


def test_latency_and_errors_use_the_contract_names() -> None:
    p99 = builtin_query("p99LatencyMs", SEL, "1m").value
    assert p99.startswith("1000 * histogram_quantile(0.99, sum by (le) (rate(recops_request_duration_seconds_bucket{")
    assert 'route="/v1/rank"' in p99
    errors = builtin_query("errorRate", SEL, "1m").value
    assert 'recops_requests_total{recops_namespace="shop",recops_deployment="ranker",track="canary",code=~"5.."}' in errors
    assert "recops_purchases_total" in builtin_query("conversionRate", SEL, "1m").value
    with pytest.raises(ValueError, match="scoreDrift"):
        builtin_query("scoreDrift", SEL, "1m")


def test_selector_pins_model_version_and_escapes() -> None:
    sel = TrackSelector('n"s', "d", "stable", model_version="m-1")
    assert 'recops_namespace="n\\"s"' in sel.matchers() and 'model_version="m-1"' in sel.matchers()
    assert score_histogram_query(sel, "1h").startswith("sum by (le) (increase(recops_score_bucket{")


def test_psi_zero_for_same_shape_and_grows_with_shift() -> None:
    base = [10, 30, 60, 100]
    assert psi([20, 60, 120, 200], base) == pytest.approx(0.0, abs=1e-9)
    small = psi([12, 34, 64, 100], base)
    large = psi([50, 70, 85, 100], base)
    assert 0 < small < large
    # Hand-computed: shares p=(.5,.2,.15,.15) q=(.1,.2,.3,.4).
    expected = sum((a - b) * math.log(a / b) for a, b in [(.5, .1), (.2, .2), (.15, .3), (.15, .4)])
    assert large == pytest.approx(expected, rel=1e-3)


def test_psi_refuses_mismatched_or_empty_histograms() -> None:
    with pytest.raises(ValueError, match="different buckets"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        bucket_shares([0, 0, 0])


def run(threshold: Threshold, value: float | None, *, samples: float | None = 1000, baseline: float | None = None,
        prev: str | None = None, since: datetime | None = None, now: datetime = T0, hold: float = 60,
        error: str | None = None) -> tuple[str, datetime]:
    v = judge_policy_rule(threshold, Measurement(value, samples, error), min_samples=100, baseline=baseline,
                          hold_for=timedelta(seconds=hold), previous=PreviousState(prev, since), now=now)
    return v.state, v.since


def test_breach_only_after_holding_for() -> None:
    drop = Threshold(relative_decrease=0.2)
    state, since = run(drop, 0.05, baseline=0.1)
    assert (state, since) == (PENDING, T0)
    state, since = run(drop, 0.05, baseline=0.1, prev=PENDING, since=T0, now=T0 + timedelta(seconds=30))
    assert (state, since) == (PENDING, T0)
    state, since = run(drop, 0.05, baseline=0.1, prev=PENDING, since=T0, now=T0 + timedelta(seconds=61))
    assert (state, since) == (BREACHED, T0 + timedelta(seconds=61))
    state, _ = run(drop, 0.095, baseline=0.1, prev=BREACHED, since=T0)
    assert state == OK


def test_zero_for_breaches_at_once_and_ok_keeps_its_since() -> None:
    assert run(Threshold(above=200), 250, hold=0)[0] == BREACHED
    assert run(Threshold(above=200), 150, prev=OK, since=T0 - timedelta(hours=1)) == (OK, T0 - timedelta(hours=1))


def test_too_little_data_is_never_a_breach() -> None:
    assert run(Threshold(below=0.5), 0.0, samples=10)[0] == INSUFFICIENT
    assert run(Threshold(below=0.5), None)[0] == INSUFFICIENT
    assert run(Threshold(below=0.5), float("nan"))[0] == INSUFFICIENT
    assert run(Threshold(relative_decrease=0.1), 0.0, baseline=None)[0] == INSUFFICIENT
    assert run(Threshold(below=0.5), None, error="cannot query Prometheus")[0] == ERROR


def test_parse_prometheus_answers() -> None:
    ok = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"le": "0.5"}, "value": [0, "3"]}]}}
    assert parse_vector(ok) == [({"le": "0.5"}, 3.0)]
    assert single_value(parse_vector(ok)) == 3.0
    nan = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "NaN"]}]}}
    assert single_value(parse_vector(nan)) is None
    assert single_value([]) is None
    with pytest.raises(PrometheusError, match="bad_data: parse error"):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(PrometheusError, match="2 series"):
        single_value([({}, 1.0), ({}, 2.0)])
