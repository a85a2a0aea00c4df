"""The exploration slice (RecModelDeployment spec.serving.eventLog.exploration).

A share of ranked responses shows the model's top k in a uniformly random order. Shoppers look at
the top of a list more than at its bottom, so on the other responses the items the serving model put
first also get the clicks, and a log of them favours that model. On the slice, position does not
depend on any model: its clicks judge every model alike (recops.train evaluates on it, "debiased").
Every impression also logs its propensity, the probability that the serving policy (the model's order
with probability 1 - share, a random order with probability share) showed the item where it was shown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Exploration:
    share: float  # in [0, 1]
    rng: random.Random = field(default_factory=random.Random)

    def display_order(self, k: int) -> tuple[list[int], bool]:
        """Where each of the model's top k goes: positions into the ranked list in display order, and whether
        the order was drawn at random."""
        order = list(range(k))
        if k > 1 and self.share > 0 and self.rng.random() < self.share:
            self.rng.shuffle(order)
            return order, True
        return order, False

    def propensity(self, ranked: int, shown: int, k: int) -> float:
        """P(the item the model ranked at `ranked` is shown at `shown`) under this policy, for a list of k."""
        return (1.0 - self.share) * (ranked == shown) + self.share / k
