"""The traffic driver's shop: the same world as generate_shop, and a shift that lowers clicks."""

from __future__ import annotations

import numpy as np

from recops.shop.synth import BRANDS, generate_shop
from recops.shop.traffic import ShopWorld


def test_world_is_the_shop_generate_shop_draws() -> None:
    world = ShopWorld.generate(users=50, products=120, seed=7)
    shop = generate_shop(users=50, products=120, sessions=10, seed=7)
    assert world.catalogue.frame.equals(shop["catalogue"])
    assert sorted(world.queries["text"]) == sorted(shop["queries"]["query"])
    # The hidden tastes too: each user's favourite brand before the shift.
    favourite = np.array([b.argmax() for b in world.affinity[0]])
    assert list(shop["users"]["favourite_brand_before"]) == [BRANDS[i] for i in favourite]


def expected_ctr(world: ShopWorld, shifted: bool, sessions: int = 1500) -> float:
    rng = np.random.default_rng(3)
    shown_total = clicks = 0
    for _ in range(sessions):
        user, query = world.session(rng)
        shown = world.candidates(rng, query, 20)[:5]
        reactions = world.reactions(rng, world.relevance(rng, user, query, shown, shifted))
        shown_total += len(shown)
        clicks += sum("click" in events for events in reactions)
    return clicks / shown_total


def test_the_preference_shift_lowers_the_click_through_rate_of_the_candidates() -> None:
    world = ShopWorld.generate(seed=0)
    before, after = expected_ctr(world, False), expected_ctr(world, True)
    assert after < 0.75 * before, (before, after)
