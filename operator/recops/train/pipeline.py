"""One `recops train` run: check inputs, prepare data, fine-tune, evaluate, gate, write the model."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import recops
from recops import uris
from recops.api.common import format_time
from recops.api.contracts import MODEL_MANIFEST, Debiased, Margin, ModelManifest, TerminationMessage
from recops.api.gate import decide_gate
from recops.fusion import FUSION_FILE
from recops.train import output
from recops.train.job import (
    TASK_ARCHITECTURE,
    Distributed,
    Job,
    planned_metrics,
    require_cuda_devices,
    spec_digest,
)
from recops.train.progress import ProgressReporter

log = logging.getLogger("recops.train")

TRAINING_LOG = "training_log.json"


def _require_cuda_devices(gpus_per_worker: int) -> None:
    import torch

    require_cuda_devices(gpus_per_worker, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                         torch.version.cuda)


def _versions(lora: bool) -> dict[str, str]:
    import torch
    import transformers

    versions = {"recops": recops.__version__, "python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    if lora:
        import peft

        versions["peft"] = peft.__version__
    return versions


def _remove_stale_stages(model_uri: str) -> None:
    local = uris.local_path(model_uri)
    if local is None:
        return
    final = Path(local)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        log.info("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def run(job: Job) -> TerminationMessage | None:
    """Train and write the model. Returns the termination message on the main process, None elsewhere."""
    dist = Distributed.from_environment()
    spec = job.spec
    scratch = Path(tempfile.mkdtemp(prefix="recops-train-"))
    stage: Path | None = None
    reporter: ProgressReporter | None = None
    try:
        _require_cuda_devices(spec.resources.gpus_per_worker)
        output.ensure_not_complete(job.model_uri)
        current_dir = None
        if job.current_model:
            current_dir = output.fetch_model(job.current_model, scratch, "current model")
            if not (current_dir / MODEL_MANIFEST).exists():
                raise output.OutputError(f"current model {job.current_model} is not complete (no {MODEL_MANIFEST})")
        base_dir = output.fetch_model(spec.base_model.uri, scratch, "base model")
        names, skipped = planned_metrics(spec)

        from recops.train.data import prepare

        digest = spec_digest(spec)
        data = prepare(spec.dataset, spec.task)  # the split and fingerprint never depend on the salt
        sizes = {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)}
        if dist.is_main:
            log.info("data: %s rows read, %s kept; split %s; fingerprint %s", data.report.rows_read,
                     data.report.rows_kept, sizes, data.fingerprint)

        run_key = {"specDigest": digest, "dataFingerprint": data.fingerprint, "worldSize": dist.world_size}
        checkpoints_local = uris.local_path(job.checkpoints_uri)
        checkpoints = Path(checkpoints_local) if checkpoints_local else scratch / "checkpoints"
        remote = None if checkpoints_local else output.RemoteCheckpoints(job.checkpoints_uri)
        if remote is not None:
            remote.restore(checkpoints, run_key)  # every rank: each process resumes from its own copy
        if dist.is_main:
            _remove_stale_stages(job.model_uri)
            stage = output.staging_dir(job.model_uri, scratch)
            stage.mkdir(parents=True)
            reporter = ProgressReporter.from_environment()
        from recops.train.trainer import train  # torch and transformers: only once the inputs are known good

        upload = (lambda path: remote.upload(path, run_key)) if remote is not None else None
        result = train(spec, data, base_dir, checkpoints, stage, run_key, reporter, on_checkpoint=upload)
        if not dist.is_main or stage is None:
            return None

        architecture, transform = TASK_ARCHITECTURE[spec.task]
        manifest = ModelManifest(
            task=spec.task, model_version=job.model_version, architecture=architecture, score_transform=transform,
            max_grade=float(data.max_grade) if spec.task == "relevance" else 1.0, max_length=spec.training.max_length,
            base_model=spec.base_model.uri, data_fingerprint=data.fingerprint,
            versions=_versions(spec.training.lora is not None),
        )
        manifest = fuse(manifest, stage, data)
        if spec.task == "embedding":
            from recops.train.sentence_transformers_format import write_sentence_transformers_config

            write_sentence_transformers_config(stage, spec.training.max_length, manifest.versions)
        if spec.optimize is not None:
            from recops.train.optimize import optimize

            manifest = manifest.model_copy(update={"optimization": optimize(spec.optimize, stage, manifest, data,
                                                                             names)})
        # The served model is evaluated and gated: the optimised one when the manifest names it.
        plain, debiased = evaluate_all(job, manifest, stage, current_dir, data, names, skipped)
        decision = decide_gate(spec.evaluation.gate, plain.metrics, plain.baseline, plain.current, debiased)
        if decision.passed is False and manifest.optimization is not None and manifest.optimization.served:
            manifest, plain, debiased, decision = _full_precision_if_it_passes(
                job, manifest, stage, current_dir, data, names, skipped, (plain, debiased, decision))
        metrics, baseline, current = plain.metrics, plain.baseline, plain.current
        for reason in decision.reasons:
            log.info("gate: %s", reason)
        if decision.passed is not None:
            log.info("gate %s", "passed" if decision.passed else "failed")
        manifest = manifest.model_copy(update={
            "metrics": metrics, "baseline": baseline, "current_model": current, "ties": plain.ties,
            "debiased": debiased, "margins": plain.margins,
            "gate": spec.evaluation.gate.to_api() if spec.evaluation.gate else None, "gate_passed": decision.passed,
            "created_at": format_time(datetime.now(UTC)),
        })
        write_card(job, manifest, stage, data, sizes, result, plain.skipped, decision.reasons, dist.world_size,
                   base_dir)
        (stage / MODEL_MANIFEST).write_text(manifest.to_json())  # last: it marks the model complete
        output.publish(stage, job.model_uri)
        stage = None
        log.info("model written to %s", job.model_uri)
        output.remove_tree(job.checkpoints_uri)  # the model is complete: its checkpoints are not needed
        return TerminationMessage(
            modelUri=job.model_uri, modelVersion=job.model_version, metrics=metrics, baseline=baseline,
            currentModel=current, gatePassed=decision.passed, debiased=debiased, optimization=manifest.optimization,
        )
    finally:
        if reporter is not None:
            reporter.close()
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)  # nothing half-written stays behind
        shutil.rmtree(scratch, ignore_errors=True)


def _full_precision_if_it_passes(job: Job, manifest: ModelManifest, stage: Path, current_dir: Path | None, data: Any,
                                 names: list[str], skipped: dict[str, str], optimized: tuple[Any, Any, Any],
                                 ) -> tuple[ModelManifest, Any, Any, Any]:
    """The optimised model failed the gate: if the full-precision one passes it, that one is served instead."""
    optimization = manifest.optimization
    assert optimization is not None and optimization.file is not None
    full = manifest.model_copy(update={"optimization": optimization.model_copy(update={"file": None})})
    plain, debiased = evaluate_all(job, full, stage, current_dir, data, names, skipped)
    decision = decide_gate(job.spec.evaluation.gate, plain.metrics, plain.baseline, plain.current, debiased)
    if not decision.passed:
        return (manifest, *optimized)
    log.info("optimize: the optimised model fails the gate where the full-precision one passes: serving that one")
    shutil.rmtree((stage / optimization.file).parent, ignore_errors=True)
    reason = ("optimised form rejected: it fails the gate where the full-precision model passes "
              f"({optimization.reason.removeprefix('served: ')})")
    return (manifest.model_copy(update={"optimization": optimization.model_copy(update={"file": None, "reason": reason})}),
            plain, debiased, decision)


def fuse(manifest: ModelManifest, stage: Path, data: Any) -> ModelManifest:
    """Fit the fusion with BM25 and popularity on the validation split (recops.fusion) and name it in the manifest."""
    from recops.train.evaluate import fit_validation_fusion

    fusion = fit_validation_fusion(stage, manifest, data)
    if fusion is None:
        return manifest
    fusion.save(stage)
    log.info("fusion fitted on %d validation rows: %s (bias %.3f)", fusion.fitted_on["rows"], fusion.describe(),
             fusion.bias)
    return manifest.model_copy(update={"fusion": FUSION_FILE})


@dataclass
class Comparison:
    """The model, the baselines and the current model on one test split (or its exploration slice)."""

    metrics: dict[str, float]
    baseline: dict[str, dict[str, float]]
    current: dict[str, float] | None
    skipped: dict[str, str]  # metric -> why the model has no value
    ties: dict[str, float]  # scorer -> the share of rows whose score ties another of their group
    scores: dict[str, Any] = field(default_factory=dict)  # scorer ("model", a baseline, "current model") -> its scores
    margins: list[Margin] = field(default_factory=list)  # on the rows the gate judges (evaluate_all)


def compare(model: Any, current: Any, data: Any, frame: Any, names: list[str], task: str, batch: int) -> Comparison:
    """Every scorer on `frame`, each only with the metrics that mean something for it."""
    from recops.train.baselines import baseline_metrics, baseline_scores
    from recops.train.evaluate import evaluate, score
    from recops.train.metrics import tie_share

    scores = {"model": score(model, frame)} if len(frame) else {}
    evaluation = evaluate(model, frame, names, batch, scores=scores.get("model"))
    scores_by_baseline = baseline_scores(data, frame) if len(frame) else {}
    baseline = baseline_metrics(names, data, task, scores_by_baseline, frame) if len(frame) else {}
    scores.update({name: values for name, values in scores_by_baseline.items() if name in baseline})
    ties = {"model": evaluation.ties} if evaluation.ties is not None else {}
    ties.update({name: tie_share(frame, values) for name, values in scores_by_baseline.items() if name in baseline})
    current_metrics = None
    if current is not None:
        if len(frame):
            scores["current model"] = score(current, frame)
        current_evaluation = evaluate(current, frame, names, batch, scores=scores.get("current model"))
        current_metrics = current_evaluation.metrics
        for name, why in current_evaluation.skipped.items():
            log.info("current model: %s not computed: %s", name, why)
        if current_evaluation.ties is not None:
            ties["current model"] = current_evaluation.ties
    return Comparison(evaluation.metrics, baseline, current_metrics, evaluation.skipped, ties, scores)


def margins(comparison: Comparison, frame: Any, metric: str | None, max_grade: float, judged_on: str) -> list[Margin]:
    """`metric` of the model against each other scorer of `comparison` on `frame`, with a paired bootstrap interval
    (recops.train.metrics.paired_interval), each reference only where it has the metric; each is logged."""
    from recops.api.gate import higher_is_better
    from recops.train.metrics import paired_interval

    model = comparison.scores.get("model")
    figures = {**comparison.baseline, **({"current model": comparison.current} if comparison.current else {})}
    result = []
    for reference, values in comparison.scores.items():
        if metric is None or model is None or reference == "model" or metric not in figures.get(reference, {}):
            continue
        interval = paired_interval(metric, frame, model, values, max_grade=max_grade)
        if interval is None:
            continue
        sign = 1.0 if higher_is_better(metric) else -1.0
        low, high = sorted((sign * interval.low, sign * interval.high))
        found = Margin(metric=metric, reference=reference, margin=sign * interval.difference, low=low, high=high,
                       groups=interval.groups, judged_on=judged_on)
        log.info("margin: %s %+.4f over %s (95%% interval %+.4f to %+.4f; %d groups of %s): %s", metric, found.margin,
                 reference, low, high, found.groups, judged_on, found.reading)
        result.append(found)
    return result


def margin_metric(job: Job, names: list[str]) -> str | None:
    """The metric the margins are given for: the gate's, else the first asked for that splits into groups."""
    from recops.train.metrics import has_interval

    gate = job.spec.evaluation.gate
    if gate is not None:
        return gate.metric
    return next((name for name in names if has_interval(name)), None)


