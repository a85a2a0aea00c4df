"""MonitorPolicy: watch what serving does to clicks, conversions and latency; retrain on degradation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from recops.api.common import (
    Condition,
    Duration,
    KubeModel,
    LocalObjectReference,
    Threshold,
    Timestamp,
    cel_rules,
    conditions_field,
)
from recops.api.finetunejob import FineTuneJobTemplateSpec

KIND = "MonitorPolicy"
PLURAL = "monitorpolicies"
RuleMetric = Literal["ctr", "conversionRate", "p99LatencyMs", "errorRate", "scoreDrift", "query"]
RuleState = Literal["Ok", "Pending", "Breached", "InsufficientData", "Error"]


class PrometheusSpec(KubeModel):
    url: str | None = Field(
        default=None, max_length=1024, pattern=r"^https?://", description="Prometheus base URL; the operator's default when unset."
    )


class MonitorRule(KubeModel):
    model_config = cel_rules(
        {
            "rule": "(self.metric == 'query') == has(self.query)",
            "message": "query must be set exactly when metric is query",
        }
    )

    name: str = Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Rule name, unique in the policy.")
    metric: RuleMetric = Field(description="A built-in metric of the target's stable track, or query.")
    query: str | None = Field(default=None, max_length=4096, description="PromQL returning one value (metric query).")
    window: Duration = Field(default="10m", description="Range the metric is measured over.")
    threshold: Threshold = Field(description="When the value is bad; relative bounds compare with the baseline.")
    for_: Duration = Field(default="0s", alias="for", description="How long the value must stay bad before a breach.")
    min_samples: int = Field(
        default=100, ge=0,
        description="Impressions (or requests) the window needs; fewer is InsufficientData, never a breach.",
    )

    @model_validator(mode="after")
    def _query_iff_metric_query(self) -> MonitorRule:
        if (self.metric == "query") != (self.query is not None):
            raise ValueError("query must be set exactly when metric is query")
        return self


class FineTuneJobTemplate(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Labels for the FineTuneJobs created.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations for the FineTuneJobs created.")
    spec: FineTuneJobTemplateSpec = Field(
        description="FineTuneJob spec; dataset.uri is set to the target's event log of dataWindow."
    )


class RetrainSpec(KubeModel):
    template: FineTuneJobTemplate = Field(description="The FineTuneJob a breach creates.")
    data_window: Duration = Field(default="24h", description="How much of the serving event log to train on.")
    cooldown: Duration = Field(default="1h", description="Least time between two retrains.")
    max_per_day: int = Field(default=3, ge=0, le=100, description="Most retrains in 24 hours.")
    history_limit: int = Field(default=5, ge=0, le=100, description="Finished FineTuneJobs kept.")
    deploy: bool = Field(
        default=True,
        description="Label the jobs with the target's lineage so that the target canaries the result.",
    )


class MonitorPolicySpec(KubeModel):
    model_config = cel_rules(
        {
            "rule": "self.rules.all(r, self.rules.exists_one(s, s.name == r.name))",
            "message": "rule names must be unique",
            "fieldPath": ".rules",
        }
    )

    target_ref: LocalObjectReference = Field(description="The RecModelDeployment watched.")
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec, description="Where metrics come from.")
    interval: Duration = Field(default="1m", description="How often the rules are evaluated.")
    baseline_window: Duration = Field(
        default="30m", description="Traffic of a newly promoted model measured as the baseline."
    )
    rules: list[MonitorRule] = Field(min_length=1, max_length=32, description="What counts as degradation.")
    retrain: RetrainSpec | None = Field(default=None, description="What to do on a breach; only report without it.")

    @model_validator(mode="after")
    def _unique_names(self) -> MonitorPolicySpec:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return self


class RuleStatus(KubeModel):
    name: str = Field(max_length=63)
    value: float | None = Field(default=None, description="Last value measured.")
    baseline: float | None = Field(default=None, description="Baseline value, for relative thresholds.")
    threshold: str = Field(max_length=128, description="The threshold in words.")
    state: RuleState = Field(description="Ok, Pending, Breached, InsufficientData or Error.")
    since: Timestamp | None = Field(default=None, description="When the rule entered this state.")
    samples: float | None = Field(default=None, description="Impressions or requests behind the value.")
    message: str | None = Field(default=None, max_length=1024)


class ScoreHistogram(KubeModel):
    upper_bounds: list[float] = Field(default_factory=list, max_length=64, description="Bucket upper bounds (le).")
    counts: list[float] = Field(default_factory=list, max_length=64, description="Cumulative counts per bucket.")


class Baseline(KubeModel):
    model_version: str | None = Field(default=None, max_length=253)
    started_at: Timestamp | None = Field(default=None, description="When measuring began.")
    captured_at: Timestamp | None = Field(default=None, description="When the baseline was stored; unset while measuring.")
    values: dict[str, float] = Field(default_factory=dict, description="Each rule's value over the window.")
    score_histogram: ScoreHistogram | None = None


class RetrainRecord(KubeModel):
    fine_tune_job: str = Field(max_length=253)
    created_at: Timestamp
    reason: str = Field(max_length=1024)


class MonitorPolicyStatus(KubeModel):
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = None
    last_evaluation_time: Timestamp | None = None
    rules: list[RuleStatus] = Field(default_factory=list, max_length=32)
    baseline: Baseline | None = None
    last_retrain: RetrainRecord | None = None
    retrains: list[RetrainRecord] = Field(default_factory=list, max_length=100, description="Retrains of the last 24 hours.")


class MonitorPolicy(KubeModel):
    api_version: Literal["recops.dev/v1alpha1"] = Field(default="recops.dev/v1alpha1")
    kind: Literal["MonitorPolicy"] = Field(default="MonitorPolicy")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MonitorPolicySpec
    status: MonitorPolicyStatus | None = None


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"},
    {"name": "Healthy", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Healthy")].status'},
    {"name": "Retraining", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Retraining")].status'},
    {"name": "Last-Retrain", "type": "string", "jsonPath": ".status.lastRetrain.fineTuneJob", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
