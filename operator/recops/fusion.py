"""BM25, and the learnt fusion of a cross-encoder's output with BM25 and popularity.

A fine-tuned cross-encoder learns lexical matching only from enough clicks; BM25 and popularity are
what the shop already has. The trainer fits, on the validation split, a small linear model over

    [the cross-encoder's raw output, BM25 of the context against the item text, the item's popularity]

(logistic for click-through, so the result stays a calibrated log-odds; ridge on the grade for
relevance) and writes it beside the weights (`fusion.json`, named in recops.json). The evaluation and
the server apply the same fusion, so the model that is gated is the model that is served, and a
model never has to rank worse than a weighted BM25 when its own signal is weak.

Pure Python and numpy: imported by the trainer and by the server.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FUSION_FILE = "fusion.json"
FEATURES = ("model", "bm25", "popularity")
BM25_K1 = 1.2
BM25_B = 0.75
POPULARITY_PRIOR_WEIGHT = 10.0  # pseudo-events of the overall mean added to each item
RIDGE = 1.0  # L2 penalty on the (standardised) weights: a few hundred validation rows must not overfit
_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over a corpus of item texts (its IDF and average length)."""

    def __init__(self, idf: dict[str, float], average_length: float, default_idf: float) -> None:
        self.idf, self.average_length, self.default_idf = idf, average_length, default_idf

    @classmethod
    def fit(cls, corpus: Iterable[str]) -> BM25:
        documents = [tokens(text) for text in set(corpus)]
        count = max(len(documents), 1)
        average_length = (sum(len(d) for d in documents) / count) if documents else 1.0
        frequency: Counter[str] = Counter()
        for document in documents:
            frequency.update(set(document))
        idf = {term: math.log(1.0 + (count - seen + 0.5) / (seen + 0.5)) for term, seen in frequency.items()}
        return cls(idf, average_length, math.log(1.0 + (count + 0.5) / 0.5))

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
                total += self.idf.get(term, self.default_idf) * tf * (BM25_K1 + 1.0) / (tf + norm)
        return total

    def scores(self, contexts: Sequence[str], texts: Sequence[str]) -> list[float]:
        """BM25 of each (context, text) pair, each distinct pair computed once."""
        cache: dict[tuple[str, str], float] = {}
        out = []
        for pair in zip(contexts, texts, strict=True):
            if pair not in cache:
                cache[pair] = self.score(*pair)
            out.append(cache[pair])
        return out


def smoothed_means(item_ids: Sequence[str], targets: Sequence[float]) -> tuple[dict[str, float], float]:
    """({item: (sum + w * overall) / (count + w)}, overall): each item's mean target shrunk towards the
    overall mean, so an item seen rarely is not trusted."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for item, target in zip(item_ids, targets, strict=True):
        sums[item] = sums.get(item, 0.0) + float(target)
        counts[item] = counts.get(item, 0) + 1
    overall = (sum(sums.values()) / len(targets)) if len(targets) else 0.0
    w = POPULARITY_PRIOR_WEIGHT
    return {item: (sums[item] + w * overall) / (counts[item] + w) for item in sums}, overall


@dataclass
class Fusion:
    """raw' = bias + sum_i weight_i * (feature_i - mean_i) / scale_i over FEATURES."""

    kind: str  # "logistic" (the output is a log-odds) or "linear" (a grade)
    weights: list[float]
    bias: float
    means: list[float]
    scales: list[float]
    bm25_idf: dict[str, float]
    bm25_average_length: float
    bm25_default_idf: float
    popularity: dict[str, float]  # item id -> smoothed mean target in the train split
    popularity_default: float
    fitted_on: dict[str, Any] = field(default_factory=dict)  # rows, and the validation figures that chose it

    def describe(self) -> str:
        """The weights of the standardised features, e.g. "model +0.48, bm25 +0.56, popularity +0.17"."""
        return ", ".join(f"{name} {weight:+.3f}" for name, weight in zip(FEATURES, self.weights, strict=True))

    # --- features --------------------------------------------------------------------------------
    def _bm25(self) -> BM25:
        return BM25(self.bm25_idf, self.bm25_average_length, self.bm25_default_idf)

    def popularity_feature(self, item_ids: Sequence[str | None]) -> list[float]:
        values = [self.popularity.get(i, self.popularity_default) if i is not None else self.popularity_default
                  for i in item_ids]
        if self.kind == "logistic":  # a rate: on the log-odds scale of the output
            return [math.log(min(max(v, 1e-4), 1 - 1e-4) / (1 - min(max(v, 1e-4), 1 - 1e-4))) for v in values]
        return values

    def features(self, raw: Sequence[float] | np.ndarray, contexts: Sequence[str], texts: Sequence[str],
                 item_ids: Sequence[str | None]) -> np.ndarray:
        import numpy as np

        return np.column_stack([np.asarray(raw, dtype=float), self._bm25().scores(contexts, texts),
                                self.popularity_feature(item_ids)]) if len(raw) else np.zeros((0, len(FEATURES)))

    def apply(self, raw: Sequence[float] | np.ndarray, contexts: Sequence[str], texts: Sequence[str],
              item_ids: Sequence[str | None]) -> list[float]:
        import numpy as np

        x = self.features(raw, contexts, texts, item_ids)
        z = (x - np.asarray(self.means)) / np.asarray(self.scales)
        return [float(v) for v in z @ np.asarray(self.weights) + self.bias]

    # --- files -----------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        (directory / FUSION_FILE).write_text(json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> Fusion:
        return cls(**json.loads((directory / FUSION_FILE).read_text()))