def evaluate_all(
    job: Job, manifest: ModelManifest, stage: Path, current_dir: Path | None, data: Any, names: list[str],
    skipped: dict[str, str],
) -> tuple[Comparison, Debiased | None]:
    """Every scorer on the test split and, for a serving event log, on its exploration slice."""
    from recops.train.evaluate import load_model

    batch, task = job.spec.training.batch_size, job.spec.task
    model = load_model(stage, manifest)
    current = load_model(current_dir) if current_dir is not None else None
    log.info("evaluating on the test split (%d rows): %s", len(data.test), ", ".join(names))
    plain = compare(model, current, data, data.test, names, task, batch)
    plain.skipped = {**skipped, **plain.skipped}
    for name, why in plain.skipped.items():
        log.info("metric %s not computed: %s", name, why)
    _log_figures("", plain)
    metric = margin_metric(job, names)
    explored = data.test[data.test["explored"]].reset_index(drop=True) if data.logged else None
    if explored is None or explored.empty:
        if explored is not None:
            log.info("debiased: the test split has no exploration slice (random candidates shown in a random order)")
        plain.margins = margins(plain, data.test, metric, data.max_grade, "the test split")
        return plain, None if explored is None else Debiased()
    log.info("debiased: evaluating on the test split's exploration slice (%d rows)", len(explored))
    slice_ = compare(model, current, data, explored, names, task, batch)
    _log_figures("debiased ", slice_)
    plain.margins = margins(slice_, explored, metric, data.max_grade, "the exploration slice")
    return plain, Debiased(rows=len(explored), groups=int(explored["group"].nunique()), metrics=slice_.metrics,
                           baseline=slice_.baseline, currentModel=slice_.current)


