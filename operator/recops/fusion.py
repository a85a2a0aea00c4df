"""BM25, and the learnt fusion of a cross-encoder's output with BM25 and popularity.

A fine-tuned cross-encoder learns lexical matching only from enough clicks; BM25 and popularity are
what the shop already has. The trainer fits, on the validation split, a small linear model over

    [the cross-encoder's raw output, BM25 of the context against the item text, the item's popularity,
     the user's offset, the user's residuals on similar items (relevance), the learnt lexical score
     (recops.lexical; click-through)]

(logistic for click-through, so the result stays a calibrated log-odds; for relevance, ridge on what the
baseline predictor popularity + user offset leaves of the grade) and writes it beside the weights (`fusion.json`, named in
recops.json; the item neighbourhood's similarities in `neighbours.npz`). The evaluation and
the server apply the same fusion, so the model that is gated is the model that is served, and a
model never has to rank worse than a weighted BM25 when its own signal is weak.

Pure Python and numpy: imported by the trainer and by the server.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.api.contracts import MAX_USER_RATINGS

if TYPE_CHECKING:
    import numpy as np

    from recops.lexical import LexicalModel

FUSION_FILE = "fusion.json"
FEATURES = ("model", "bm25", "popularity", "user", "neighbours", "lexical")
NEIGHBOURS_FILE = "neighbours.npz"
BM25_K1 = 1.2
BM25_B = 0.75
POPULARITY_PRIOR_WEIGHT = 10.0  # pseudo-events of the overall mean added to each item, unless fitted
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
        """BM25 of each (context, text) pair."""
        return pair_scores(self.score, contexts, texts)


def pair_scores(score: Callable[[str, str], float], contexts: Sequence[str], texts: Sequence[str]) -> list[float]:
    """`score` of each (context, text) pair, each distinct pair computed once (a query's rows share its words)."""
    cache: dict[tuple[str, str], float] = {}
    out = []
    for pair in zip(contexts, texts, strict=True):
        if pair not in cache:
            cache[pair] = score(*pair)
        out.append(cache[pair])
    return out


def smoothed_means(item_ids: Sequence[str], targets: Sequence[float],
                   weight: float = POPULARITY_PRIOR_WEIGHT) -> tuple[dict[str, float], float]:
    """({item: (sum + w * overall) / (count + w)}, overall): each item's mean target shrunk towards the
    overall mean, so an item seen rarely is not trusted."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for item, target in zip(item_ids, targets, strict=True):
        sums[item] = sums.get(item, 0.0) + float(target)
        counts[item] = counts.get(item, 0) + 1
    overall = (sum(sums.values()) / len(targets)) if len(targets) else 0.0
    w = weight
    return {item: (sums[item] + w * overall) / (counts[item] + w) for item in sums}, overall


MAX_PRIOR_WEIGHT = 1e6  # no evidence that groups differ: their means are not trusted at all


def prior_weight(groups: Sequence[str], values: Sequence[float]) -> float:
    """The empirical-Bayes shrinkage of group means (method of moments): the within-group variance over the
    variance of the groups' true means, i.e. how many pseudo-events of the overall mean each group's mean gets.
    Fitted on the data rather than fixed, so a statistic is trusted as much as the data says it differs."""
    import numpy as np
    import pandas as pd

    stats = pd.DataFrame({"g": list(groups), "y": np.asarray(values, dtype=float)}).groupby("g")["y"].agg(
        ["mean", "var", "count"])
    stats = stats[stats["count"] >= 2]
    if len(stats) < 2:
        return MAX_PRIOR_WEIGHT
    within = float(np.average(stats["var"], weights=stats["count"] - 1))
    between = float(np.var(stats["mean"]) - np.mean(within / stats["count"]))
    if between <= 0 or within <= 0:
        return MAX_PRIOR_WEIGHT if between <= 0 else 1.0
    return float(min(max(within / between, 0.5), MAX_PRIOR_WEIGHT))


Ratings = Sequence[tuple[str, float]]  # a user's earlier events, oldest first: (item id, grade)


# The item neighbourhood (Koren 2008, "Factorization meets the neighborhood", section 2.2): how the user graded,
# beyond the baseline predictor, the items that users grade alike with this one.
NEIGHBOUR_SHRINKAGE = 100.0  # a similarity from n co-raters counts n / (n + 100): few co-raters, little trust
NEIGHBOUR_MIN_SIMILARITY = 0.02  # weaker pairs are not stored (on ml-100k: 30% of the pairs, the same RMSE)
NEIGHBOURS_PER_ROW = 50  # the user's k most similar earlier items to the scored one
NEIGHBOUR_PRIOR = 1.0  # added to the sum of |similarity|: a few weak neighbours say little
MAX_NEIGHBOUR_ITEMS = 20_000  # the most graded items get neighbours (the pairs grow with the square)


class ItemNeighbours:
    """Shrunk Pearson-like similarities of items' baseline residuals over their co-raters, sparse (CSR, each row's
    columns sorted), fitted on the train rows and saved beside fusion.json (NEIGHBOURS_FILE)."""

    def __init__(self, ids: np.ndarray, indptr: np.ndarray, indices: np.ndarray, similarity: np.ndarray) -> None:
        self.ids, self.indptr, self.indices, self.similarity = ids, indptr, indices, similarity
        self.index = {str(item): row for row, item in enumerate(ids.tolist())}

    @property
    def pairs(self) -> int:
        return len(self.similarity)

    @classmethod
    def fit(cls, users: Sequence[str], items: Sequence[str], residuals: Sequence[float]) -> ItemNeighbours | None:
        """From each (user, item) residual of the baseline predictor (a user's repeated item: its mean)."""
        import numpy as np
        import pandas as pd
        from scipy import sparse

        frame = pd.DataFrame({"u": list(users), "i": list(items), "r": np.asarray(residuals, dtype=float)})
        frame = frame.groupby(["u", "i"], sort=False, as_index=False)["r"].mean()
        kept = frame["i"].value_counts().index[:MAX_NEIGHBOUR_ITEMS]
        frame = frame[frame["i"].isin(kept)]
        if frame["i"].nunique() < 2:
            return None
        user_codes, _ = pd.factorize(frame["u"])
        item_codes, ids = pd.factorize(frame["i"])
        shape = (int(user_codes.max()) + 1, len(ids))
        r = sparse.csr_matrix((frame["r"].to_numpy(), (user_codes, item_codes)), shape=shape)
        rated = sparse.csr_matrix((np.ones(len(frame)), (user_codes, item_codes)), shape=shape)
        products = (r.T @ r).tocsr()  # sum over co-raters of r_ui * r_uj
        co_raters = (rated.T @ rated).tocsr()
        squares = (r.multiply(r).T @ rated).tocsr()  # [i, j]: sum of r_ui^2 over the users who graded j too
        norms = squares.multiply(squares.T).sqrt().tocsr()
        norms.data = 1.0 / (norms.data + 1e-12)
        co_raters.data = co_raters.data / (co_raters.data + NEIGHBOUR_SHRINKAGE)
        similarity = sparse.csr_matrix(products.multiply(norms).multiply(co_raters))
        similarity.setdiag(0.0)
        similarity.data[np.abs(similarity.data) < NEIGHBOUR_MIN_SIMILARITY] = 0.0
        similarity.eliminate_zeros()
        similarity.sort_indices()
        return cls(np.asarray(ids, dtype=str), similarity.indptr.astype(np.int64), similarity.indices.astype(np.int32),
                   similarity.data.astype(np.float32))

    def predict(self, item: str, rated: np.ndarray, residuals: np.ndarray) -> float:
        """The similarity-weighted mean of the residuals of the NEIGHBOURS_PER_ROW rated items most similar to
        `item` (`rated`: their rows here, -1 for an unknown item), shrunk by NEIGHBOUR_PRIOR."""
        import numpy as np

        row = self.index.get(item)
        if row is None or not len(rated):
            return 0.0
        columns = self.indices[self.indptr[row]:self.indptr[row + 1]]
        values = self.similarity[self.indptr[row]:self.indptr[row + 1]]
        if not len(columns):
            return 0.0
        at = np.minimum(np.searchsorted(columns, rated), len(columns) - 1)
        weights = np.where((columns[at] == rated) & (rated >= 0), values[at], 0.0).astype(float)
        if len(weights) > NEIGHBOURS_PER_ROW:
            top = np.argpartition(-np.abs(weights), NEIGHBOURS_PER_ROW)[:NEIGHBOURS_PER_ROW]
            weights, residuals = weights[top], residuals[top]
        return float(weights @ residuals / (np.abs(weights).sum() + NEIGHBOUR_PRIOR))

    def rows(self, items: Sequence[str]) -> np.ndarray:
        import numpy as np

        return np.array([self.index.get(item, -1) for item in items], dtype=np.int32)

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez_compressed(path, ids=self.ids, indptr=self.indptr, indices=self.indices, similarity=self.similarity)

    @classmethod
    def load(cls, path: Path) -> ItemNeighbours:
        import zipfile

        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as saved:
                return cls(saved["ids"], saved["indptr"], saved["indices"], saved["similarity"])
        except (zipfile.BadZipFile, KeyError) as error:  # a truncated or foreign file: a ValueError, like bad JSON
            raise ValueError(f"{path.name} is not a neighbourhood file: {error}") from None


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
    # Pseudo-events of no offset added to a user's (user_offset); 1e6: no user feature (a model from before it).
    user_prior_weight: float = MAX_PRIOR_WEIGHT
    # The item neighbourhood's file beside fusion.json, or None: no such feature (it weighs nothing).
    neighbours_file: str | None = None
    neighbours: ItemNeighbours | None = field(default=None, repr=False, compare=False)  # loaded from that file
    # The learnt lexical model (saved beside, in lexical.json); None: the feature is 0 (a model from before it).
    lexical: LexicalModel | None = None

    def __post_init__(self) -> None:
        # A fusion.json written before the user feature: it weighs nothing.
        missing = len(FEATURES) - len(self.weights)
        if missing > 0:
            self.weights, self.means, self.scales = (
                [*self.weights, *[0.0] * missing], [*self.means, *[0.0] * missing], [*self.scales, *[1.0] * missing])

    def describe(self) -> str:
        """The weights of the standardised features, e.g. "model +0.48, bm25 +0.56, popularity +0.17, user +0.00"."""
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

    def target(self, grade: float) -> float:
        """What the fusion predicts of an event of this grade: clicked or not (logistic), else the grade."""
        return float(grade >= 1.0) if self.kind == "logistic" else float(grade)

    def user_offset(self, ratings: Ratings | None) -> float:
        """How far the user's last MAX_USER_RATINGS events lay above their items' popularity, shrunk towards 0:
        sum(target - popularity of the item) / (count + user_prior_weight). The baseline predictors' user bias
        (Koren 2008), on the residual so that a user who picks good items is not taken for a generous one.
        Only events before the scored one: the data gives each row the user's strictly earlier events, a
        request its `user.ratings`."""
        if not ratings or self.user_prior_weight >= MAX_PRIOR_WEIGHT:
            # No evidence that users differ: 0, not a sum over a huge count, which standardising would blow up.
            return 0.0
        recent = list(ratings)[-MAX_USER_RATINGS:]
        total = sum(self.target(grade) - self.popularity.get(item, self.popularity_default) for item, grade in recent)
        return total / (len(recent) + self.user_prior_weight)

    def _neighbour_inputs(self, ratings: Ratings) -> tuple[np.ndarray, np.ndarray]:
        """The user's last MAX_USER_RATINGS events as the neighbourhood reads them: their items' rows and what the
        baseline predictor (the item's popularity + the user's offset) left of each."""
        import numpy as np

        assert self.neighbours is not None
        recent = list(ratings)[-MAX_USER_RATINGS:]
        offset = self.user_offset(recent)
        residuals = np.array([self.target(grade) - self.popularity.get(item, self.popularity_default) - offset
                              for item, grade in recent])
        return self.neighbours.rows([item for item, _ in recent]), residuals

    def neighbour_feature(self, item_ids: Sequence[str | None], ratings: Sequence[Ratings | None] | None,
                          rows: int) -> list[float]:
        """The user's residuals on the items most similar to each row's item (ItemNeighbours.predict); 0 without
        earlier events, an item id or the neighbourhood."""
        if ratings is None or self.neighbours is None:
            return [0.0] * rows
        inputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # a request's candidates share one ratings object
        out = []
        for item, user_ratings in zip(item_ids, ratings, strict=True):
            if not user_ratings or item is None:
                out.append(0.0)
                continue
            key = id(user_ratings)
            if key not in inputs:
                inputs[key] = self._neighbour_inputs(user_ratings)
            out.append(self.neighbours.predict(item, *inputs[key]))
        return out

    def lexical_feature(self, contexts: Sequence[str], texts: Sequence[str]) -> list[float]:
        return self.lexical.scores(contexts, texts) if self.lexical is not None else [0.0] * len(contexts)

    def user_feature(self, ratings: Sequence[Ratings | None] | None, rows: int) -> list[float]:
        if ratings is None:
            return [0.0] * rows
        offsets: dict[int, float] = {}  # a request's candidates share one ratings object: computed once
        return [offsets.setdefault(id(r), self.user_offset(r)) if r else 0.0 for r in ratings]

    def features(self, raw: Sequence[float] | np.ndarray, contexts: Sequence[str], texts: Sequence[str],
                 item_ids: Sequence[str | None], ratings: Sequence[Ratings | None] | None = None) -> np.ndarray:
        import numpy as np

        if not len(raw):
            return np.zeros((0, len(FEATURES)))
        return np.column_stack([np.asarray(raw, dtype=float), self._bm25().scores(contexts, texts),
                                self.popularity_feature(item_ids), self.user_feature(ratings, len(raw)),
                                self.neighbour_feature(item_ids, ratings, len(raw)), self.lexical_feature(contexts, texts)])

    def apply(self, raw: Sequence[float] | np.ndarray, contexts: Sequence[str], texts: Sequence[str],
              item_ids: Sequence[str | None], ratings: Sequence[Ratings | None] | None = None) -> list[float]:
        """The fused raw score of each row; `ratings`: each row's user's earlier events (None: none known)."""
        import numpy as np

        x = self.features(raw, contexts, texts, item_ids, ratings)
        z = (x - np.asarray(self.means)) / np.asarray(self.scales)
        return [float(v) for v in z @ np.asarray(self.weights) + self.bias]

    # --- files -----------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        if self.neighbours is not None:
            self.neighbours.save(directory / NEIGHBOURS_FILE)
            self.neighbours_file = NEIGHBOURS_FILE
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("neighbours", "lexical")}
        (directory / FUSION_FILE).write_text(json.dumps(state, sort_keys=True))
        if self.lexical is not None:
            self.lexical.save(directory)

    @classmethod
    def load(cls, directory: Path) -> Fusion:
        from recops.lexical import LexicalModel

        fusion = cls(**json.loads((directory / FUSION_FILE).read_text()), lexical=LexicalModel.load(directory))
        if fusion.neighbours_file:
            fusion.neighbours = ItemNeighbours.load(directory / fusion.neighbours_file)
        return fusion


