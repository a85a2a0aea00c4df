"""Baselines every trained model is compared with, on the same test split, each only on the metrics that
mean something for it (recops.api.gate.baseline_applies):

- constant: the train split's base rate (click-through) or mean grade (relevance) for every row: what a
  model must beat on rmse, logloss, loss and accuracy.
- popularity: each product's smoothed rate of positive events (grade >= 1) in the train split and the older
  rows before it (PreparedData.statistics_rows: the rows the fusion's popularity reads too), shrunk towards the
  overall rate by a fitted weight (a product seen rarely is not trusted): the bestseller list, for auc and the
  ranking metrics.
- bm25: Okapi BM25 of the context (query, else user context) against the product text, with the
  statistics of every split's product texts: the lexical search, for auc and the ranking metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recops.api.gate import BASELINES, baseline_applies
from recops.fusion import BM25, POPULARITY_PRIOR_WEIGHT, prior_weight, smoothed_means

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from recops.train.data import PreparedData


def popularity_scores(train: pd.DataFrame, frame: pd.DataFrame, weight: float | None = POPULARITY_PRIOR_WEIGHT) -> np.ndarray:
    """Per product: (positives + w * overall rate) / (events + w), from `train` (w: fitted on it when None);
    unseen products get the overall rate."""

    positive = (train["grade"].to_numpy(dtype=float) >= 1.0).astype(float)
    items = train["product_id"].astype(str).tolist()
    rates, overall = smoothed_means(items, positive.tolist(), prior_weight(items, positive) if weight is None else weight)
    scores: np.ndarray = frame["product_id"].astype(str).map(rates).fillna(overall).to_numpy(dtype=float)
    return scores


def bm25_scores(frame: pd.DataFrame, corpus: list[str] | set[str] | None = None) -> np.ndarray:
    """BM25 of each row's context against its product text (an order, not a probability)."""
    import numpy as np

    texts = frame["product_text"].astype(str).tolist()
    model = BM25.fit(corpus if corpus is not None else texts)
    return np.asarray(model.scores(frame["context"].astype(str).tolist(), texts), dtype=float)


def constant_score(train: pd.DataFrame, max_grade: float) -> float:
    """The train split's mean label as a unit score (the base rate; mean grade / max grade)."""
    return float(train["label"].astype(float).mean() / max(max_grade, 1e-9)) if len(train) else 0.0


def baseline_scores(data: PreparedData, frame: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Scores of each baseline on `frame` (default: the test split), fitted on the train split."""
    import numpy as np

    frame = data.test if frame is None else frame
    return {
        "constant": np.full(len(frame), constant_score(data.train, data.max_grade)),
        "popularity": popularity_scores(data.statistics_rows(), frame, weight=None),
        "bm25": bm25_scores(frame, data.product_texts()),
    }


def baseline_metrics(names: list[str], data: PreparedData, task: str = "click-through",
                     scores_by_baseline: dict[str, np.ndarray] | None = None,
                     frame: pd.DataFrame | None = None) -> dict[str, dict[str, float]]:
    """{baseline: {metric: value}} on `frame` (default data.test), each baseline only with the metrics that apply
    to it (and that are defined on the frame). "loss" of the constant is the task's objective: BCE
    (click-through) or the squared error in grades (relevance)."""
    from recops.train.metrics import compute_metrics

    frame = data.test if frame is None else frame
    result: dict[str, dict[str, float]] = {}
    for name, scores in (scores_by_baseline or baseline_scores(data, frame)).items():
        wanted = [m for m in names if baseline_applies(name, m)]
        values = compute_metrics(wanted, frame, scores, max_grade=data.max_grade)
        if name == "constant" and "loss" in wanted and len(scores):
            loss = _constant_loss(task, frame["label"].to_numpy(dtype=float), float(scores[0]) * data.max_grade)
            if loss is not None:
                values["loss"] = loss
        result[name] = {k: float(v) for k, v in values.items() if v == v}
    return {name: result[name] for name in BASELINES if result.get(name)}


def _constant_loss(task: str, labels: np.ndarray, prediction: float) -> float | None:
    """The task's training objective for one constant prediction (a rate, or a grade)."""
    import numpy as np

    from recops.train.metrics import logloss

    if task == "click-through":
        return logloss(labels, np.full(len(labels), prediction))
    if task == "relevance":
        return float(np.mean((labels - prediction) ** 2))
    return None
