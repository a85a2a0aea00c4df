"""Live traffic from the synthetic shop: shoppers query a running `recops serve`, look at what
it ranks, and click, add to cart and buy by the shop's hidden relevance.

The world (catalogue, queries, tastes) is the one `recops.shop.synth.generate_shop` draws for
the same seed and sizes, so a model trained on `recops data synth` output serves the same shop.
With the preference shift on, tastes are those after `shift_day`: the trends flip and brand
affinities are redrawn.

The shop's retrieval stage (what it sends the ranker as candidates) is built on yesterday's
bestsellers: the best text matches for the query, boosted by the colours and features that
were popular before the shift. So when the shift comes, the candidates lean to what shoppers
no longer want and the click-through rate falls, whatever model ranks them; a ranker retrained
on the new event log recovers part of it by ordering the candidates by the new tastes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recops.shop import synth

# How much the retrieval stage favours what sold before the shift (see the module doc).
BESTSELLER_BOOST = 3.0

if TYPE_CHECKING:
    import numpy as np


@dataclass
class ShopWorld:
    """The hidden state of a synthetic shop (the draws of generate_shop, in its order)."""

    catalogue: Any  # synth._Catalogue
    queries: dict[str, np.ndarray]
    trend: tuple[np.ndarray, np.ndarray]  # (before, after) per colour
    style: tuple[np.ndarray, np.ndarray]  # (before, after) per feature
    affinity: tuple[np.ndarray, np.ndarray]  # (before, after) per user and brand
    price_dislike: np.ndarray
    category_taste: np.ndarray
    activity: np.ndarray

    @classmethod
    def generate(cls, *, users: int = 200, products: int = 300, seed: int = 0, queries: int | None = None) -> ShopWorld:
        import numpy as np

        rng = np.random.default_rng(seed)
        catalogue = synth._catalogue(rng, products)
        n_queries = queries or max(10, min(products // 3, 400))
        qs = synth._queries(rng, n_queries, catalogue)
        _, _, features = synth._vocabulary()
        n_colours, n_brands = len(synth.COLOURS), len(synth.BRANDS)
        trend_before = rng.normal(0.0, 0.9, n_colours)
        trend_after = -trend_before + rng.normal(0.0, 0.3, n_colours)
        style_before = rng.normal(0.0, 0.5, len(features))
        style_after = rng.normal(0.0, 0.5, len(features))
        affinity_before = rng.normal(0.0, 1.0, (users, n_brands)) * (rng.random((users, n_brands)) < 0.3)
        affinity_after = rng.normal(0.0, 1.0, (users, n_brands)) * (rng.random((users, n_brands)) < 0.3)
        price_dislike = rng.gamma(2.0, 0.25, users)
        category_taste = rng.dirichlet(np.full(len(synth.CATEGORIES), 0.5), users)
        activity = rng.pareto(1.5, users) + 1.0
        return cls(catalogue, qs, (trend_before, trend_after), (style_before, style_after),
                   (affinity_before, affinity_after), price_dislike, category_taste, activity)

    @property
    def users(self) -> int:
        return len(self.price_dislike)

    def product_id(self, index: int) -> str:
        return str(self.catalogue.frame["product_id"].iat[index])

    def title(self, index: int) -> str:
        return str(self.catalogue.frame["title"].iat[index])

    def session(self, rng: np.random.Generator) -> tuple[int, int]:
        """(user, query) of a new search session: active users shop more, in the categories they like."""
        import numpy as np

        user = int(rng.choice(self.users, p=self.activity / self.activity.sum()))
        category = int((self.category_taste[user].cumsum() > rng.random()).argmax())
        pool = np.flatnonzero(self.queries["noun"] // 4 == category)
        if not len(pool):
            pool = np.arange(len(self.queries["text"]))
        return user, int(pool[rng.integers(0, len(pool))])

    def candidates(self, rng: np.random.Generator, query: int, count: int) -> np.ndarray:
        """The retrieval stage: best text matches plus yesterday's popularity, a little exploration."""
        import numpy as np

        products = np.arange(len(self.catalogue.price))
        match = synth._match(self.queries, self.catalogue, np.full(len(products), query), products)
        popular = self.trend[0][self.catalogue.colour] + self.style[0][self.catalogue.feature_id]
        score = match + BESTSELLER_BOOST * popular + rng.random(len(products)) * 0.5
        chosen: np.ndarray = np.argsort(-score, kind="stable")[: min(count, len(products))]
        return chosen

    def relevance(self, rng: np.random.Generator, user: int, query: int, shown: np.ndarray, shifted: bool) -> np.ndarray:
        """The hidden relevance of each shown product for this session (as generate_shop defines it)."""
        import numpy as np

        after = 1 if shifted else 0
        cat = self.catalogue
        category_median = np.array([synth.CATEGORY_PRICE[c] for c in synth.CATEGORIES])[cat.category[shown]]
        price_term = self.price_dislike[user] * np.log(cat.price[shown] / category_median)
        value: np.ndarray = (
            synth._match(self.queries, cat, np.full(len(shown), query), shown)
            + self.trend[after][cat.colour[shown]]
            + self.style[after][cat.feature_id[shown]]
            + self.affinity[after][user, cat.brand[shown]]
            - price_term
            + rng.normal(0.0, 0.5, len(shown))
        )
        return value

    def reactions(self, rng: np.random.Generator, relevance: np.ndarray) -> list[list[str]]:
        """The events on each shown item, in rank order (position bias: fewer look far down)."""
        import numpy as np

        k = len(relevance)
        examined = rng.random(k) < 1.0 / np.sqrt(1.0 + np.arange(k))
        clicked = examined & (rng.random(k) < synth._sigmoid(1.1 * relevance - 3.0))
        carted = clicked & (rng.random(k) < synth._sigmoid(relevance - 4.5))
        bought = carted & (rng.random(k) < synth._sigmoid(relevance - 4.0))
        return [
            [event for event, happened in (("click", c), ("add_to_cart", a), ("purchase", b)) if happened]
            for c, a, b in zip(clicked, carted, bought, strict=True)
        ]


