"""FineTuneJob: fine-tune a pretrained transformer on shop data and write a deployable model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from recops.api.common import (
    Condition,
    KubeModel,
    KubeObject,
    LocalObjectReference,
    MetricName,
    Name,
    PodTemplate,
    Quantity,
    SecretKeySelector,
    Timestamp,
    Uri,
    cel_rules,
    conditions_field,
)
from recops.api.gate import BaselineName, baseline_applies

KIND = "FineTuneJob"
PLURAL = "finetunejobs"

Task = Literal["click-through", "relevance", "embedding", "domain-pretrain"]
Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
DEFAULT_BASE_MODEL = "builtin://all-minilm-l6-v2"
DEFAULT_EVENT_GRADES = {"impression": 0, "click": 1, "add_to_cart": 2, "purchase": 3}
ColumnName = str

class BaseModelSpec(KubeModel):
    uri: Uri = Field(
        default=DEFAULT_BASE_MODEL,
        description="Pretrained model: a Hugging Face model directory (path, file://, pvc://, s3://) "
        "or builtin://all-minilm-l6-v2. Nothing is fetched from a hub.",
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret with AWS_* keys for an s3:// URI."
    )

class FieldMapping(KubeModel):
    """Which source column plays which role."""

    query: ColumnName | None = Field(default="query", max_length=128, description="Search query column.")
    user: ColumnName | None = Field(default="user_id", max_length=128, description="User id column (pseudonymised).")
    user_context: ColumnName | None = Field(
        default="user_context", max_length=128,
        description="Text describing the user (used when there is no query), as the serving event log writes it.",
    )
    product_id: ColumnName = Field(default="product_id", max_length=128, description="Product id column.")
    product_text: list[ColumnName] = Field(
        default_factory=lambda: ["title"], min_length=1, max_length=16,
        description="Product text columns, joined in this order.",
    )
    event: ColumnName | None = Field(default="event", max_length=128, description="Event type column.")
    label: ColumnName | None = Field(
        default=None, max_length=128, description="Numeric label column; overrides event grades when set."
    )
    timestamp: ColumnName | None = Field(default="timestamp", max_length=128, description="Event time column.")

class SplitSpec(KubeModel):
    by: Literal["query", "user", "time", "random"] = Field(
        default="query", description="Group that never straddles two splits (time: the latest events are test)."
    )
    validation: float = Field(default=0.1, ge=0.0, le=0.5, description="Fraction for validation.")
    test: float = Field(default=0.1, gt=0.0, le=0.5, description="Fraction for test.")
    seed: int = Field(default=42, ge=0, description="Seed that makes the split deterministic.")

class CleaningSpec(KubeModel):
    drop_duplicates: bool = Field(default=True, description="Drop exact duplicate events.")
    min_text_length: int = Field(default=1, ge=0, le=10000, description="Drop rows with shorter product text.")
    max_text_length: int = Field(default=5000, ge=1, le=1000000, description="Drop rows with longer product text.")
    drop_unknown_events: bool = Field(default=True, description="Drop events missing from eventGrades.")

class PseudonymisationSpec(KubeModel):
    enabled: bool = Field(default=True, description="Replace user ids by a salted hash before training.")
    salt_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the salt (RECOPS_PSEUDONYM_SALT); a random salt when unset."
    )

class DatasetSpec(KubeModel):
    uri: Uri | None = Field(
        default=None,
        description="Data: a file, directory or glob (path, file://, pvc://, s3://) or builtin://movielens-100k.",
    )
    format: Literal["auto", "parquet", "jsonl", "csv"] = Field(default="auto", description="File format.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret with AWS_* keys for an s3:// URI."
    )
    fields: FieldMapping = Field(default_factory=FieldMapping, description="Column roles.")
    event_grades: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_GRADES), max_length=32,
        description="Grade of each event type; click-through treats grade >= 1 as positive.",
    )
    split: SplitSpec = Field(default_factory=SplitSpec, description="Train/validation/test split.")
    cleaning: CleaningSpec = Field(default_factory=CleaningSpec, description="Cleaning steps.")
    pseudonymisation: PseudonymisationSpec = Field(
        default_factory=PseudonymisationSpec, description="User id pseudonymisation."
    )
    max_rows: int | None = Field(
        default=None, ge=1, description="Use at most this many rows: the newest when timed, else a seeded random sample."
    )
    user_history: int = Field(
        default=0, ge=0, le=20,
        description="Without a query, add the product texts of the user's last N liked items (strictly before each "
        "event) to the context: 'user: <context>; liked: <text>; <text>'. Needs user and timestamp columns; serve "
        "with the same in user.context.",
    )
    since: Timestamp | None = Field(
        default=None,
        description="Use only events at or after this time (RFC 3339); a MonitorPolicy sets it to now - dataWindow.",
    )

class LoraSpec(KubeModel):
    r: int = Field(default=8, ge=1, le=256, description="LoRA rank.")
    alpha: int = Field(default=16, ge=1, le=1024, description="LoRA alpha.")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"], max_length=16, description="Module names to adapt."
    )

class TrainingSpec(KubeModel):
    # Defaults measured on the synthetic shop and ml-100k (docs/finetunejob.md, "Defaults").
    epochs: float = Field(
        default=2.0, gt=0, le=100,
        description="Passes over the training split. click-through: counted in impressions (repeated (context, "
        "product) impressions train as one weighted row, the passes over those rows scaled to the same steps), and the "
        "epoch best on the validation split is kept.",
    )
    learning_rate: float = Field(default=1e-4, gt=0, le=1, description="Peak learning rate.")
    batch_size: int = Field(default=32, ge=1, le=4096, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024, description="Steps per optimiser update.")
    max_length: int = Field(default=128, ge=8, le=2048, description="Truncate inputs to this many tokens.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 where the GPU supports it, fp32 on CPU."
    )
    warmup_ratio: float = Field(default=0.1, ge=0, le=1, description="Fraction of steps for warm-up.")
    weight_decay: float = Field(default=0.01, ge=0, le=1, description="AdamW weight decay.")
    seed: int = Field(default=42, ge=0, description="Random seed.")
    lora: LoraSpec | None = Field(default=None, description="Train LoRA adapters instead of all weights.")
    loss: Literal["listwise", "pointwise"] = Field(
        default="listwise",
        description="click-through only. listwise: binary cross-entropy per impression plus a softmax over each "
        "group's impressions (one query's or user's), the order within a group that ranking metrics judge; batchSize "
        "counts impressions, taken whole groups at a time. pointwise: the binary cross-entropy alone.",
    )
    inverse_propensity: bool = Field(
        default=False,
        description="click-through on a serving event log: weigh each impression in the loss by 1/propensity (the "
        "logged probability that the serving policy showed it there; at most 20), so that the exploration slice's "
        "random displays count against the serving model's own ranking. Rows without a propensity (data that no "
        "recops server logged) weigh 1. Off by default: on the demo's logs it ranked no better, and it spends most "
        "of the weight on the few explored impressions (docs/finetunejob.md).",
    )

class FineTuneResources(KubeModel):
    model_config = cel_rules(
        {"rule": "self.workers >= 1", "message": "workers must be at least 1"},
        {"rule": "self.gpusPerWorker >= 0", "message": "gpusPerWorker must be a non-negative integer"},
    )

    workers: int = Field(default=1, ge=1, le=128, description="Number of training pods (data-parallel).")
    gpus_per_worker: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per worker.")
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per worker.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per worker.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector for the pods.")
    tolerations: list[KubeObject] = Field(default_factory=list, max_length=32, description="core/v1 Tolerations.")
    priority_class_name: Name | None = Field(default=None, description="PriorityClass of the pods.")
    queue_name: Name | None = Field(
        default=None, description="Kueue LocalQueue; Kueue then owns the Job's suspend field."
    )
    image: str | None = Field(default=None, max_length=512, description="Trainer image; the operator default when unset.")

class OutputSpec(KubeModel):
    uri: Uri = Field(description="Prefix; the model goes to <uri>/<namespace>/<model-version>/.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret with AWS_* keys for an s3:// URI."
    )

class Gate(KubeModel):
    """Whether a trained model may be deployed: a bound on one metric, and/or beating named baselines
    and the model serving now on it (see recops.api.gate)."""

    model_config = cel_rules(
        {
            "rule": "!(has(self.minimum) && has(self.maximum))",
            "message": "at most one of minimum, maximum may be set",
        },
        {
            "rule": "has(self.minimum) || has(self.maximum) || (has(self.beatCurrent) && self.beatCurrent)"
            " || (has(self.beatBaselines) && size(self.beatBaselines) > 0)",
            "message": "a gate needs minimum, maximum, beatBaselines or beatCurrent",
        },
        {
            "rule": "!has(self.beatBaselines) || !('constant' in self.beatBaselines)"
            " || self.metric in ['rmse', 'logloss', 'loss', 'accuracy']",
            "message": "beatBaselines: constant has only rmse, logloss, loss and accuracy",
            "fieldPath": ".beatBaselines",
        },
        {
            "rule": "!has(self.beatBaselines) || !('popularity' in self.beatBaselines || 'bm25' in self.beatBaselines)"
            " || self.metric in ['auc', 'mrr'] || self.metric.startsWith('ndcg@')"
            " || self.metric.startsWith('recall@')",
            "message": "beatBaselines: popularity and bm25 have only auc, mrr, ndcg@K and recall@K",
            "fieldPath": ".beatBaselines",
        },
    )

    metric: MetricName = Field(description="Metric the gate judges, e.g. auc or ndcg@10.")
    minimum: float | None = Field(default=None, description="Pass only when the metric is at least this.")
    maximum: float | None = Field(default=None, description="Pass only when the metric is at most this (losses).")
    beat_baselines: list[BaselineName] = Field(
        default_factory=list, max_length=3,
        description="Pass only when the model beats each of these baselines on the metric (same test split; on a "
        "serving event log, its exploration slice): "
        "popularity and bm25 for auc and ranking metrics, constant for rmse, logloss, loss and accuracy.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    beat_current: bool = Field(
        default=False, description="Also require beating the model that serves now on the same test split (on a serving "
        "event log, its exploration slice)."
    )

    @model_validator(mode="after")
    def _criteria(self) -> Gate:
        if self.minimum is not None and self.maximum is not None:
            raise ValueError("at most one of minimum, maximum may be set")
        if self.minimum is None and self.maximum is None and not self.beat_current and not self.beat_baselines:
            raise ValueError("a gate needs minimum, maximum, beatBaselines or beatCurrent")
        for name in self.beat_baselines:
            if not baseline_applies(name, self.metric):
                raise ValueError(f"beatBaselines: {name} has no meaningful {self.metric}")
        return self

class EvaluationSpec(KubeModel):
    metrics: list[MetricName] = Field(
        default_factory=lambda: ["auc", "logloss", "ndcg@10", "mrr", "recall@10"],
        max_length=16,
        description="Metrics computed on the test split.",
    )
    gate: Gate | None = Field(default=None, description="Deployment gate; without one every complete model passes.")

class OptimizeSpec(KubeModel):
    """After evaluation: export the trained cross-encoder (and its fusion) to ONNX, graph-optimised for ONNX Runtime,
    quantise it, score the test split with it, and serve it only if it ranks as the full-precision model does."""

    format: Literal["onnx"] = Field(default="onnx", description="onnx: served with ONNX Runtime on the CPU.")
    quantization: Literal["int8", "none"] = Field(
        default="int8", description="int8: dynamic quantisation of the weights (per channel); none: float32.")
    min_spearman: float = Field(
        default=0.99, ge=0, le=1, description="Serve the optimised model only if the Spearman correlation of its "
        "scores with the full-precision model's, per group of the test split (then averaged), is at least this.")
    min_top10_overlap: float = Field(
        default=0.95, ge=0, le=1, description="... and the share of each group's top 10 that both models put "
        "there (averaged) is at least this. Either way, a gate the optimised model fails where the full-precision "
        "one passes keeps the full-precision model.")


OPTIMIZE_RULE: dict[str, str] = {
    "rule": "!has(self.optimize) || self.task in ['click-through', 'relevance']",
    "message": "optimize needs a cross-encoder task: click-through or relevance", "fieldPath": ".optimize"}


class FineTuneJobTemplateSpec(KubeModel):
    """The FineTuneJob spec. MonitorPolicy templates use it as is (dataset.uri filled in by the policy)."""

    model_config = cel_rules(dict(OPTIMIZE_RULE))

    task: Task = Field(description="click-through, relevance, embedding or domain-pretrain.")
    base_model: BaseModelSpec = Field(default_factory=BaseModelSpec, description="Pretrained starting point.")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec, description="Training data and its preparation.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyper-parameters.")
    resources: FineTuneResources = Field(default_factory=FineTuneResources, description="Workers and hardware.")
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description="Additions to the trainer pods.")
    output: OutputSpec = Field(description="Where models are written.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Metrics and gate.")
    optimize: OptimizeSpec | None = Field(
        default=None, description="Serve an ONNX (int8) form of the model when it ranks as the full model does.")
    backoff_limit: int = Field(default=2, ge=0, le=100, description="Retries before the job fails.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job when it runs longer than this (mutable)."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the Job this long after it finished (set once its outcome is in status, which stays)."
    )
    suspend: bool = Field(default=False, description="Stop (or hold) the job's pods; mutable.")

    @model_validator(mode="after")
    def _optimize_needs_a_cross_encoder(self) -> FineTuneJobTemplateSpec:
        if self.optimize is not None and self.task not in ("click-through", "relevance"):
            raise ValueError(OPTIMIZE_RULE["message"])
        return self

MUTABLE_SPEC_FIELDS = ("suspend", "activeDeadlineSeconds")
DATASET_URI_RULE: dict[str, str] = {"rule": "has(self.dataset.uri)", "message": "dataset.uri is required", "fieldPath": ".dataset.uri"}


class FineTuneJobSpec(FineTuneJobTemplateSpec):
    """Immutable after creation except suspend and activeDeadlineSeconds, as batch/v1 Job."""

    model_config = cel_rules(dict(OPTIMIZE_RULE), dict(DATASET_URI_RULE))

    @model_validator(mode="after")
    def _dataset_uri_required(self) -> FineTuneJobSpec:
        if self.dataset.uri is None:
            raise ValueError("dataset.uri is required")
        return self

class Progress(KubeModel):
    """The trainer's newest progress line, copied by the operator from its log."""

    step: int = Field(default=0, ge=0, description="Optimiser steps done.")
    total_steps: int = Field(default=0, ge=0, description="Optimiser steps planned.")
    epoch: float = Field(default=0.0, ge=0, description="Epochs done (fractional).")
    percent: float = Field(default=0.0, ge=0, le=100, description="Percent done.")
    updated_at: Timestamp | None = Field(default=None, description="When the trainer printed it.")

