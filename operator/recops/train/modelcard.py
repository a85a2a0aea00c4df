"""The model card (README.md) and the loss curves (PNG) written beside the weights.

The card's front matter is Hugging Face model-card metadata built with huggingface_hub's
ModelCardData (base_model, pipeline_tag, license, library_name, tags, and model-index with the
evaluated metrics), so the Hub, its search and tools that read cards understand it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recops.api.contracts import Debiased, Margin, Optimization

log = logging.getLogger("recops.train")

CURVES_FILE = "training_curves.png"

# Hugging Face pipeline tag of each task's model: cross-encoders rank (query, product) pairs; the embedding
# model is a sentence-transformers bi-encoder; domain-pretrain leaves a masked language model.
PIPELINE_TAGS = {"click-through": "text-ranking", "relevance": "text-ranking", "embedding": "sentence-similarity",
                 "domain-pretrain": "fill-mask"}
# Base models recops ships, by their Hub id (a base_model must be a Hub id; other URIs are named in the text).
HUB_IDS = {"builtin://all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}

INTENDED_USE = {
    "click-through": "Re-ranking a shortlist of products for a search query (or a user context): the score is the "
    "estimated probability of a positive event (click or better) on the product when shown.",
    "relevance": "Re-ranking a shortlist of products for a search query by graded relevance: the raw output is a "
    "predicted grade (0 .. maxGrade); the served score is grade / maxGrade.",
    "embedding": "Retrieving and ranking products by cosine similarity between the embedding of the query (or user "
    "context) and the embedding of the product text; embeddings can be precomputed for the catalogue.",
    "domain-pretrain": "A starting point for further fine-tuning, adapted to the shop's product language by masked-"
    "language modelling. Served directly it ranks by cosine similarity of mean-pooled embeddings, which is only a "
    "rough ranker.",
}

LIMITS = [
    "Trained on logged behaviour: it learns what was shown and clicked, including the biases of the ranking that "
    "produced the log (position bias, popularity feedback loops).",
    "Scores are comparable within one request, not across requests, shops or model versions.",
    "Evaluated offline on a held-out split of the same data; online effect (click-through, conversion) has to be "
    "confirmed by a canary rollout.",
    "Inputs longer than maxLength tokens are truncated.",
    "User ids are never a model input; they were pseudonymised before training and are used only for splitting "
    "and baselines.",
]


@dataclass
class CardInputs:
    task: str
    model_version: str
    model_uri: str
    base_model: str
    architecture: str
    score_transform: str
    max_length: int
    max_grade: float
    dataset_uri: str | None
    split_sizes: dict[str, int]
    data_fingerprint: str
    cleaning_markdown: str
    training: dict[str, Any]
    precision: str
    world_size: int
    train_seconds: float
    total_steps: int
    resumed_from: str | None
    metrics: dict[str, float]
    baseline: dict[str, dict[str, float]]
    current_model: dict[str, float] | None
    current_model_uri: str | None
    skipped: dict[str, str]
    ties: dict[str, float]
    debiased: Debiased | None
    fusion: str | None
    optimization: Optimization | None
    gate: dict[str, Any] | None
    gate_passed: bool | None
    gate_reasons: list[str]
    versions: dict[str, str]
    created_at: str
    has_curves: bool = False
    margins: list[Margin] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    license: str | None = None  # the base model's, from its own card


def base_model_license(base_dir: Path) -> str | None:
    """The license in the base model's own card (README.md front matter), if it has one."""
    readme = base_dir / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        license_ = ModelCard.load(readme).data.license
    except Exception as err:  # an unreadable card costs the license line, never the model
        log.warning("could not read the base model's card %s: %s", readme, err)
        return None
    return license_ if isinstance(license_, str) else None


