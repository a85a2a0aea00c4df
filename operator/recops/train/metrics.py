"""Ranking and classification metrics, named as in the Contracts: auc, logloss, rmse, mrr,
ndcg@K, recall@K.

- auc, logloss and accuracy (threshold 0.5) judge scores as probabilities of the binary target `grade >= 1` (a click or
  better: the click-through definition), over all rows.
- rmse compares `scores * max_grade` with `label` (for click-through max_grade is 1 and the
  label is 0/1; for relevance pass the unit scores and the data's max_grade, so rmse is in grades).
- mrr, ndcg@K and recall@K rank the rows of each group (the query, else the user) by score and
  average over the groups with at least one positive (grade >= 1). ndcg uses the grade as gain
  (linear), recall@K is the share of a group's positives in its top K. Ties in the scores are
  broken by a fixed pseudo-random order, never by the order of the rows (which could put the
  positives first).

A metric that the data cannot define (auc with one class, a ranking metric with no group that
has a positive) is NaN. `paired_interval` gives one scorer's metric minus another's with a bootstrap
interval over whole groups (every metric but auc and loss).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

METRIC_PATTERN = re.compile(r"^(auc|logloss|rmse|mrr|loss|accuracy|(ndcg|recall)@([1-9][0-9]*))$")
POSITIVE_GRADE = 1.0
_EPSILON = 1e-7


def parse_metric(name: str) -> tuple[str, int | None]:
    """("ndcg", 10) for "ndcg@10"; ("auc", None) for "auc"; ValueError for unknown names."""
    match = METRIC_PATTERN.match(name)
    if not match:
        raise ValueError(f"unknown metric {name!r}: use auc, logloss, accuracy, rmse, mrr, ndcg@K or recall@K")
    if match.group(2):
        return match.group(2), int(match.group(3))
    return match.group(1), None


def auc(target: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    import numpy as np
    import pandas as pd

    target = np.asarray(target, dtype=bool)
    positives = int(target.sum())
    negatives = len(target) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=float)).rank(method="average").to_numpy()
    rank_sum = float(ranks[target].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def logloss(target: np.ndarray, probabilities: np.ndarray) -> float:
    import numpy as np

    if len(target) == 0:
        return float("nan")
    y = np.asarray(target, dtype=float)
    p = np.clip(np.asarray(probabilities, dtype=float), _EPSILON, 1.0 - _EPSILON)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def rmse(labels: np.ndarray, predictions: np.ndarray) -> float:
    import numpy as np

    if len(labels) == 0:
        return float("nan")
    diff = np.asarray(predictions, dtype=float) - np.asarray(labels, dtype=float)
    return float(np.sqrt(np.mean(diff * diff)))


def _ranked(frame: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Rows sorted by group then score (descending), with their 1-based rank in the group."""
    import numpy as np
    import pandas as pd

    # Fixed tie-break: a permutation that does not depend on the data's order or content.
    tie_break = np.random.default_rng(0).permutation(len(frame))
    table = pd.DataFrame(
        {
            "group": pd.factorize(frame["group"].astype(str))[0],
            "score": np.asarray(scores, dtype=float),
            "grade": frame["grade"].to_numpy(dtype=float),
            "tie": tie_break,
        }
    )
    order = np.lexsort((table["tie"].to_numpy(), -table["score"].to_numpy(), table["group"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table["rank"] = table.groupby("group", sort=False).cumcount() + 1
    return table


def tie_share(frame: pd.DataFrame, scores: np.ndarray) -> float:
    """The share of a group's distinct products whose score equals another product's in the group: how much
    of a ranking the fixed tie-break decides (a constant scorer: 1.0)."""
    import pandas as pd

    table = pd.DataFrame({"group": frame["group"].astype(str).to_numpy(),
                          "product": frame["product_id"].astype(str).to_numpy(), "score": scores})
    table = table.drop_duplicates(["group", "product"])
    return float(table.duplicated(["group", "score"], keep=False).mean()) if len(table) else 0.0


def _ranking(kind: str, k: int | None, table: pd.DataFrame) -> float:
    per_group = _ranking_by_group(kind, k, table)
    return float(per_group.mean()) if len(per_group) else float("nan")


def _ranking_by_group(kind: str, k: int | None, table: pd.DataFrame) -> pd.Series:
    """The ranking metric of each group with at least one positive (indexed by the group's code)."""
    import numpy as np

    relevant = table["grade"] >= POSITIVE_GRADE
    positives = relevant.groupby(table["group"], sort=False).sum()
    judged = positives[positives > 0].index
    if kind == "mrr":
        first = table.loc[relevant, ["group", "rank"]].groupby("group", sort=False)["rank"].min()
        return (1.0 / first.reindex(judged)).astype(float)
    assert k is not None
    top = table["rank"] <= k
    if kind == "recall":
        hits = (relevant & top).groupby(table["group"], sort=False).sum()
        return (hits.reindex(judged) / positives.reindex(judged)).astype(float)
    # ndcg@k with linear gain = grade.
    gains = table["grade"].clip(lower=0.0)
    discount = 1.0 / np.log2(table["rank"].to_numpy(dtype=float) + 1.0)
    dcg = (gains * discount).where(top, 0.0).groupby(table["group"], sort=False).sum()
    ideal_sorted = table[["group", "grade"]].assign(grade=gains).sort_values(
        ["group", "grade"], ascending=[True, False], kind="stable"
    )
    ideal_rank = ideal_sorted.groupby("group", sort=False).cumcount().to_numpy() + 1
    ideal_gain = ideal_sorted["grade"].to_numpy() / np.log2(ideal_rank + 1.0)
    ideal_gain[ideal_rank > k] = 0.0
    idcg = ideal_sorted.assign(g=ideal_gain).groupby("group", sort=False)["g"].sum()
    return (dcg.reindex(judged) / idcg.reindex(judged)).astype(float)


def compute_metrics(
    names: list[str], frame: pd.DataFrame, scores: np.ndarray, *, max_grade: float = 1.0
) -> dict[str, float]:
    """The named metrics of `scores` (one per row of `frame`, which has group, label and grade).

    scores are probabilities in [0, 1] for auc and logloss; see the module docstring for the rest.
    "loss" is the trainer's own and is skipped here.
    """
    import numpy as np

    scores = np.asarray(scores, dtype=float)
    if len(scores) != len(frame):
        raise ValueError(f"{len(scores)} scores for {len(frame)} rows")
    grades = frame["grade"].to_numpy(dtype=float)
    target = grades >= POSITIVE_GRADE
    table: pd.DataFrame | None = None
    results: dict[str, float] = {}
    for name in names:
        kind, k = parse_metric(name)
        if kind == "loss":
            continue
        if kind == "auc":
            results[name] = auc(target, scores)
        elif kind == "accuracy":
            results[name] = float(np.mean((scores >= 0.5) == target)) if len(target) else float("nan")
        elif kind == "logloss":
            results[name] = logloss(target, scores)
        elif kind == "rmse":
            results[name] = rmse(frame["label"].to_numpy(dtype=float), scores * max_grade)
        else:
            if table is None:
                table = _ranked(frame, scores)
            results[name] = _ranking(kind, k, table)
    return results


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A scorer's metric minus a reference scorer's on the same rows, with a bootstrap confidence interval."""

    difference: float
    low: float
    high: float
    groups: int  # the groups resampled


def has_interval(name: str) -> bool:
    """Whether `name` splits into groups, so that paired_interval can resample them: all but auc and loss."""
    return parse_metric(name)[0] not in ("auc", "loss")


def _by_group(name: str, frame: pd.DataFrame, scores: np.ndarray, max_grade: float) -> tuple[pd.Series, pd.Series] | None:
    """Per group, (value, count) such that the metric is Σ value / Σ count (its square root for rmse): each judged
    group's own figure and 1 for the ranking metrics, the sums of the rows' terms and the rows for the others. None
    for auc, which does not split into groups, and for loss (the trainer's own)."""
    import numpy as np
    import pandas as pd

    if not has_interval(name):
        return None
    kind, k = parse_metric(name)
    scores = np.asarray(scores, dtype=float)
    if kind in ("mrr", "ndcg", "recall"):
        per_group = _ranking_by_group(kind, k, _ranked(frame, scores))
        return per_group, pd.Series(1.0, index=per_group.index)
    target = frame["grade"].to_numpy(dtype=float) >= POSITIVE_GRADE
    if kind == "logloss":
        p = np.clip(scores, _EPSILON, 1.0 - _EPSILON)
        terms = -np.where(target, np.log(p), np.log(1.0 - p))
    elif kind == "accuracy":
        terms = ((scores >= 0.5) == target).astype(float)
    else:  # rmse
        terms = (scores * max_grade - frame["label"].to_numpy(dtype=float)) ** 2
    grouped = pd.Series(terms).groupby(pd.factorize(frame["group"].astype(str))[0])
    return grouped.sum(), grouped.count().astype(float)


def paired_interval(name: str, frame: pd.DataFrame, scores: np.ndarray, reference: np.ndarray, *,
                    max_grade: float = 1.0, level: float = CONFIDENCE_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> Interval | None:
    """`name` of `scores` minus `name` of `reference` on `frame`, with a percentile bootstrap interval that resamples
    whole groups (a query's or a user's rows are not independent of each other), the same groups for both scorers
    (paired). None where the metric does not split into groups (auc) or fewer than two groups count."""
    import numpy as np
    from scipy.stats import bootstrap

    own = _by_group(name, frame, scores, max_grade)
    other = _by_group(name, frame, reference, max_grade)
    if own is None or other is None or len(own[0]) < 2:
        return None
    values, counts = own[0].to_numpy(dtype=float), own[1].to_numpy(dtype=float)
    reference_values = other[0].reindex(own[0].index).to_numpy(dtype=float)  # the same groups: grades decide them
    finish = np.sqrt if parse_metric(name)[0] == "rmse" else np.asarray

    def statistic(a: np.ndarray, b: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        total = n.sum(axis=axis)
        return finish(a.sum(axis=axis) / total) - finish(b.sum(axis=axis) / total)  # type: ignore[no-any-return]

    difference = float(statistic(values, reference_values, counts))
    if np.array_equal(values, reference_values):  # no spread to resample: the interval is the point
        return Interval(difference, difference, difference, len(values))
    result = bootstrap((values, reference_values, counts), statistic, paired=True, vectorized=True,
                       n_resamples=resamples, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(difference, float(low), float(high), len(values))