def _log_figures(prefix: str, comparison: Comparison) -> None:
    scorers = [("model", comparison.metrics), *comparison.baseline.items(),
               *([("current", comparison.current)] if comparison.current else [])]
    for label, values in scorers:
        log.info("%s%s: %s", prefix, label, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))


def _describe_fusion(stage: Path) -> str:
    from recops.fusion import FEATURES, Fusion

    fusion = Fusion.load(stage)
    # Each input named only if it weighs something: a click-through fusion leaves the user's offset out.
    weight = dict(zip(FEATURES, fusion.weights, strict=True))
    inputs = ["BM25", "popularity"] + [name for feature, name in (
        ("user", "the user's offset"), ("neighbours", "the user's grades of similar items")) if weight[feature]]
    if weight["user"] or weight["neighbours"]:
        inputs[-1] += " (from the request's `user.ratings`)"
    if fusion.lexical is not None:
        inputs.append("a lexical model learnt from the train split")
    return (f"The served score fuses the fine-tuned model's output with {', '.join(inputs[:-1])} and {inputs[-1]} "
            f"({fusion.kind}, fitted on {fusion.fitted_on.get('rows')} validation rows; "
            f"weights of the standardised features: {fusion.describe()}). "
            "The figures above are those of the fused model, as served.")


