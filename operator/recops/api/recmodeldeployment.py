"""RecModelDeployment: serve a model for real-time ranking and roll new models out safely."""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from recops.api.common import (
    Condition,
    Duration,
    KubeModel,
    KubeObject,
    LabelValue,
    LocalObjectReference,
    PodTemplate,
    Quantity,
    SecretKeySelector,
    Threshold,
    Timestamp,
    Uri,
    cel_rules,
    conditions_field,
)

KIND = "RecModelDeployment"
PLURAL = "recmodeldeployments"
Phase = Literal["Pending", "Progressing", "Canary", "Serving", "Failed"]
AnalysisMetric = Literal["ctr", "conversionRate", "p99LatencyMs", "errorRate"]


class ModelSource(KubeModel):
    """Exactly one source: a pinned FineTuneJob, a pinned URI, or a floating lineage."""

    model_config = cel_rules(
        {
            "rule": "[has(self.fineTuneJobRef), has(self.uri), has(self.lineage)].filter(x, x).size() == 1",
            "message": "exactly one of fineTuneJobRef, uri, lineage must be set",
        }
    )

    fine_tune_job_ref: LocalObjectReference | None = Field(
        default=None, description="Serve this FineTuneJob's model once it succeeded and passed its gate."
    )
    uri: Uri | None = Field(default=None, description="Serve the complete model at this URI.")
    lineage: LabelValue | None = Field(
        default=None,
        description="Follow the newest FineTuneJob labelled recops.dev/lineage=<lineage> that succeeded and passed its gate.",
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret with AWS_* keys for s3:// models."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if sum(x is not None for x in (self.fine_tune_job_ref, self.uri, self.lineage)) != 1:
            raise ValueError("exactly one of fineTuneJobRef, uri, lineage must be set")
        return self


class Autoscaling(KubeModel):
    model_config = cel_rules(
        {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas per track.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas per track.")
    target_cpu_utilization: int = Field(default=70, ge=1, le=100, description="Average CPU utilisation to aim for (%).")

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class ServingResources(KubeModel):
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per replica.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per replica.")
    gpus: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per replica.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector for the pods.")
    tolerations: list[KubeObject] = Field(default_factory=list, max_length=32, description="core/v1 Tolerations.")
    image: str | None = Field(default=None, max_length=512, description="Server image; the operator default when unset.")


class EventLogSpec(KubeModel):
    uri: Uri = Field(description="Prefix of the jsonl event log (impressions and feedback).")
    exploration: float = Field(
        default=0.05, ge=0.0, le=0.5,
        description="Share of ranked responses that show k of the candidates drawn at random, in a random order: the slice of the "
                    "log on which a retrain is judged against the serving model without that model's position bias "
                    "(a FineTuneJob's gate.beatCurrent on an event log needs it). 0 turns it off.",
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret with AWS_* keys for an s3:// URI."
    )


class ScoreCacheSpec(KubeModel):
    entries: int = Field(default=100000, ge=0, le=10000000,
                         description="(context, candidate) scores kept per replica for repeated queries; 0: none.")
    ttl: Duration = Field(default="10m", description="How long a kept score stays (a score never changes while its "
                          "model does not: this only bounds what cold entries cost).")


class ServingSpec(KubeModel):
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="Most requests scored in one forward pass.")
    max_batch_wait: Duration = Field(default="5ms", description="Longest a request waits for a batch to fill.")
    max_candidates: int = Field(default=200, ge=1, le=10000, description="Most candidates one request may rank.")
    max_queue: int = Field(default=256, ge=1, le=100000, description="Queued requests beyond which the server answers 503.")
    max_text_length: int = Field(default=2000, ge=1, le=100000, description="Longest accepted text (characters).")
    quantization: Literal["none", "int8"] = Field(default="none", description="int8: dynamic quantisation on CPU.")
    runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto", description="auto: ONNX Runtime when the model has an optimised form (FineTuneJob "
        "spec.optimize), else torch; torch: always the full-precision model; onnx: the optimised form or not ready.")
    score_cache: ScoreCacheSpec = Field(default_factory=ScoreCacheSpec, description="Scores kept for head queries.")
    feedback_key_secret_ref: SecretKeySelector | None = Field(
        default=None, description="HMAC key that signs requestIds; the operator's default Secret when unset."
    )
    feedback_token_ttl: Duration = Field(default="1h", description="How long feedback for a response is accepted.")
    event_log: EventLogSpec | None = Field(default=None, description="Where served events are logged for retraining.")


class CanaryStep(KubeModel):
    weight: int = Field(ge=1, le=100, description="Share of traffic (by replica ratio) the canary gets, in percent.")
    pause: Duration = Field(default="1m", description="How long the step is analysed before the next.")


class AnalysisRule(KubeModel):
    metric: AnalysisMetric = Field(description="ctr, conversionRate, p99LatencyMs or errorRate of the canary.")
    threshold: Threshold = Field(
        description="When the canary fails; relative bounds compare with the stable track over the same window."
    )


def _default_analysis_rules() -> list[AnalysisRule]:
    return [
        AnalysisRule(metric="ctr", threshold=Threshold(relative_decrease=0.1)),
        AnalysisRule(metric="errorRate", threshold=Threshold(above=0.01)),
        AnalysisRule(metric="p99LatencyMs", threshold=Threshold(above=1000)),
    ]


class AnalysisSpec(KubeModel):
    interval: Duration = Field(default="30s", description="How often the canary is judged.")
    window: Duration = Field(default="5m", description="PromQL range both tracks are measured over.")
    min_impressions: int = Field(
        default=200, ge=0, description=(
            "Impressions the canary needs before CTR or conversion rate is judged, and the stable track too when a "
            "relative bound compares with it; fewer is inconclusive."
        ),
    )
    rules: list[AnalysisRule] = Field(
        default_factory=_default_analysis_rules, max_length=16, description="What the canary must satisfy."
    )


class CanarySpec(KubeModel):
    model_config = cel_rules(
        {
            "rule": "self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight)) && "
            "self.steps[size(self.steps) - 1].weight <= 100",
            "message": "steps weights must rise strictly and the last must be at most 100",
            "fieldPath": ".steps",
        }
    )

    steps: list[CanaryStep] = Field(
        default_factory=lambda: [CanaryStep(weight=10), CanaryStep(weight=50)],
        min_length=1, max_length=20,
        description="Traffic steps; after the last the canary is promoted.",
    )
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec, description="How each step is judged.")
    failure_limit: int = Field(default=2, ge=1, le=100, description="Failed analyses before rolling back.")
    progress_deadline_seconds: int = Field(
        default=600, ge=0, le=7 * 24 * 3600,
        description="How long a canary may go without a verdict (its pods not ready, or every analysis "
        "Inconclusive for lack of metrics) before it is rolled back: promoting an unmeasured model is unsafe. "
        "0: wait for ever.",
    )

    @field_validator("steps")
    @classmethod
    def _rising(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        weights = [s.weight for s in steps]
        if any(b <= a for a, b in itertools.pairwise(weights)) or weights[-1] > 100:
            raise ValueError("steps weights must rise strictly and the last must be at most 100")
        return steps


class RolloutSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "self.strategy != 'Canary' || has(self.canary)", "message": "strategy Canary needs canary"}
    )

    strategy: Literal["RollingUpdate", "Canary"] = Field(
        default="RollingUpdate", description="RollingUpdate swaps the model in place; Canary walks steps."
    )
    canary: CanarySpec | None = Field(default=None, description="Canary steps and analysis.")

    @model_validator(mode="after")
    def _canary_present(self) -> RolloutSpec:
        if self.strategy == "Canary" and self.canary is None:
            raise ValueError("strategy Canary needs canary")
        return self


