"""MonitorPolicy's pure parts: measuring rules from Prometheus answers, the baseline, judging
rules over several evaluations, the retrain decision and the FineTuneJob a breach creates."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recops.api.contracts import LINEAGE_LABEL
from recops.api.monitorpolicy import MonitorPolicy, MonitorPolicySpec, MonitorRule, RetrainSpec
from recops.builders import monitorpolicy as builders
from recops.monitor import evaluation as ev
from recops.monitor.promql import TrackSelector
from recops.monitor.retrain import OwnedJob, decide_retrain, jobs_to_prune, next_sequence, recent_records
from recops.monitor.rules import BREACHED, ERROR, INSUFFICIENT, OK, PENDING, Measurement
from tests.support.fake_prometheus import FakePrometheus

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
SEL = TrackSelector("shop", "ranker", "stable", "ranker-ft-1-abcd1234")


def rule(**fields: Any) -> MonitorRule:
    return MonitorRule.model_validate({"name": "ctr", "metric": "ctr", "threshold": {"below": 0.1}, **fields})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- measuring ------------------------------------------------------------------------------
def test_builtin_rule_is_measured_on_the_pinned_stable_model_with_its_samples() -> None:
    prom = FakePrometheus({"ctr": 0.08, "impressions": 500.0})
    measured = run(ev.measure_rule(prom, rule(window="2m"), SEL))
    assert measured == Measurement(value=0.08, samples=500.0)
    assert all('model_version="ranker-ft-1-abcd1234"' in q and 'track="stable"' in q and "[2m]" in q for q in prom.asked)


def test_no_series_means_zero_samples_and_a_query_error_is_an_error() -> None:
    assert run(ev.measure_rule(FakePrometheus({}), rule(), SEL)) == Measurement(value=None, samples=0.0)
    failed = run(ev.measure_rule(FakePrometheus({}, fail="cannot query Prometheus at x: refused"), rule(), SEL))
    assert failed.error == "cannot query Prometheus at x: refused" and failed.value is None


def test_query_rule_runs_its_promql_as_is() -> None:
    q = 'sum(rate(http_errors_total{job="shop"}[5m]))'
    measured = run(ev.measure_rule(FakePrometheus({q: 3.5}), rule(metric="query", query=q, threshold={"above": 1}), SEL))
    assert measured == Measurement(value=3.5)


def test_score_drift_is_psi_against_the_baseline_histogram() -> None:
    bounds = [0.25, 0.5, 0.75, float("inf")]
    drift = rule(name="drift", metric="scoreDrift", threshold={"above": 0.2})
    baseline = ev.Histogram(bounds, [100, 300, 600, 1000])
    same_shape = FakePrometheus({}, (bounds, [50, 150, 300, 500]))
    assert run(ev.measure_rule(same_shape, drift, SEL, baseline_histogram=baseline)).value == pytest.approx(0.0, abs=1e-9)
    shifted = run(ev.measure_rule(FakePrometheus({}, (bounds, [400, 450, 480, 500])), drift, SEL,
                                  baseline_histogram=baseline))
    assert shifted.value is not None and shifted.value > 1.0 and shifted.samples == 500
    no_baseline = run(ev.measure_rule(same_shape, drift, SEL))
    assert no_baseline.value is None and no_baseline.note == "no baseline score histogram yet"
    other_buckets = run(ev.measure_rule(FakePrometheus({}, ([0.5, float("inf")], [1, 2])), drift, SEL,
                                        baseline_histogram=baseline))
    assert other_buckets.error is not None and "score buckets changed" in other_buckets.error


def test_baseline_needs_min_samples_for_the_rules_that_compare_with_it() -> None:
    relative = rule(threshold={"relativeDecrease": 0.2}, minSamples=100)
    absolute = rule(name="latency", metric="p99LatencyMs", threshold={"above": 250}, minSamples=10)
    bounds = [0.5, float("inf")]
    thin = run(ev.measure_baseline(FakePrometheus({"ctr": 0.2, "impressions": 40.0}, (bounds, [10, 40])),
                                   [relative, absolute], SEL, "30m"))
    assert not thin.complete and thin.lacking == ["ctr: 40 samples, fewer than minSamples 100"]
    enough = run(ev.measure_baseline(FakePrometheus({"ctr": 0.2, "impressions": 400.0}, (bounds, [100, 400])),
                                     [relative], SEL, "30m"))
    assert enough.complete and enough.values == {"ctr": 0.2}
    assert enough.histogram == ev.Histogram(bounds, [100, 400])
    assert enough.histogram is not None
    stored = enough.histogram.to_status()
    assert stored == {"upperBounds": [0.5], "counts": [100, 400]}  # JSON has no +Inf
    assert ev.Histogram.from_status(stored) == enough.histogram
    down = run(ev.measure_baseline(FakePrometheus({}, fail="refused"), [relative], SEL, "30m"))
    assert down.error == "refused" and not down.complete


# --- judging over evaluations -------------------------------------------------------------
def test_rule_goes_pending_then_breached_after_for_and_keeps_its_since() -> None:
    r = rule(**{"for": "20s", "minSamples": 50})
    bad = {"ctr": Measurement(value=0.05, samples=200)}
    first = ev.judge_rules([r], bad, {}, None, T0)["ctr"]
    assert first.state == PENDING
    status = {"ctr": ev.rule_status(r, first)}
    second = ev.judge_rules([r], bad, status, None, T0 + timedelta(seconds=10))["ctr"]
    assert second.state == PENDING and second.since == T0
    third = ev.judge_rules([r], bad, {"ctr": ev.rule_status(r, second)}, None, T0 + timedelta(seconds=21))["ctr"]
    assert third.state == BREACHED
    entry = ev.rule_status(r, third)
    assert entry["value"] == 0.05 and entry["samples"] == 200 and entry["threshold"] == "below 0.1"
    assert entry["since"] == "2026-11-29T08:00:21Z"


def test_too_little_traffic_is_insufficient_data_never_a_breach() -> None:
    r = rule(**{"for": "0s", "minSamples": 100})
    verdict = ev.judge_rules([r], {"ctr": Measurement(value=0.0, samples=12)}, {}, None, T0)["ctr"]
    assert verdict.state == INSUFFICIENT and "12 samples" in verdict.message


def test_relative_rule_waits_for_the_baseline_then_compares_with_it() -> None:
    r = rule(threshold={"relativeDecrease": 0.2}, minSamples=10)
    m = {"ctr": Measurement(value=0.15, samples=100)}
    assert ev.judge_rules([r], m, {}, None, T0)["ctr"].state == INSUFFICIENT
    judged = ev.judge_rules([r], m, {}, {"ctr": 0.2}, T0)["ctr"]
    assert judged.state == BREACHED and judged.baseline == 0.2  # 0.15 < 0.2 * 0.8
    assert ev.judge_rules([r], {"ctr": Measurement(value=0.17, samples=100)}, {}, {"ctr": 0.2}, T0)["ctr"].state == OK


def test_error_is_never_breached_even_after_a_breach() -> None:
    r = rule()
    breached = {"ctr": {"state": BREACHED, "since": "2026-11-29T07:00:00Z"}}
    verdict = ev.judge_rules([r], {"ctr": Measurement(value=None, error="refused")}, breached, None, T0)["ctr"]
    assert verdict.state == ERROR and not verdict.breached
    assert "value" not in ev.rule_status(r, verdict)


# --- the retrain decision -------------------------------------------------------------------
RETRAIN = RetrainSpec.model_validate({
    "template": {"spec": {"task": "click-through", "output": {"uri": "/models"}}},
    "cooldown": "1h", "maxPerDay": 2, "historyLimit": 2,
})


def decide(**overrides: Any) -> Any:
    args: dict[str, Any] = {"breached": ["ctr"], "retrain": RETRAIN, "jobs": [], "recorded": {},
                            "target_mid_canary": False, "now": T0}
    args.update(overrides)
    return decide_retrain(**args)


def test_a_breach_retrains_when_nothing_holds_it_back() -> None:
    decision = decide()
    assert decision.create and decision.reason == "ctr breached"


@pytest.mark.parametrize(
    ("overrides", "blocked_by"),
    [
        ({"breached": []}, "no-breach"),
        ({"retrain": None}, "report-only"),
        ({"jobs": [OwnedJob("p-1", T0 - timedelta(hours=3), finished=False)]}, "in-flight"),
        ({"target_mid_canary": True}, "mid-canary"),
        ({"jobs": [OwnedJob("p-1", T0 - timedelta(minutes=59), finished=True)]}, "cooldown"),
        ({"recorded": {"p-0": T0 - timedelta(minutes=10)}}, "cooldown"),  # pruned, but remembered
        ({"recorded": {"p-0": T0 - timedelta(hours=5), "p-1": T0 - timedelta(hours=2)}}, "max-per-day"),
    ],
)
def test_retrain_is_held_back(overrides: dict[str, Any], blocked_by: str) -> None:
    decision = decide(**overrides)
    assert not decision.create and decision.blocked_by == blocked_by


def test_cooldown_and_max_per_day_end() -> None:
    assert decide(jobs=[OwnedJob("p-1", T0 - timedelta(minutes=61), finished=True)]).create
    old = {"p-0": T0 - timedelta(hours=25), "p-1": T0 - timedelta(hours=2)}
    assert decide(recorded=old).create  # one of the two is older than 24h
    records = [{"fineTuneJob": "p-0", "createdAt": "2026-11-28T07:59:00Z"},
               {"fineTuneJob": "p-1", "createdAt": "2026-11-29T06:00:00Z"}]
    assert [r["fineTuneJob"] for r in recent_records(records, T0)] == ["p-1"]


def test_history_limit_prunes_the_oldest_finished_jobs_only() -> None:
    jobs = [OwnedJob(f"p-{i}", T0 + timedelta(hours=i), finished=i != 1) for i in range(5)]
    assert jobs_to_prune(jobs, 2) == ["p-0", "p-2"]  # p-1 is still running
    assert jobs_to_prune(jobs, 10) == []
    assert jobs_to_prune(jobs, 0) == ["p-0", "p-2", "p-3", "p-4"]


def test_next_sequence_is_past_every_existing_job() -> None:
    assert next_sequence([]) == 1
    assert next_sequence([], recorded_count=2) == 3
    assert next_sequence([OwnedJob("a", T0, True, 4), OwnedJob("b", T0, True, 2)], recorded_count=1) == 5


# --- the FineTuneJob of a breach -----------------------------------------------------------
def policy(**spec: Any) -> tuple[dict[str, Any], MonitorPolicySpec]:
    manifest = {
        "apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy",
        "metadata": {"name": "ranker-watch", "namespace": "shop", "uid": "0f1e2d3c-aaaa-bbbb",
                     "labels": {"argocd.argoproj.io/instance": "shop"}},
        "spec": {
            "targetRef": {"name": "ranker"},
            "rules": [{"name": "ctr", "metric": "ctr", "threshold": {"below": 0.1}}],
            "retrain": {
                "template": {
                    "labels": {"team": "search", "argocd.argoproj.io/instance": "x", LINEAGE_LABEL: "other"},
                    "annotations": {"note": "from the policy"},
                    "spec": {"task": "click-through", "output": {"uri": "/models"},
                             "dataset": {"uri": "/ignored", "maxRows": 5000}},
                },
                "dataWindow": "6h",
            },
            **spec,
        },
    }
    return manifest, MonitorPolicy.model_validate(manifest).spec


def test_retrain_job_is_owned_labelled_and_trains_on_the_event_log_window() -> None:
    body, spec = policy()
    job = builders.retrain_job(body, spec, lineage="ranker", event_log_uri="s3://events/shop/ranker",
                               since=T0 - timedelta(hours=6), sequence=3, reason="ctr breached")
    meta = job["metadata"]
    assert job["kind"] == "FineTuneJob" and meta["namespace"] == "shop"
    assert meta["name"] == builders.retrain_job_name("ranker-watch", "0f1e2d3c-aaaa-bbbb", 3)
    assert meta["name"].startswith("ranker-watch-") and len(meta["name"]) == len("ranker-watch-") + 8
    assert meta["ownerReferences"] == [{"apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy",
                                        "name": "ranker-watch", "uid": "0f1e2d3c-aaaa-bbbb", "controller": True,
                                        "blockOwnerDeletion": True}]
    labels = meta["labels"]
    assert labels[LINEAGE_LABEL] == "ranker"  # the target's lineage wins over the template's
    assert labels["recops.dev/monitorpolicy"] == "ranker-watch" and labels["team"] == "search"
    assert labels["app.kubernetes.io/managed-by"] == "recops"
    assert not any(k.startswith("argocd.argoproj.io/") for k in labels)
    assert meta["annotations"][builders.SEQUENCE_ANNOTATION] == "3"
    assert meta["annotations"]["note"] == "from the policy"
    dataset = job["spec"]["dataset"]
    assert dataset == {"uri": "s3://events/shop/ranker", "since": "2026-11-29T02:00:00Z", "maxRows": 5000,
                       **{k: v for k, v in dataset.items() if k not in ("uri", "since", "maxRows")}}
    assert job["spec"]["task"] == "click-through" and job["spec"]["output"] == {"uri": "/models"}
    assert builders.retrain_selector("ranker-watch").items() <= labels.items()


def test_same_retrain_same_name_and_deploy_false_drops_the_lineage() -> None:
    body, spec = policy()
    names = {builders.retrain_job_name("ranker-watch", "uid-1", 1) for _ in range(3)}
    assert len(names) == 1
    assert builders.retrain_job_name("ranker-watch", "uid-1", 2) not in names
    assert builders.retrain_job_name("ranker-watch", "uid-2", 1) not in names  # a recreated namesake policy
    body, spec = policy()
    assert spec.retrain is not None
    spec.retrain.deploy = False
    job = builders.retrain_job(body, spec, lineage="ranker", event_log_uri="/log", since=T0, sequence=1, reason="x")
    assert LINEAGE_LABEL not in job["metadata"]["labels"]
    long_name = builders.retrain_job_name("p" * 63, "uid", 1)
    assert len(long_name) <= 63


# --- the controller's pure helpers ----------------------------------------------------------
def test_owned_jobs_are_this_policys_and_finished_when_complete_or_failed() -> None:
    from recops.controllers.monitorpolicy import owned_jobs

    def job(name: str, uid: str, conditions: list[dict[str, str]], sequence: str | None = "1") -> dict[str, Any]:
        annotations = {builders.SEQUENCE_ANNOTATION: sequence} if sequence is not None else {}
        return {"metadata": {"name": name, "creationTimestamp": "2026-11-29T07:00:00Z", "annotations": annotations,
                             "ownerReferences": [{"uid": uid}]}, "status": {"conditions": conditions}}

    items = [
        job("a", "mine", [{"type": "Complete", "status": "True"}], "2"),
        job("b", "mine", [{"type": "Failed", "status": "True"}], None),
        job("c", "mine", [{"type": "Complete", "status": "False"}], "3"),
        job("d", "an-earlier-namesake", []),
    ]
    jobs = {j.name: j for j in owned_jobs(items, "mine")}
    assert set(jobs) == {"a", "b", "c"}
    assert jobs["a"].finished and jobs["b"].finished and not jobs["c"].finished
    assert (jobs["a"].sequence, jobs["b"].sequence, jobs["c"].sequence) == (2, 0, 3)
    assert jobs["a"].created_at == datetime(2026, 11, 29, 7, 0, tzinfo=UTC)


def test_mid_canary_and_the_event_manifest() -> None:
    from recops.controllers.events import event_manifest
    from recops.controllers.monitorpolicy import mid_canary

    assert mid_canary({"status": {"phase": "Canary"}})
    assert mid_canary({"status": {"phase": "Progressing", "canary": {"modelVersion": "x"}}})
    assert not mid_canary({"status": {"phase": "Serving", "stable": {"modelVersion": "x"}}})
    body, _ = policy()
    event = event_manifest(body, "Warning", "RuleBreached", "m" * 2000, "op-0", T0)
    assert event["involvedObject"] == {"apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy",
                                       "name": "ranker-watch", "namespace": "shop", "uid": "0f1e2d3c-aaaa-bbbb"}
    assert event["metadata"] == {"generateName": "recops-ranker-watch-", "namespace": "shop"}
    assert len(event["message"]) == 1024 and event["type"] == "Warning"
    assert event["lastTimestamp"] == "2026-11-29T08:00:00Z"


def test_a_baseline_starts_when_the_stable_model_took_over() -> None:
    from recops.controllers.monitorpolicy import took_over_at

    status = {
        "stable": {"modelVersion": "m-2", "completedAt": "2026-11-29T08:00:00Z"},
        "promotions": [
            {"modelVersion": "m-1", "promotedAt": "2026-11-29T07:00:00Z", "by": "initial"},
            {"modelVersion": "m-2", "promotedAt": "2026-11-29T09:30:00Z", "by": "analysis"},
        ],
    }
    assert took_over_at(status) == "2026-11-29T09:30:00Z"  # the promotion, not the training's end
    assert took_over_at({"stable": status["stable"]}) == "2026-11-29T08:00:00Z"
    assert took_over_at({}) is None
