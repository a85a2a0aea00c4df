"""What one `recops train` run is: the validated spec, where the model goes, and which metrics apply.

Pure logic (no torch), so the command can refuse bad input before anything heavy is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recops import uris
from recops.api.contracts import ENV_FTJ_NAME, ENV_FTJ_NAMESPACE, TERMINATION_MESSAGE_PATH, model_version
from recops.api.finetunejob import FineTuneJob, FineTuneJobSpec
from recops.api.validation import InvalidResource, validate_manifest, validate_spec


class JobError(Exception):
    """Bad input to `recops train` (besides data errors): the message is the one-line cause."""


DEFAULT_NAMESPACE = "default"
# A model version becomes one path segment (and one object-store key segment).
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")

# Which metrics a task's scores can support. Ranking metrics and auc need only an order;
# logloss and accuracy need probabilities (click-through); rmse needs predicted labels or grades.
RANKING_PREFIXES = ("ndcg@", "recall@")
TASK_ONLY_METRICS = {
    "logloss": ("click-through",),
    "accuracy": ("click-through",),
    "rmse": ("click-through", "relevance"),
}


# task -> (architecture, scoreTransform) of ModelManifest
TASK_ARCHITECTURE = {
    "click-through": ("cross-encoder", "sigmoid"),
    "relevance": ("cross-encoder", "grade"),
    "embedding": ("bi-encoder", "cosine"),
    "domain-pretrain": ("masked-lm", "cosine"),
}
def require_cuda_devices(gpus_per_worker: int, cuda_devices: int, torch_cuda: str | None) -> None:
    """A trainer given GPUs that sees fewer CUDA devices fails at once: it would hold the GPUs and train in fp32 on
    the CPU. `torch_cuda`: the CUDA version torch was built for (None: a CPU-only torch)."""
    if gpus_per_worker <= 0 or cuda_devices >= gpus_per_worker:
        return
    build = f"torch built for CUDA {torch_cuda}" if torch_cuda else "a CPU-only torch"
    raise JobError(
        f"spec.resources.gpusPerWorker is {gpus_per_worker} but this trainer sees {cuda_devices} CUDA device(s) "
        f"({build}); it will not train on the CPU while holding GPUs: run the CUDA trainer image "
        "(images/trainer-cuda.Dockerfile) on a node with the NVIDIA driver and device plugin, or set gpusPerWorker: 0")


@dataclass
class Distributed:
    rank: int
    local_rank: int
    world_size: int

    @classmethod
    def from_environment(cls) -> Distributed:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Job:
    spec: FineTuneJobSpec
    name: str | None  # the FineTuneJob's name, when the config is a manifest
    namespace: str
    model_version: str
    output_prefix: str
    model_uri: str  # <prefix>/<namespace>/<model-version>
    current_model: str | None
    termination_path: str
    termination_path_given: bool

    @property
    def checkpoints_uri(self) -> str:
        """Sibling of the model: a restarted pod resumes from here; never a complete model."""
        return self.model_uri.rstrip("/") + ".checkpoints"


def read_config(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise JobError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise JobError(f"config {path} is not YAML or JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise JobError(f"config {path} is not a FineTuneJob manifest or spec (a mapping)")
    return document


def parse_config(document: dict[str, Any]) -> tuple[FineTuneJobSpec, dict[str, Any]]:
    """(spec, metadata) from a FineTuneJob manifest or its bare spec."""
    try:
        if "apiVersion" in document or "kind" in document:
            if document.get("kind") != "FineTuneJob":
                raise JobError(f"config is a {document.get('kind') or 'manifest without kind'}, not a FineTuneJob")
            manifest = validate_manifest(document)
            if not isinstance(manifest, FineTuneJob):
                raise JobError(f"config is a {document.get('kind')}, not a FineTuneJob")
            return manifest.spec, dict(manifest.metadata)
        if "spec" in document and "task" not in document:
            spec = validate_spec(FineTuneJobSpec, document["spec"] or {})
            return spec, dict(document.get("metadata") or {})
        return validate_spec(FineTuneJobSpec, document), {}
    except InvalidResource as err:
        raise JobError(f"invalid FineTuneJob spec: {err}") from None


def spec_digest(spec: FineTuneJobSpec) -> str:
    return hashlib.sha256(json.dumps(spec.to_api(), sort_keys=True).encode()).hexdigest()


def resolve_job(
    config_path: str,
    *,
    output: str | None = None,
    version: str | None = None,
    current_model: str | None = None,
    termination_path: str | None = None,
    environ: dict[str, str] | None = None,
) -> Job:
    env = dict(os.environ) if environ is None else environ
    spec, metadata = parse_config(read_config(config_path))
    name = metadata.get("name") or env.get(ENV_FTJ_NAME) or None
    namespace = metadata.get("namespace") or env.get(ENV_FTJ_NAMESPACE) or DEFAULT_NAMESPACE
    if version is None:
        uid = metadata.get("uid")
        if name and uid:
            version = model_version(str(name), str(uid))
        else:
            # No uid (a file written by hand): derive a stable version from the spec, so a rerun of
            # the same job resumes its checkpoints and a changed job never lands on the old model.
            version = f"{name or 'recops-' + spec.task}-{spec_digest(spec)[:8]}"
    if not _VERSION_PATTERN.match(version) or version in (".", ".."):
        raise JobError(f"model version {version!r} is not a valid path segment (letters, digits, '.', '_', '-')")
    prefix = output or spec.output.uri
    try:
        uris.parse(prefix)
        if current_model:
            uris.parse(current_model)
    except uris.UriError as err:
        raise JobError(str(err)) from None
    check_gate_applies(spec)
    return Job(
        spec=spec,
        name=str(name) if name else None,
        namespace=str(namespace),
        model_version=version,
        output_prefix=prefix,
        model_uri=uris.join(prefix, str(namespace), version),
        current_model=current_model or None,
        termination_path=termination_path or TERMINATION_MESSAGE_PATH,
        termination_path_given=termination_path is not None,
    )


# --- metrics ------------------------------------------------------------------------------
def metric_applies(metric: str, task: str) -> str | None:
    """None when `metric` makes sense for `task`'s scores, else why not."""
    tasks = TASK_ONLY_METRICS.get(metric)
    if tasks is not None and task not in tasks:
        needs = "probabilities" if metric in ("logloss", "accuracy") else "predicted labels or grades"
        return f"{metric} needs {needs}, which only {' and '.join(tasks)} models give"
    return None


def planned_metrics(spec: FineTuneJobSpec) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, skipped metric -> why), the gate's metric included."""
    wanted = list(dict.fromkeys([*spec.evaluation.metrics, *([spec.evaluation.gate.metric] if spec.evaluation.gate else [])]))
    computed, skipped = [], {}
    for metric in wanted:
        reason = metric_applies(metric, spec.task)
        if reason is None:
            computed.append(metric)
        else:
            skipped[metric] = reason
    return computed, skipped


def check_gate_applies(spec: FineTuneJobSpec) -> None:
    gate = spec.evaluation.gate
    if gate is None:
        return
    reason = metric_applies(gate.metric, spec.task)
    if reason is not None:
        raise JobError(f"evaluation.gate.metric {gate.metric} cannot judge a {spec.task} model: {reason}")