def write_card(job: Job, manifest: ModelManifest, stage: Path, data: Any, sizes: dict[str, int], result: Any,
               skipped: dict[str, str], reasons: list[str], world_size: int, base_dir: Path | None = None) -> None:
    from recops.train.modelcard import CURVES_FILE, CardInputs, base_model_license, plot_curves, render

    (stage / TRAINING_LOG).write_text(json.dumps(result.log_history, indent=1))
    try:
        has_curves = plot_curves(result.log_history, stage / CURVES_FILE)
    except Exception as err:  # a missing plot never costs the model
        log.warning("could not plot the loss curves: %s", err)
        has_curves = False
    training = job.spec.training
    inputs = CardInputs(
        task=manifest.task, model_version=manifest.model_version, model_uri=job.model_uri,
        base_model=manifest.base_model or "", architecture=manifest.architecture,
        score_transform=manifest.score_transform, max_length=manifest.max_length, max_grade=manifest.max_grade,
        dataset_uri=job.spec.dataset.uri, split_sizes=sizes, data_fingerprint=data.fingerprint,
        cleaning_markdown=data.report.to_markdown(),
        training={"epochs": training.epochs, "learning rate": training.learning_rate,
                  "batch size": training.batch_size, "gradient accumulation": training.gradient_accumulation_steps,
                  "max length": training.max_length, "seed": training.seed,
                  "LoRA": f"r={training.lora.r} alpha={training.lora.alpha}" if training.lora else None},
        precision=result.precision, world_size=world_size, train_seconds=result.seconds,
        total_steps=result.total_steps, resumed_from=result.resumed_from, metrics=manifest.metrics,
        baseline=manifest.baseline, current_model=manifest.current_model, current_model_uri=job.current_model,
        skipped=skipped, ties=manifest.ties, debiased=manifest.debiased, fusion=_describe_fusion(stage) if manifest.fusion else None,
        optimization=manifest.optimization,
        gate=manifest.gate, gate_passed=manifest.gate_passed, gate_reasons=reasons,
        versions=manifest.versions, created_at=manifest.created_at or "", has_curves=has_curves,
        margins=manifest.margins,
        license=base_model_license(base_dir) if base_dir is not None else None,
    )
    (stage / "README.md").write_text(render(inputs))