class ModelRef(KubeModel):
    uri: str = Field(max_length=2048, description="Where the complete model is.")
    version: str = Field(max_length=253, description="<ftj-name>-<first 8 of uid>.")

class DebiasedMetrics(KubeModel):
    rows: int = Field(default=0, ge=0, description="Explored impressions in the test split (0: the log has none).")
    groups: int = Field(default=0, ge=0, description="Their groups (queries, else users).")
    metrics: dict[str, float] | None = Field(default=None, description="The model's metrics on them.")
    baseline: dict[str, dict[str, float]] | None = Field(default=None, description="The baselines' on them.")
    current_model: dict[str, float] | None = Field(default=None, description="The current model's on them.")


class OptimizationStatus(KubeModel):
    format: str = Field(max_length=32, description="onnx.")
    quantization: str = Field(max_length=32, description="int8 or none.")
    served: bool = Field(description="Whether the optimised model is the one served (else the full-precision one).")
    spearman: float | None = Field(default=None, description="Mean per-group Spearman correlation of the two "
                                   "models' scores on the test split.")
    top10_overlap: float | None = Field(default=None, description="Mean share of each group's top 10 both share.")
    latency_ms_per100: dict[str, float] | None = Field(
        default=None, description="Milliseconds to score 100 test pairs on one CPU thread: fullPrecision, optimized.")
    full_precision_metrics: dict[str, float] | None = Field(
        default=None, description="The full-precision model's metrics on the test split.")
    reason: str | None = Field(default=None, max_length=1024, description="Why it is or is not served.")


