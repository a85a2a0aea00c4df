"""The exploration slice: a random order for a share of responses, and every impression's propensity."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from recops.serve.exploration import Exploration


@pytest.mark.parametrize("share", [0.0, 0.05, 0.3, 1.0])
def test_propensities_are_the_policys_probabilities(share: float) -> None:
    k, draws = 4, 20_000
    exploration = Exploration(share, random.Random(7))
    seen: Counter[tuple[int, int]] = Counter()
    explored = 0
    for _ in range(draws):
        order, was_explored = exploration.display_order(k)
        assert sorted(order) == list(range(k))
        explored += was_explored
        if not was_explored:
            assert order == list(range(k))
        seen.update((ranked, shown) for shown, ranked in enumerate(order))
    for ranked in range(k):
        # Each item is shown somewhere: its propensities over the positions sum to 1, and so over the items.
        assert sum(exploration.propensity(ranked, shown, k) for shown in range(k)) == pytest.approx(1.0)
        for shown in range(k):
            expected = exploration.propensity(ranked, shown, k)
            assert seen[ranked, shown] / draws == pytest.approx(expected, abs=0.015)
    assert explored / draws == pytest.approx(share, abs=0.015)


def test_one_item_is_never_explored_and_always_shown_where_ranked() -> None:
    exploration = Exploration(1.0, random.Random(0))
    assert exploration.display_order(1) == ([0], False)
    assert exploration.propensity(0, 0, 1) == pytest.approx(1.0)