class RecModelDeploymentSpec(KubeModel):
    model_config = cel_rules(
        {
            "rule": "!(has(self.replicas) && has(self.autoscaling))",
            "message": "set replicas or autoscaling, not both",
        }
    )

    model: ModelSource = Field(description="Which model to serve.")
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Replicas of the stable track (default 1).")
    autoscaling: Autoscaling | None = Field(default=None, description="Scale with an HPA instead of replicas.")
    resources: ServingResources = Field(default_factory=ServingResources, description="Per-replica hardware.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Batching, limits, quantisation.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How new models roll out.")
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description="Additions to the server pods.")

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> RecModelDeploymentSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set replicas or autoscaling, not both")
        return self


class TrackStatus(KubeModel):
    model_uri: str = Field(max_length=2048, description="The model this track serves.")
    model_version: str = Field(max_length=253, description="Its version.")
    revision: int = Field(default=0, ge=0, description="Increases with each model this track serves.")
    fine_tune_job: str | None = Field(default=None, max_length=253, description="The FineTuneJob that wrote it.")
    completed_at: Timestamp | None = Field(default=None, description="When that FineTuneJob completed.")
    model_format: Literal["onnx", "torch"] | None = Field(
        default=None, description="What that FineTuneJob serves: onnx (its optimised form, on the torch-free server "
        "image) or torch; absent for a model given by uri (served by the torch image, which serves any model).")
    ready_replicas: int | None = Field(default=None, ge=0, description="Ready pods of this track.")


