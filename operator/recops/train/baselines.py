"""Baselines every trained model is compared with, on the same test split:

- popularity: each product's smoothed rate of positive events (grade >= 1) in the train split,
  shrunk towards the overall rate (a product seen rarely is not trusted): a calibrated
  probability, so auc, logloss and the ranking metrics are all meaningful.
- bm25: Okapi BM25 of the context (query, else user context) against the product text,
  calibrated into a probability by a one-feature logistic regression fitted on the train split
  (or squashed s / (1 + s) without one).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from recops.train.data import PreparedData

POPULARITY_PRIOR_WEIGHT = 10.0  # pseudo-events of the overall rate added to each product
BM25_K1 = 1.2
BM25_B = 0.75
_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def popularity_scores(train: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """Per product: (positives + w * overall rate) / (events + w), from train; unseen products get the overall rate."""
    import numpy as np

    positive = (train["grade"].to_numpy(dtype=float) >= 1.0).astype(float)
    overall = float(positive.mean()) if len(positive) else 0.5
    per_product = (
        train.assign(_positive=positive).groupby("product_id", sort=False)["_positive"].agg(["sum", "count"])
    )
    rate = (per_product["sum"] + POPULARITY_PRIOR_WEIGHT * overall) / (per_product["count"] + POPULARITY_PRIOR_WEIGHT)
    scores = frame["product_id"].map(rate).fillna(overall).to_numpy(dtype=float)
    result: np.ndarray = np.clip(scores, 0.0, 1.0)
    return result


class BM25:
    """Okapi BM25 over a corpus of product texts (its IDF and average length)."""

    def __init__(self, corpus: list[str] | set[str]) -> None:
        documents = [tokens(text) for text in set(corpus)]
        self.count = max(len(documents), 1)
        self.average_length = (sum(len(d) for d in documents) / self.count) if documents else 1.0
        frequency: Counter[str] = Counter()
        for document in documents:
            frequency.update(set(document))
        self.idf = {
            term: math.log(1.0 + (self.count - seen + 0.5) / (seen + 0.5)) for term, seen in frequency.items()
        }
        self._default_idf = math.log(1.0 + (self.count + 0.5) / 0.5)

    def score(self, query: str, document: str) -> float:
        query_terms = tokens(query)
        if not query_terms:
            return 0.0
        counts = Counter(tokens(document))
        length = sum(counts.values())
        norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / max(self.average_length, 1e-9))
        total = 0.0
        for term in query_terms:
            tf = counts.get(term, 0)
            if tf:
                total += self.idf.get(term, self._default_idf) * tf * (BM25_K1 + 1.0) / (tf + norm)
        return total


def raw_bm25(frame: pd.DataFrame, corpus: list[str] | set[str] | None = None) -> np.ndarray:
    """BM25 of each row's context against its product text (computed once per distinct pair)."""
    import numpy as np
    import pandas as pd

    if len(frame) == 0:
        return np.zeros(0)
    model = BM25(set(corpus) if corpus is not None else set(frame["product_text"].astype(str)))
    pairs = pd.MultiIndex.from_arrays([frame["context"].astype(str), frame["product_text"].astype(str)])
    codes, distinct = pd.factorize(pairs)
    values = np.array([model.score(context, text) for context, text in distinct], dtype=float)
    result: np.ndarray = values[codes]
    return result


def _fit_logistic(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a * x + b) by Newton's method, lightly regularised."""
    import numpy as np

    a, b = 0.0, 0.0
    if len(x) == 0 or y.min() == y.max():
        rate = float(np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4))
        return 0.0, math.log(rate / (1 - rate))
    scale = float(np.std(x)) or 1.0
    z = x / scale
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        w = p * (1 - p) + 1e-9
        gradient = np.array([np.sum((p - y) * z) + 1e-3 * a, np.sum(p - y)])
        hessian = np.array([[np.sum(w * z * z) + 1e-3, np.sum(w * z)], [np.sum(w * z), np.sum(w)]])
        step = np.linalg.solve(hessian, gradient)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-8:
            break
    return a / scale, b


def bm25_scores(
    frame: pd.DataFrame, *, calibrate_on: pd.DataFrame | None = None, corpus: list[str] | set[str] | None = None
) -> np.ndarray:
    """BM25 of context vs product_text mapped to [0, 1]: calibrated on `calibrate_on` (its
    grade >= 1 as the target) when given, else squashed as s / (1 + s)."""
    import numpy as np

    raw = raw_bm25(frame, corpus)
    if calibrate_on is None:
        squashed: np.ndarray = raw / (1.0 + raw)
        return squashed
    target = (calibrate_on["grade"].to_numpy(dtype=float) >= 1.0).astype(float)
    a, b = _fit_logistic(raw_bm25(calibrate_on, corpus), target)
    calibrated: np.ndarray = 1.0 / (1.0 + np.exp(-(a * raw + b)))
    return calibrated


def baseline_scores(data: PreparedData, frame: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Scores of each baseline on `frame` (default: the test split), fitted on the train split."""
    frame = data.test if frame is None else frame
    corpus = {*data.train["product_text"], *data.validation["product_text"], *data.test["product_text"]}
    return {
        "popularity": popularity_scores(data.train, frame),
        "bm25": bm25_scores(frame, calibrate_on=data.train, corpus=corpus),
    }


def baseline_metrics(names: list[str], data: PreparedData) -> dict[str, dict[str, float]]:
    """{"popularity": {...}, "bm25": {...}}: the named metrics of each baseline on data.test."""
    from recops.train.metrics import compute_metrics

    return {
        name: compute_metrics(names, data.test, scores, max_grade=data.max_grade)
        for name, scores in baseline_scores(data).items()
    }