@dataclass
class TrafficStats:
    requests: int = 0
    failed_requests: int = 0
    impressions: int = 0
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    rejected_feedback: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "failedRequests": self.failed_requests, "impressions": self.impressions,
            "clicks": self.clicks, "addToCarts": self.add_to_carts, "purchases": self.purchases,
            "rejectedFeedback": self.rejected_feedback, "ctr": round(self.ctr, 4), "errors": self.errors[:5],
        }


def _post(url: str, payload: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body or b"{}")
        except ValueError:
            return error.code, {"error": body.decode(errors="replace")[:200]}


def drive(
    endpoint: str,
    world: ShopWorld,
    *,
    requests: int | None = None,
    duration: float | None = None,
    rate: float = 10.0,
    shifted: bool = False,
    candidates: int = 10,
    top_k: int = 5,
    seed: int = 1,
    timeout: float = 10.0,
    stats: TrafficStats | None = None,
) -> TrafficStats:
    """Send search sessions to `endpoint` (a `recops serve` base URL) at about `rate` per second,
    each followed by the shopper's feedback, until `requests` were sent or `duration` passed."""
    import numpy as np

    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    rng = np.random.default_rng(seed)
    stats = stats or TrafficStats()
    base = endpoint.rstrip("/")
    started = time.monotonic()
    sent = 0
    while (requests is None or sent < requests) and (duration is None or time.monotonic() - started < duration):
        due = started + sent / rate if rate > 0 else 0.0
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        sent += 1
        user, query = world.session(rng)
        pool = world.candidates(rng, query, candidates)
        payload = {
            "query": str(world.queries["text"][query]),
            "user": {"id": f"user_{user:06d}"},
            "candidates": [{"id": world.product_id(i), "text": world.title(i)} for i in pool],
            "topK": top_k,
        }
        stats.requests += 1
        try:
            status, answer = _post(f"{base}/v1/rank", payload, timeout)
        except OSError as error:
            status, answer = 0, {"error": str(error)}
        if status != 200:
            stats.failed_requests += 1
            stats.errors.append(f"rank {status}: {answer.get('error')}")
            continue
        index_of = {world.product_id(i): int(i) for i in pool}
        shown_ids = [item["id"] for item in answer["items"]]
        shown = np.array([index_of[item] for item in shown_ids], dtype=np.int64)
        stats.impressions += len(shown)
        relevance = world.relevance(rng, user, query, shown, shifted)
        for item, events in zip(shown_ids, world.reactions(rng, relevance), strict=True):
            for event in events:
                try:
                    code, _ = _post(f"{base}/v1/feedback", {"requestId": answer["requestId"], "itemId": item,
                                                            "event": event}, timeout)
                except OSError:
                    code = 0
                if code != 200:
                    stats.rejected_feedback += 1
                    continue
                if event == "click":
                    stats.clicks += 1
                elif event == "add_to_cart":
                    stats.add_to_carts += 1
                else:
                    stats.purchases += 1
    return stats


# --- `recops data traffic` ------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True, help="base URL of a running recops serve (e.g. http://127.0.0.1:8080)")
    parser.add_argument("--requests", type=int, default=None, help="search sessions to send (default: until --duration)")
    parser.add_argument("--duration", default=None, help="how long to send, a Go duration such as 90s (default: --requests)")
    parser.add_argument("--rate", type=float, default=10.0, help="sessions per second (default 10)")
    parser.add_argument("--shift", action="store_true", help="shoppers have the tastes after the preference shift")
    parser.add_argument("--candidates", type=int, default=10, help="candidates sent per request (default 10)")
    parser.add_argument("--top-k", type=int, default=5, help="items shown per response (default 5)")
    parser.add_argument("--users", type=int, default=200, help="users of the shop (as recops data synth, default 200)")
    parser.add_argument("--products", type=int, default=300, help="catalogue size (as recops data synth, default 300)")
    parser.add_argument("--queries", type=int, default=None, help="distinct queries (as recops data synth)")
    parser.add_argument("--seed", type=int, default=0, help="the shop's seed (as recops data synth, default 0)")
    parser.add_argument("--traffic-seed", type=int, default=1, help="seed of the sessions and reactions (default 1)")


def main(args: argparse.Namespace) -> int:
    from recops.api.common import parse_duration

    if args.requests is None and args.duration is None:
        print("recops data traffic: give --requests or --duration", file=sys.stderr)
        return 2
    duration = parse_duration(args.duration).total_seconds() if args.duration else None
    world = ShopWorld.generate(users=args.users, products=args.products, seed=args.seed, queries=args.queries)
    stats = drive(args.endpoint, world, requests=args.requests, duration=duration, rate=args.rate, shifted=args.shift,
                  candidates=args.candidates, top_k=args.top_k, seed=args.traffic_seed)
    print(json.dumps(stats.to_dict()))
    return 0 if stats.requests > stats.failed_requests else 1