class RejectedModel(KubeModel):
    model_version: str = Field(max_length=253)
    model_uri: str = Field(max_length=2048)
    reason: str = Field(max_length=1024, description="Why it was rolled back.")
    rejected_at: Timestamp


class Promotion(KubeModel):
    model_version: str = Field(max_length=253)
    from_version: str | None = Field(default=None, max_length=253)
    promoted_at: Timestamp
    by: Literal["analysis", "annotation", "rollingUpdate", "initial"] = Field(description="What promoted it.")


class AnalysisResult(KubeModel):
    metric: str = Field(max_length=64)
    canary: float | None = None
    stable: float | None = None
    threshold: str = Field(max_length=128)
    state: Literal["Pass", "Fail", "Inconclusive", "Error"]


class RecModelDeploymentStatus(KubeModel):
    phase: Phase | None = Field(default=None, description="Pending, Progressing, Canary, Serving or Failed.")
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = None
    stable: TrackStatus | None = Field(default=None, description="The model serving all (or most) traffic.")
    canary: TrackStatus | None = Field(default=None, description="The candidate under analysis.")
    canary_weight: int | None = Field(default=None, ge=0, le=100, description="Canary's share of traffic (%).")
    canary_step: int | None = Field(default=None, ge=0, description="Index of the current canary step.")
    step_started_at: Timestamp | None = None
    analysis_failures: int | None = Field(default=None, ge=0)
    last_analysis: list[AnalysisResult] | None = Field(default=None, max_length=16)
    last_analysis_time: Timestamp | None = Field(default=None, description="When the canary was last analysed.")
    stalled_since: Timestamp | None = Field(
        default=None, description="Since when the canary has had no verdict (pods not ready or analysis Inconclusive)."
    )
    endpoint: str | None = Field(default=None, max_length=512, description="In-cluster URL of the Service.")
    rejected_models: list[RejectedModel] = Field(default_factory=list, max_length=100)
    promotions: list[Promotion] = Field(default_factory=list, max_length=10, description="The last promotions.")
    handled_annotations: dict[str, str] = Field(
        default_factory=dict, description="Steering annotations (promote, abort, retry-model) already acted on."
    )


class RecModelDeployment(KubeModel):
    api_version: Literal["recops.dev/v1alpha1"] = Field(default="recops.dev/v1alpha1")
    kind: Literal["RecModelDeployment"] = Field(default="RecModelDeployment")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RecModelDeploymentSpec
    status: RecModelDeploymentStatus | None = None


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.modelVersion"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.modelVersion"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
