"""The contracts between the parts: names and shapes that the
operator, the trainer and the server must agree on. Change one only together with every
part that uses it."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recops.api.common import GROUP

# --- labels and annotations ---------------------------------------------------------------
LINEAGE_LABEL = f"{GROUP}/lineage"
MANAGED_BY = "recops"
FIELD_MANAGER = "recops"
PROMOTE_ANNOTATION = f"{GROUP}/promote"
ABORT_ANNOTATION = f"{GROUP}/abort"
RETRY_MODEL_ANNOTATION = f"{GROUP}/retry-model"
# kwok test hooks (set through podTemplate by tests, never by builders).
TEST_FAIL_LABEL = f"{GROUP}/test-fail"
TEST_EXIT_CODE_ANNOTATION = f"{GROUP}/test-exit-code"
TEST_TERMINATION_MESSAGE_ANNOTATION = f"{GROUP}/test-termination-message"


def owner_label(kind: str) -> str:
    """recops.dev/<kind>: the label naming the owning resource, e.g. recops.dev/finetunejob."""
    return f"{GROUP}/{kind.lower()}"


# --- environment variables ----------------------------------------------------------------
ENV_FTJ_NAMESPACE = "RECOPS_FTJ_NAMESPACE"
ENV_FTJ_NAME = "RECOPS_FTJ_NAME"
ENV_SERVE_HOST = "RECOPS_SERVE_HOST"
ENV_PSEUDONYM_SALT = "RECOPS_PSEUDONYM_SALT"
ENV_FEEDBACK_KEY = "RECOPS_FEEDBACK_KEY"
ENV_PVC_ROOT = "RECOPS_PVC_ROOT"  # where pvc:// claims are mounted; /mnt/pvc in pods
# Identity of every serving series (set by the builders, never from service discovery).
ENV_NAMESPACE = "RECOPS_NAMESPACE"
ENV_DEPLOYMENT = "RECOPS_DEPLOYMENT"
ENV_TRACK = "RECOPS_TRACK"
ENV_MODEL_VERSION = "RECOPS_MODEL_VERSION"
ENV_POD_NAME = "RECOPS_POD_NAME"

# --- trainer ------------------------------------------------------------------------------
JOB_CONFIG_PATH = "/etc/recops/job.yaml"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
MODEL_MANIFEST = "recops.json"  # written last: its presence marks a model complete


# The job reaches the trainer in its pod: the annotation below (JSON, which is YAML) as the file
# JOB_CONFIG_PATH through a downward-API volume; no ConfigMap per job.
JOB_CONFIG_ANNOTATION = f"{GROUP}/job-config"
# Progress: the trainer prints `recops-progress {"step": .., "totalSteps": .., "epoch": .., "percent": ..,
# "updatedAt": ..}` as a line of its own on stderr (at most every few seconds, and once at the end);
# the operator reads the newest from the tail of the rank-0 pod's log into status.progress. The
# trainer needs no API credentials for it, so it holds none.
PROGRESS_MARKER = "recops-progress "
PROGRESS_FIELDS = {"step": int, "totalSteps": int, "epoch": float, "percent": float, "updatedAt": str}
_PROGRESS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def progress_record(step: int, total_steps: int, epoch: float, percent: float, updated_at: str) -> str:
    """The trainer's progress line (without the newline)."""
    return PROGRESS_MARKER + json.dumps({"step": step, "totalSteps": total_steps, "epoch": round(epoch, 3),
                                         "percent": percent, "updatedAt": updated_at}, separators=(",", ":"))


def last_progress(log_text: str) -> dict[str, Any] | None:
    """The newest well-formed progress line of a log (status.progress), or None."""
    for line in reversed(log_text.splitlines()):
        if not line.startswith(PROGRESS_MARKER):
            continue
        try:
            record = json.loads(line[len(PROGRESS_MARKER):])
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        progress: dict[str, Any] = {}
        for key, type_ in PROGRESS_FIELDS.items():
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (type_, int) if type_ is float else type_):
                break
            progress[key] = type_(value)
        else:
            if progress["step"] >= 0 and progress["totalSteps"] >= 0 and 0 <= progress["percent"] <= 100 \
                    and progress["epoch"] >= 0 and _PROGRESS_TIME.match(progress["updatedAt"]):
                return progress
    return None


