"""A learnt lexical feature for the fusion: a sparse logistic regression over the words of (context, item text).

A cross-encoder fine-tuned on a CPU budget under-learns which words of an item make shoppers click
and which query word goes with which item word. This model learns that from the train split's
clicks directly, over binary features of the distinct tokens (`recops.fusion.tokens`) of a pair:

    "q|d"  query token q with item token d   (e.g. "jacket|red": which items answer which words)
    "=t"   token t in both                   (e.g. "=red": a colour asked for and found)
    "|d"   item token d                      (e.g. "|waterproof": what clicks whatever the query)

Its score (the linear log-odds, no bias) is one feature of `recops.fusion` (`lexical`), weighed on
validation like the others, and kept only where, cross-fitted on the train split, it ranks held-out queries
clearly better beside BM25 and popularity (`recops.train.evaluate.lexical_helps`). Fitted with scikit-learn on the train split only; the weights are saved
beside fusion.json (`lexical.json`) and applied with pure Python, by the trainer and the server alike.
A feature never seen in training weighs 0, so any query and item text can be scored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recops.fusion import pair_scores, tokens

if TYPE_CHECKING:
    import numpy as np

LEXICAL_FILE = "lexical.json"
# Inverse L2 strength in scikit-learn's terms (the penalty against the summed impression weights). Strong:
# most word pairs are seen a few times; chosen on the synthetic shop's tuning seeds 7-10 (docs/finetunejob.md).
LEXICAL_C = 0.01
MIN_TRAIN_PAIRS = 20  # fewer distinct (context, item) pairs: no lexical model


def pair_features(context: str, text: str) -> list[str]:
    """The names of the binary features of one (context, item text) pair."""
    query, item = set(tokens(context)), set(tokens(text))
    names = [f"{q}|{d}" for q in query for d in item]
    names += [f"={t}" for t in query & item]
    names += [f"|{d}" for d in item]
    return names


@dataclass
class LexicalModel:
    weights: dict[str, float]  # feature name -> weight (features never seen weigh 0)

    def score(self, context: str, text: str) -> float:
        return sum(self.weights.get(name, 0.0) for name in pair_features(context, text))

    def scores(self, contexts: Sequence[str], texts: Sequence[str]) -> list[float]:
        """The score of each (context, text) pair."""
        return pair_scores(self.score, contexts, texts)

    def save(self, directory: Path) -> None:
        (directory / LEXICAL_FILE).write_text(json.dumps({"weights": self.weights}, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> LexicalModel | None:
        """The model saved in `directory`; None where there is none (a model from before it)."""
        path = directory / LEXICAL_FILE
        if not path.exists():
            return None
        return cls(weights={str(k): float(v) for k, v in json.loads(path.read_text())["weights"].items()})


def fit_lexical(contexts: Sequence[str], texts: Sequence[str], targets: Sequence[float] | np.ndarray,
                c: float = LEXICAL_C) -> LexicalModel | None:
    """Fit on the train split's impressions (`targets`: 0/1 clicked). Repeated impressions of a (context,
    text) pair become one row of each label weighted by their counts (the same loss, fewer rows). None where
    the rows have too few distinct pairs or a single label."""
    import numpy as np
    from scipy.sparse import vstack
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    clicks: dict[tuple[str, str], list[float]] = {}
    for context, text, target in zip(contexts, texts, targets, strict=True):
        counts = clicks.setdefault((context, text), [0.0, 0.0])
        counts[0] += float(target)
        counts[1] += 1.0
    positives = np.array([clicked for clicked, _ in clicks.values()])
    negatives = np.array([shown - clicked for clicked, shown in clicks.values()])
    if len(clicks) < MIN_TRAIN_PAIRS or positives.sum() == 0 or negatives.sum() == 0:
        return None
    vectorizer = DictVectorizer()
    x = vectorizer.fit_transform([dict.fromkeys(pair_features(*pair), 1.0) for pair in clicks])
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(vstack([x, x]), np.concatenate([np.ones(len(clicks)), np.zeros(len(clicks))]),
              sample_weight=np.concatenate([positives, negatives]))
    return LexicalModel(weights={name: round(float(weight), 6)
                                 for name, weight in zip(vectorizer.get_feature_names_out(), model.coef_[0], strict=True)
                                 if weight != 0.0})