def fit_fusion(kind: str, raw: Sequence[float] | np.ndarray, contexts: Sequence[str], texts: Sequence[str],
               item_ids: Sequence[str], target: np.ndarray, groups: Sequence[str], *, corpus: Iterable[str],
               train_items: Sequence[str], train_targets: Sequence[float], seed: int = 0,
               ratings: Sequence[Ratings | None] | None = None, train_users: Sequence[str | None] | None = None,
               lexical: LexicalModel | None = None, neighbourhood: bool | None = None) -> Fusion:
    """Fit the fusion on (validation) rows: `raw` is the model's output on them, `target` the 0/1 label
    (logistic) or the grade (linear), `ratings` each row's user's earlier events; BM25's statistics come
    from `corpus`, popularity and the shrinkage of the user offset from the train rows (`train_items`,
    `train_targets`, `train_users`: the train split and the older rows before it, see PreparedData.earlier);
    `lexical`: the lexical model fitted on the train split (recops.lexical), or None. `neighbourhood`: fit the
    item neighbourhood (None: for linear only, where it was measured first).

    logistic: the weights order each group's rows (pairwise logistic loss over pairs of one group with
    different labels: what ndcg and mrr judge), then one scale and a bias calibrate the fused score into a
    log-odds (so logloss stays honest); the user offset weighs 0 there (constant within a request). linear: the baseline predictor popularity + user offset, then ridge
    regression of what it leaves of the grade (what rmse judges) with no intercept of its own: the level
    comes from the many train rows, not from the validation split's few users."""
    import numpy as np

    bm25 = BM25.fit(corpus)
    item_prior_weight = prior_weight(train_items, train_targets)
    popularity, default = smoothed_means(train_items, train_targets, item_prior_weight)
    fusion = Fusion(kind=kind, weights=[0.0] * len(FEATURES), bias=0.0, means=[0.0] * len(FEATURES),
                    scales=[1.0] * len(FEATURES), bm25_idf=bm25.idf, bm25_average_length=bm25.average_length,
                    bm25_default_idf=bm25.default_idf, popularity=popularity, popularity_default=default,
                    lexical=lexical)
    if train_users is not None:
        known = [i for i, user in enumerate(train_users) if user is not None]
        residuals = [float(train_targets[i]) - popularity[train_items[i]] for i in known]
        fusion.user_prior_weight = prior_weight([str(train_users[i]) for i in known], residuals)
        if neighbourhood if neighbourhood is not None else kind == "linear":
            fusion.neighbours = _fit_neighbours(fusion, [str(train_users[i]) for i in known],
                                                [str(train_items[i]) for i in known], residuals)
    x = fusion.features(raw, contexts, texts, item_ids, ratings)
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales < 1e-9] = 1.0  # a constant feature gets weight ~0 from the penalty
    z = (x - means) / scales
    y = np.asarray(target, dtype=float)
    if kind == "logistic":
        # The user offset is constant within a request, so it never changes a served order; offline, where a
        # group mixes users (a query) or spans one user's time (each row's own earlier events), its weight (fitted
        # on few validation rows, at times negative) only reorders the group (the demo's retrain lost to BM25 by
        # it). It weighs 0; one scale and a bias calibrate the order.
        user = FEATURES.index("user")
        ordering = z.copy()
        ordering[:, user] = 0.0
        direction = _pairwise(ordering, y, np.asarray(groups), seed)  # a zero column: weight 0
        (scale,), bias = _logistic((ordering @ direction)[:, None], y, penalty=0.0)
        weights = direction * scale
    else:
        # The baseline predictor in standardised terms: popularity and the user offset at weight 1 each.
        baseline = np.zeros(len(FEATURES))
        for name in ("popularity", "user"):
            baseline[FEATURES.index(name)] = scales[FEATURES.index(name)]
        correction = _ridge(z, y - (z @ baseline + means[FEATURES.index("popularity")] + means[FEATURES.index("user")]))
        weights = baseline + correction
        bias = means[FEATURES.index("popularity")] + means[FEATURES.index("user")]
    fusion.weights, fusion.bias = [float(w) for w in weights], float(bias)
    fusion.means, fusion.scales = [float(m) for m in means], [float(s) for s in scales]
    fusion.fitted_on = {"rows": len(y), "popularityPriorWeight": round(item_prior_weight, 3),
                        "userPriorWeight": round(fusion.user_prior_weight, 3),
                        "neighbourPairs": fusion.neighbours.pairs if fusion.neighbours is not None else 0}
    return fusion


def _fit_neighbours(fusion: Fusion, users: list[str], items: list[str], residuals: list[float]) -> ItemNeighbours | None:
    """The item neighbourhood over the train rows' residuals of the item's popularity, less each user's offset over
    all their train rows (so similarity reads how users' tastes move together, not who grades generously)."""
    import pandas as pd

    if not users:
        return None
    frame = pd.DataFrame({"u": users, "r": residuals})
    sums = frame.groupby("u")["r"].agg(["sum", "count"])
    offsets = (sums["sum"] / (sums["count"] + fusion.user_prior_weight)) if fusion.user_prior_weight < MAX_PRIOR_WEIGHT \
        else sums["sum"] * 0.0
    return ItemNeighbours.fit(users, items, (frame["r"] - frame["u"].map(offsets)).tolist())


def _ridge(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge weights of y on the (centred) z, without an intercept."""
    import numpy as np

    weights: np.ndarray = np.linalg.solve(z.T @ z + RIDGE * np.eye(z.shape[1]), z.T @ y)
    return weights


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