def model_version(name: str, uid: str) -> str:
    """<ftj-name>-<first 8 of uid>."""
    return f"{name}-{uid[:8]}"


class _Contract(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Debiased(_Contract):
    """The test split's exploration slice of a serving event log: impressions whose order was drawn at random
    (eventLog.exploration), so their clicks do not favour the model that logged them. Present whenever the data is
    a serving event log; rows 0 means the log has no such slice."""

    rows: int = 0
    groups: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, dict[str, float]] = Field(default_factory=dict)
    current_model: dict[str, float] | None = Field(default=None, alias="currentModel")


class Margin(_Contract):
    """How much better the model is than one reference on one metric (positive: better; where lower is better, the
    reference's value minus the model's), with a 95% paired bootstrap interval over the groups of the rows the gate
    judges (recops.train.metrics.paired_interval): an interval that holds 0 is no evidence either way."""

    metric: str
    reference: str  # a baseline's name, or "current model"
    margin: float
    low: float
    high: float
    groups: int
    judged_on: str = Field(alias="judgedOn")  # "the exploration slice" or "the test split"

    @property
    def reading(self) -> str:
        return "better" if self.low > 0 else "worse" if self.high < 0 else "no evidence either way"


class Optimization(_Contract):
    """spec.optimize's outcome: the optimised (ONNX) model against the full-precision one on the test split. The
    manifest's and the report's `metrics` are those of the model served: this one's when `file` is set."""

    format: str = "onnx"
    quantization: str = "int8"
    file: str | None = None  # the ONNX file served, relative to the model directory; None: full precision is
    reason: str = ""
    spearman: float | None = None
    top10_overlap: float | None = Field(default=None, alias="top10Overlap")
    latency_ms_per100: dict[str, float] = Field(default_factory=dict, alias="latencyMsPer100")
    metrics: dict[str, float] = Field(default_factory=dict)  # the optimised model's
    full_precision_metrics: dict[str, float] = Field(default_factory=dict, alias="fullPrecisionMetrics")

    @property
    def served(self) -> bool:
        return self.file is not None


class TerminationMessage(_Contract):
    """What the trainer writes to its termination-message path (JSON, under 4 KB)."""

    schema_version: int = Field(default=1, alias="schemaVersion")
    model_uri: str | None = Field(default=None, alias="modelUri")
    model_version: str | None = Field(default=None, alias="modelVersion")
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, dict[str, float]] = Field(default_factory=dict)
    current_model: dict[str, float] | None = Field(default=None, alias="currentModel")
    gate_passed: bool | None = Field(default=None, alias="gatePassed")
    debiased: Debiased | None = None
    optimization: Optimization | None = None
    error: str | None = None

    def to_json(self) -> str:
        # Keep the verdict; drop the bulky parts first (the model card has everything).
        debiased = self.debiased.model_copy(update={"baseline": {}}) if self.debiased else None
        optimization = self.optimization.model_copy(update={"metrics": {}}) if self.optimization else None
        slimmers: list[dict[str, Any]] = [{}, {"baseline": {}, "debiased": debiased, "optimization": optimization},
                                          {"baseline": {}, "current_model": None, "debiased": None,
                                           "optimization": optimization}]
        for slimmer in slimmers:
            text = self.model_copy(update=slimmer).model_dump_json(by_alias=True)
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
                break
        return text


# --- serving ------------------------------------------------------------------------------
METRIC_PREFIX = "recops_"
IDENTITY_LABELS = ("recops_namespace", "recops_deployment", "track", "model_version")
Track = Literal["stable", "canary"]
FEEDBACK_EVENTS = ("click", "add_to_cart", "purchase")
PRODUCT_TEXT_SEPARATOR = " | "


def context_text(query: str | None, user_context: str | None) -> str:
    """The first segment a cross-encoder sees: the query, else the user context."""
    if query:
        return query
    if user_context:
        return f"user: {user_context}"
    return ""


# The user offset of a model's fusion (recops.fusion) reads the user's last this many events: each prepared row's
# earlier events in the trainer, a request's `user.ratings` in the server.
MAX_USER_RATINGS = 100


