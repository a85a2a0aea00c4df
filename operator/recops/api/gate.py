"""The deployment gate and the baselines it can name: one decision, used by the trainer and the operator.

A baseline is only compared on metrics that mean something for it:

- constant (the train split's base rate, or mean grade): rmse, logloss, loss, accuracy. A constant
  cannot order anything, so it has no ranking metric.
- popularity and bm25: auc and the ranking metrics (mrr, ndcg@K, recall@K). Neither is a regressor
  or a calibrated click model of the task, so neither has rmse, logloss or loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from recops.api.contracts import Debiased
    from recops.api.finetunejob import Gate

BaselineName = Literal["constant", "popularity", "bm25"]
BASELINES: tuple[BaselineName, ...] = ("constant", "popularity", "bm25")
LOWER_IS_BETTER = frozenset({"logloss", "rmse", "loss"})
CONSTANT_METRICS = frozenset({"rmse", "logloss", "loss", "accuracy"})


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def better(metric: str, candidate: float, reference: float) -> bool:
    """Strictly better: a tie does not beat anything."""
    return candidate > reference if higher_is_better(metric) else candidate < reference


def is_ranking(metric: str) -> bool:
    """Whether `metric` judges only the order of scores (auc, mrr, ndcg@K, recall@K)."""
    return metric == "auc" or metric == "mrr" or metric.startswith(("ndcg@", "recall@"))


def baseline_applies(baseline: str, metric: str) -> bool:
    """Whether `baseline` has a meaningful value of `metric` (see the module docstring)."""
    if baseline == "constant":
        return metric in CONSTANT_METRICS
    return is_ranking(metric)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class GateDecision:
    passed: bool | None  # None: no gate
    reasons: list[str]

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def decide_gate(
    gate: Gate | None,
    metrics: dict[str, float],
    baseline: dict[str, dict[str, float]] | None = None,
    current: dict[str, float] | None = None,
    debiased: Debiased | None = None,
) -> GateDecision:
    """The gate's verdict on a model's test-split metrics.

    Fails closed: a gate metric that could not be computed, or a named baseline or current model that
    lacks it, does not pass (nothing was shown to be beaten). beatCurrent with no current model (the
    first model of a lineage) has nothing to beat and passes that part. On a serving event log
    (`debiased` given) every reference is judged on the exploration slice only: elsewhere the log's clicks
    went to what the current model put first, which favours it and whatever ranks like it (BM25, where the
    model leans on it; docs/finetunejob.md has the measurements). A log without the slice cannot judge
    beatCurrent; the baselines are then judged on the whole log.
    """
    if gate is None:
        return GateDecision(None, ["no gate: every complete model may be deployed"])
    metric = gate.metric
    value = metrics.get(metric)
    if not _finite(value):
        return GateDecision(False, [f"{metric} could not be computed on the test split"])
    assert value is not None
    reasons: list[str] = []
    passed = True
    if gate.minimum is not None:
        ok = value >= gate.minimum
        reasons.append(f"{metric} {value:.4f} {'>=' if ok else '<'} minimum {gate.minimum:g}")
        passed &= ok
    if gate.maximum is not None:
        ok = value <= gate.maximum
        reasons.append(f"{metric} {value:.4f} {'<=' if ok else '>'} maximum {gate.maximum:g}")
        passed &= ok
    # The figures the references are judged on: the exploration slice of a serving event log, else the test split.
    own_figures, references, current_figures, where = metrics, baseline or {}, current or {}, ""
    if debiased is not None and debiased.rows:
        own_figures, references, current_figures = debiased.metrics, debiased.baseline, debiased.current_model or {}
        where = f" (debiased: {debiased.rows} explored impressions)"
    # (reference, the model's figure, the reference's figure)
    judged: list[tuple[str, float | None, float | None]] = [
        (f"{name}{where}", own_figures.get(metric), references.get(name, {}).get(metric)) for name in gate.beat_baselines
    ]
    if gate.beat_current:
        if current is None:
            reasons.append("beatCurrent: no model serves now, nothing to beat")
        elif debiased is not None and not debiased.rows:
            reasons.append("beatCurrent: the event log's test split has no exploration slice (responses showing "
                           "random candidates in a random order; RecModelDeployment serving.eventLog.exploration), and the rest of the log "
                           "favours the model that ranked it: not shown to be beaten")
            passed = False
        else:
            judged.append((f"the current model{where}", own_figures.get(metric), current_figures.get(metric)))
    for name, own, reference in judged:
        if not _finite(own) or not _finite(reference):
            lacking = name if _finite(own) else "the model"
            reasons.append(f"{lacking} has no {metric} on this test split: {name} not shown to be beaten")
            passed = False
            continue
        assert own is not None and reference is not None
        ok = better(metric, own, reference)
        reasons.append(f"{metric} {own:.4f} vs {name} {reference:.4f}: {'beats it' if ok else 'does not beat it'}")
        passed &= ok
    return GateDecision(passed, reasons)


def unbeaten(
    metrics: dict[str, float], baseline: dict[str, dict[str, float]], current: dict[str, float] | None = None
) -> list[str]:
    """"<metric>: <reference> <value> vs model <value>" for every reference the model does not beat."""
    references = {**baseline, **({"current model": current} if current else {})}
    lines = []
    for metric, value in metrics.items():
        for name, values in references.items():
            reference = values.get(metric)
            if _finite(reference) and _finite(value) and not better(metric, value, reference):  # type: ignore[arg-type]
                lines.append(f"{metric}: {name} {reference:.4f} vs model {value:.4f}")
    return lines
