"""The exploration slice (RecModelDeployment spec.serving.eventLog.exploration).

A share of logged responses shows k candidates drawn uniformly at random from all the request's
candidates, in a random order. Elsewhere the serving model decides which items are shown at all and
which come first, and shoppers click what is shown and on top, so a log of those responses favours
that model (selection and position bias). On the slice neither depends on any model: its clicks judge
every model alike (recops.train evaluates on it, "debiased").

Every impression also logs its propensity: the probability that the serving policy (the model's top k
in its order with probability 1 - share, the random draw with probability share) showed the item at
that position.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Exploration:
    share: float  # in [0, 1]
    rng: random.Random = field(default_factory=random.Random)

    def display_order(self, n: int, k: int) -> tuple[list[int], bool]:
        """Which of n ranked candidates are shown, in display order (positions in the model's ranking), and
        whether they were drawn at random."""
        if n > 1 and self.share > 0 and self.rng.random() < self.share:
            return self.rng.sample(range(n), k), True
        return list(range(k)), False

    def propensity(self, ranked: int, shown: int, n: int, k: int) -> float:
        """P(the candidate the model ranked at `ranked` is shown at `shown`), with n candidates and k shown."""
        return (1.0 - self.share) * (ranked == shown < k) + self.share / n