def with_history(user_context: str | None, liked_texts: list[str]) -> str:
    """A user context with the product texts of the user's last liked items (dataset.userHistory):
    "<context>; liked: <text>; <text>"."""
    if not liked_texts:
        return user_context or ""
    history = "liked: " + "; ".join(liked_texts)
    return f"{user_context}; {history}" if user_context else history


ScoreTransform = Literal["sigmoid", "grade", "cosine"]


class ModelManifest(_Contract):
    """recops.json: what a served model is and how to turn its outputs into scores."""

    schema_version: int = Field(default=1, alias="schemaVersion")
    task: Literal["click-through", "relevance", "embedding", "domain-pretrain"]
    model_version: str = Field(alias="modelVersion")
    architecture: Literal["cross-encoder", "bi-encoder", "masked-lm"]
    score_transform: ScoreTransform = Field(alias="scoreTransform")
    max_grade: float = Field(default=1.0, alias="maxGrade")  # for "grade": score = clamp(raw / maxGrade)
    max_length: int = Field(default=128, alias="maxLength")
    base_model: str | None = Field(default=None, alias="baseModel")
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, dict[str, float]] = Field(default_factory=dict)
    current_model: dict[str, float] | None = Field(default=None, alias="currentModel")
    gate: dict[str, Any] | None = None
    gate_passed: bool | None = Field(default=None, alias="gatePassed")
    data_fingerprint: str | None = Field(default=None, alias="dataFingerprint")
    # A file beside the weights with the learnt fusion of the raw output with BM25 and popularity
    # (recops.fusion), applied before scoreTransform by the evaluation and the server alike.
    fusion: str | None = None
    # Per scorer (model, baselines): the share of test rows whose score ties another row of their group.
    ties: dict[str, float] = Field(default_factory=dict)
    debiased: Debiased | None = None
    # The gate's metric (else the first that splits into groups) against each reference, on the rows the gate judges.
    margins: list[Margin] = Field(default_factory=list)
    optimization: Optimization | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = Field(default=None, alias="createdAt")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def unit_score(raw: float, transform: ScoreTransform, max_grade: float = 1.0) -> float:
    """Map a model output to [0, 1], as recops_score and the API report it."""
    import math

    if transform == "sigmoid":
        return 1.0 / (1.0 + math.exp(-max(min(raw, 60.0), -60.0)))
    if transform == "grade":
        return min(max(raw / max_grade, 0.0), 1.0) if max_grade > 0 else 0.0
    return min(max((raw + 1.0) / 2.0, 0.0), 1.0)


# --- pseudonymisation and the event log ---------------------------------------------------
def pseudonymise(user_id: str, salt: str) -> str:
    """Salted, keyed hash of a user id: stable for one salt, unlinkable without it."""
    import hashlib
    import hmac

    return "u_" + hmac.new(salt.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:20]


# One jsonl record per impression (one item of a ranked response) or feedback event, under
# <event-log-uri>/dt=YYYY-MM-DD/hour=HH/<pod>.jsonl. Feedback records carry no text: the
# trainer joins them to their impression on (request_id, product_id) and keeps the
# highest-graded event, so the rows then have the default FineTuneJob field mapping.
EVENT_LOG_FIELDS = {
    "ts": "ISO-8601 UTC time of the event",
    "event": "impression, click, add_to_cart or purchase",
    "request_id": "the ranked response's id (feedback tokens map to it)",
    "product_id": "the item",
    "query": "the query (impressions; null when none)",
    "user_id": "pseudonymised user id (null when none)",
    "user_context": "user context text (impressions; null when none)",
    "title": "the item's text as ranked (impressions only)",
    "position": "0-based rank in the response (impressions only)",
    "score": "the score in [0, 1] (impressions only)",
    "explored": "whether the response's items and order were drawn at random (the exploration slice; impressions only)",
    "propensity": "the probability that the serving policy showed this item at this position (impressions only)",
    "track": "stable or canary",
    "model_version": "the model that ranked",
    "deployment": "the RecModelDeployment",
    "namespace": "its namespace",
}


def event_log_path(prefix: str, when_iso_hour: tuple[str, str], pod: str) -> str:
    """<prefix>/dt=YYYY-MM-DD/hour=HH/<pod>.jsonl"""
    day, hour = when_iso_hour
    return f"{prefix.rstrip('/')}/dt={day}/hour={hour}/{pod}.jsonl"