def fit_fusion(kind: str, raw: Sequence[float] | np.ndarray, contexts: Sequence[str], texts: Sequence[str],
               item_ids: Sequence[str], target: np.ndarray, groups: Sequence[str], *, corpus: Iterable[str],
               train_items: Sequence[str], train_targets: Sequence[float], seed: int = 0) -> Fusion:
    """Fit the fusion on (validation) rows: `raw` is the model's output on them, `target` the 0/1 label
    (logistic) or the grade (linear); BM25's statistics come from `corpus`, popularity from the train split.

    logistic: the weights order each group's rows (pairwise logistic loss over pairs of one group with
    different labels: what ndcg and mrr judge), then one scale and bias calibrate the fused score into a
    log-odds (so logloss stays honest). linear: ridge regression on the grade (what rmse judges)."""
    import numpy as np

    bm25 = BM25.fit(corpus)
    popularity, default = smoothed_means(train_items, train_targets)
    fusion = Fusion(kind=kind, weights=[0.0] * len(FEATURES), bias=0.0, means=[0.0] * len(FEATURES),
                    scales=[1.0] * len(FEATURES), bm25_idf=bm25.idf, bm25_average_length=bm25.average_length,
                    bm25_default_idf=bm25.default_idf, popularity=popularity, popularity_default=default)
    x = fusion.features(raw, contexts, texts, item_ids)
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales < 1e-9] = 1.0  # a constant feature gets weight ~0 from the penalty
    z = (x - means) / scales
    y = np.asarray(target, dtype=float)
    if kind == "logistic":
        direction = _pairwise(z, y, np.asarray(groups), seed)
        (scale,), bias = _logistic((z @ direction)[:, None], y, penalty=0.0)
        weights = direction * scale
    else:
        weights, bias = _ridge(z, y)
    fusion.weights, fusion.bias = [float(w) for w in weights], float(bias)
    fusion.means, fusion.scales = [float(m) for m in means], [float(s) for s in scales]
    fusion.fitted_on = {"rows": len(y)}
    return fusion


def _ridge(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    import numpy as np

    bias = float(y.mean())
    weights = np.linalg.solve(z.T @ z + RIDGE * np.eye(z.shape[1]), z.T @ (y - bias))
    return weights, bias


MAX_PAIRS = 50_000


def _pairwise(z: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Weights w of a pairwise logistic model P(row i above row j) = sigmoid(w . (z_i - z_j)), fitted on
    pairs of rows of one group with different targets (at most MAX_PAIRS, drawn with `seed`)."""
    import numpy as np

    differences = []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        better, worse = np.meshgrid(rows, rows, indexing="ij")
        keep = y[better] > y[worse]
        differences.append(z[better[keep]] - z[worse[keep]])
    pairs = np.concatenate(differences) if differences else np.zeros((0, z.shape[1]))
    if len(pairs) == 0:
        return np.zeros(z.shape[1])
    if len(pairs) > MAX_PAIRS:
        pairs = pairs[np.random.default_rng(seed).choice(len(pairs), MAX_PAIRS, replace=False)]
    # Each pair twice, once each way round, so the fit needs no bias: y = 1 for (i - j), 0 for (j - i).
    design = np.concatenate([pairs, -pairs])
    labels = np.concatenate([np.ones(len(pairs)), np.zeros(len(pairs))])
    weights, _ = _logistic(design, labels, fit_bias=False)
    return weights


def _logistic(z: np.ndarray, y: np.ndarray, *, penalty: float = RIDGE, fit_bias: bool = True,
              iterations: int = 100) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression (the bias unpenalised) by Newton's method."""
    import numpy as np

    rate = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
    theta = np.zeros(z.shape[1] + 1)
    theta[-1] = math.log(rate / (1 - rate)) if fit_bias else 0.0
    design = np.column_stack([z, np.ones(len(z)) if fit_bias else np.zeros(len(z))])
    penalties = np.full(len(theta), penalty)
    penalties[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (p - y) + penalties * theta
        hessian = (design * (p * (1 - p) + 1e-9)[:, None]).T @ design + np.diag(penalties + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.abs(step).max()) < 1e-9:
            break
    return theta[:-1], float(theta[-1])