class FineTuneJobStatus(KubeModel):
    phase: Phase | None = Field(default=None, description="Pending, Running, Succeeded, Failed or Suspended.")
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    start_time: Timestamp | None = Field(default=None, description="When the first trainer pod started.")
    completion_time: Timestamp | None = Field(default=None, description="When the job finished.")
    attempts: int | None = Field(default=None, ge=0, description="Trainer pods started so far.")
    progress: Progress | None = Field(default=None, description="Training progress, from the trainer's log.")
    model: ModelRef | None = Field(default=None, description="The model written, once complete.")
    metrics: dict[str, float] | None = Field(default=None, description="Test-split metrics of the model.")
    baseline: dict[str, dict[str, float]] | None = Field(
        default=None, description="The same metrics for the baselines on the same split, each only where it means "
        "something: constant (rmse, logloss, loss, accuracy), popularity and bm25 (auc, ranking metrics)."
    )
    current_model: dict[str, float] | None = Field(
        default=None, description="The same metrics for the model serving now (--current-model)."
    )
    debiased: DebiasedMetrics | None = Field(
        default=None, description="On a serving event log: the same comparison on the test split's exploration slice "
        "(responses showing random candidates in a random order), where clicks do not favour the model that ranked them. beatCurrent is "
        "judged on it.",
    )
    optimization: OptimizationStatus | None = Field(
        default=None, description="With spec.optimize: the optimised model against the full-precision one on the "
        "test split, and which of them is served (metrics are the served one's).")
    key_metric: str | None = Field(default=None, max_length=64, description="The gate's metric (or first metric) and value.")
    gate_passed: bool | None = Field(default=None, description="The gate's verdict; unset without a gate.")
    message: str | None = Field(default=None, max_length=4096, description="Last error or state detail.")

class FineTuneJob(KubeModel):
    api_version: Literal["recops.dev/v1alpha1"] = Field(default="recops.dev/v1alpha1")
    kind: Literal["FineTuneJob"] = Field(default="FineTuneJob")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "number", "jsonPath": ".status.progress.percent", "description": "Percent done"},
    {"name": "Metric", "type": "string", "jsonPath": ".status.keyMetric"},
    {"name": "Gate", "type": "boolean", "jsonPath": ".status.gatePassed", "description": "Whether the gate passed"},
    {"name": "Model", "type": "string", "jsonPath": ".status.model.version", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
