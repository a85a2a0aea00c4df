"""The exploration slice: random candidates in a random order for a share of responses, and every
impression's propensity."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from recops.serve.exploration import Exploration


@pytest.mark.parametrize("share", [0.0, 0.05, 0.3, 1.0])
def test_propensities_are_the_policys_probabilities(share: float) -> None:
    n, k, draws = 6, 3, 30_000
    exploration = Exploration(share, random.Random(7))
    seen: Counter[tuple[int, int]] = Counter()
    explored = 0
    for _ in range(draws):
        order, was_explored = exploration.display_order(n, k)
        assert len(order) == len(set(order)) == k and all(0 <= j < n for j in order)
        explored += was_explored
        if not was_explored:
            assert order == list(range(k))  # the model's top k, in its order
        seen.update((ranked, shown) for shown, ranked in enumerate(order))
    for shown in range(k):
        # Some candidate is shown at every position: the propensities of a position sum to 1.
        assert sum(exploration.propensity(ranked, shown, n, k) for ranked in range(n)) == pytest.approx(1.0)
        for ranked in range(n):
            expected = exploration.propensity(ranked, shown, n, k)
            assert seen[ranked, shown] / draws == pytest.approx(expected, abs=0.012)
    assert explored / draws == pytest.approx(share, abs=0.012)


def test_one_candidate_is_never_explored_and_always_shown() -> None:
    exploration = Exploration(1.0, random.Random(0))
    assert exploration.display_order(1, 1) == ([0], False)
    assert exploration.propensity(0, 0, 1, 1) == pytest.approx(1.0)