def card_metadata(inputs: CardInputs) -> Any:
    """The card's Hugging Face metadata (a huggingface_hub ModelCardData)."""
    from huggingface_hub import EvalResult, ModelCardData

    pipeline_tag = PIPELINE_TAGS[inputs.task]
    embedding = inputs.task == "embedding"
    tags = ["recops", "ranking", inputs.task, inputs.architecture]
    if embedding:
        tags += ["sentence-transformers", "feature-extraction"]
    dataset = f"{inputs.dataset_uri or 'dataset'} (fingerprint {inputs.data_fingerprint[:12]})"
    results = [
        EvalResult(task_type=pipeline_tag, dataset_type="recops-dataset", dataset_name=dataset, dataset_split="test",
                   metric_type=name, metric_name=name, metric_value=round(value, 6))
        for name, value in inputs.metrics.items() if math.isfinite(value)
    ]
    return ModelCardData(
        base_model=HUB_IDS.get(inputs.base_model), license=inputs.license,
        library_name="sentence-transformers" if embedding else "transformers", pipeline_tag=pipeline_tag,
        tags=tags, model_name=inputs.model_version, eval_results=results or None,
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def metrics_table(metrics: dict[str, float], baseline: dict[str, dict[str, float]],
                  current: dict[str, float] | None) -> str:
    columns = ["this model", *baseline.keys()]
    if current is not None:
        columns.append("current model")
    names = list(metrics) or sorted({n for m in baseline.values() for n in m})
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        row = [_fmt(metrics.get(name))]
        row += [_fmt(values.get(name)) for values in baseline.values()]
        if current is not None:
            row.append(_fmt(current.get(name)))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def debiased_section(debiased: Debiased | None) -> list[str]:
    """The exploration slice of a serving event log (recops.serve.exploration), or nothing for other data."""
    if debiased is None:
        return []
    head = ["### Debiased: the exploration slice", ""]
    if not debiased.rows:
        return [*head, "The data is a serving event log without an exploration slice (no response showed random "
                       "candidates in a random order), so the comparison with the current model above favours it and "
                       "`beatCurrent` cannot be judged.", ""]
    return [
        *head,
        f"{debiased.rows} test impressions ({debiased.groups} groups) were random candidates shown in a random order. "
        "Their clicks depend neither on which items the logging model chose nor where it put them, so on them no model "
        "is favoured:",
        "",
        metrics_table(debiased.metrics, debiased.baseline, debiased.current_model),
        "",
        *verdict(debiased.metrics, debiased.baseline, debiased.current_model),
        "",
    ]


def margins_section(margins: list[Margin]) -> list[str]:
    """How sure each "beats" is: the margin over each reference with its bootstrap interval."""
    if not margins:
        return []
    first = margins[0]
    rows = ["| reference | margin | 95% interval | reading |", "|---|---:|---:|---|"]
    for m in margins:
        rows.append(f"| {m.reference} | {m.margin:+.4f} | {m.low:+.4f} to {m.high:+.4f} | {m.reading} |")
    return ["### How sure", "",
            f"The model's {first.metric} minus each reference's (for a metric where lower is better, the reference's "
            f"minus the model's: positive is better) on {first.judged_on}, with a 95% interval from resampling its "
            f"{first.groups} groups (paired bootstrap). An interval that holds 0 is no evidence either way, whatever "
            "the gate's verdict on the figures themselves.", "", *rows, ""]


def optimization_section(optimization: Optimization | None) -> list[str]:
    """spec.optimize: the ONNX form against the full-precision model, and which one is served."""
    if optimization is None:
        return []
    served = "the optimised model" if optimization.served else "the full-precision model"
    latency = optimization.latency_ms_per100
    rows = [("full precision (torch)", optimization.full_precision_metrics, latency.get("fullPrecision")),
            (f"{optimization.format} {optimization.quantization}", optimization.metrics, latency.get("optimized"))]
    names = list(dict.fromkeys(name for _, metrics, _ in rows for name in metrics))
    table = ["| model | " + " | ".join(names) + " | ms per 100 pairs (1 thread) |",
             "|---|" + "---:|" * (len(names) + 1)]
    for label, metrics, ms in rows:
        cells = [f"{metrics[n]:.4f}" if n in metrics else "–" for n in names] + [f"{ms:.0f}" if ms is not None else "–"]
        table.append(f"| {label} | " + " | ".join(cells) + " |")
    return ["## Optimisation", "", f"Served: **{served}** ({optimization.reason}).", "",
            *(table if optimization.full_precision_metrics else []), "",
            "The evaluation above and the gate are those of the served model.", ""]


def describe_gate(gate: dict[str, Any]) -> str:
    bounds = []
    if gate.get("minimum") is not None:
        bounds.append(f"{gate['metric']} >= {gate['minimum']:g}")
    if gate.get("maximum") is not None:
        bounds.append(f"{gate['metric']} <= {gate['maximum']:g}")
    if gate.get("beatBaselines"):
        bounds.append(f"{gate['metric']} better than {', '.join(gate['beatBaselines'])}")
    if gate.get("beatCurrent"):
        bounds.append("better than the model serving now")
    return " and ".join(bounds)


def verdict(metrics: dict[str, float], baseline: dict[str, dict[str, float]],
            current: dict[str, float] | None) -> list[str]:
    """What the model beats and, plainly, what it does not."""
    from recops.api.gate import unbeaten

    lost = unbeaten(metrics, baseline, current)
    if not lost:
        return ["The model beats every baseline shown (and the current model, where given) on every metric shown."]
    return ["**The model does not beat** (a tie does not beat):", ""] + [f"- {line}" for line in lost]


def usage(inputs: CardInputs) -> list[str]:
    """How to load an embedding model outside recops: sentence-transformers, as it was trained."""
    if inputs.task != "embedding":
        return []
    return ["### With sentence-transformers", "",
            "The model directory is a sentence-transformers model (mean pooling, normalised, cosine similarity, "
            f"{inputs.max_length} tokens), the same embeddings recops serves:", "",
            "```python", "from sentence_transformers import SentenceTransformer", "",
            "model = SentenceTransformer(\"path/to/" + inputs.model_version + "\")",
            "scores = model.similarity(model.encode([\"red running shoes\"]), model.encode(product_texts))",
            "```", ""]


def render(inputs: CardInputs) -> str:
    gate = "No gate: every complete model may be deployed." if inputs.gate is None else (
        f"**{'passed' if inputs.gate_passed else 'failed'}**: {describe_gate(inputs.gate)}")
    splits = ", ".join(f"{k}: {v}" for k, v in inputs.split_sizes.items())
    training = ", ".join(f"{k}: {v}" for k, v in inputs.training.items() if v is not None)
    parts = [
        f"# {inputs.model_version}",
        "",
        f"A **{inputs.task}** model ({inputs.architecture}, score transform `{inputs.score_transform}`) fine-tuned by "
        f"`recops train` from `{inputs.base_model}`. Location: `{inputs.model_uri}`. Written {inputs.created_at}.",
        "",
        "## Intended use",
        "",
        INTENDED_USE[inputs.task],
        "",
        f"Inputs: the query (or `user: <context>` when there is no query) and the product text, each truncated to "
        f"{inputs.max_length} tokens." + (f" maxGrade: {inputs.max_grade:g}." if inputs.score_transform == "grade" else ""),
        "",
        *usage(inputs),
        "## Data",
        "",
        f"- Source: `{inputs.dataset_uri}`",
        f"- Rows per split: {splits}",
        f"- Data fingerprint: `{inputs.data_fingerprint}`",
        "",
        "### Cleaning",
        "",
        inputs.cleaning_markdown.strip() or "(no report)",
        "",
        "## Training",
        "",
        f"- {training}",
        f"- Precision: {inputs.precision}; processes: {inputs.world_size}; optimiser steps: {inputs.total_steps}; "
        f"time: {inputs.train_seconds:.0f}s" + (f"; resumed from `{inputs.resumed_from}`" if inputs.resumed_from else ""),
        "",
    ]
    if inputs.has_curves:
        parts += [f"![training and validation loss]({CURVES_FILE})", ""]
    parts += [
        "## Evaluation (test split)",
        "",
        metrics_table(inputs.metrics, inputs.baseline, inputs.current_model),
        "",
        "Baselines, fitted on the train split: constant = the base rate or mean grade (for rmse, logloss, loss, "
        "accuracy); popularity = each product's smoothed positive rate and bm25 = Okapi BM25 of the query against the "
        "product text (for auc and the ranking metrics). A baseline has no figure for a metric that means nothing for "
        "it. Tied scores are ordered by one fixed pseudo-random order, the same for every scorer.",
        "",
        *verdict(inputs.metrics, inputs.baseline, inputs.current_model),
        "",
    ]
    parts += debiased_section(inputs.debiased)
    if inputs.ties:
        parts += ["Tied scores (share of a group's distinct products whose score ties another's): "
                  + ", ".join(f"{name} {share:.2f}" for name, share in inputs.ties.items()) + ".", ""]
    if inputs.fusion:
        parts += [inputs.fusion, ""]
    if inputs.current_model_uri:
        parts += [f"Current model: `{inputs.current_model_uri}`, scored on the same test split.", ""]
    if inputs.skipped:
        parts += ["Not computed:", ""] + [f"- {name}: {why}" for name, why in inputs.skipped.items()] + [""]
    parts += optimization_section(inputs.optimization)
    parts += ["## Gate", "", gate, ""] + [f"- {reason}" for reason in inputs.gate_reasons] + [""]
    parts += margins_section(inputs.margins)
    parts += ["## Limits", ""] + [f"- {limit}" for limit in LIMITS] + [""]
    if inputs.notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in inputs.notes] + [""]
    parts += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in inputs.versions.items()), ""]
    from huggingface_hub import ModelCard

    card = ModelCard(f"---\n{card_metadata(inputs).to_yaml()}\n---\n\n" + "\n".join(parts))
    return str(card)


def plot_curves(log_history: list[dict[str, Any]], path: Path) -> bool:
    """Training loss per logging step and validation loss per evaluation; False if nothing to plot."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    validation = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not validation:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="tab:blue")
    if validation:
        axes.plot(*zip(*validation, strict=True), label="validation loss", color="tab:orange", marker="o")
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
