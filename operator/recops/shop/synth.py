"""A synthetic shop: a catalogue, users with hidden preferences, queries, and sessions of
impressions, clicks, add-to-carts and purchases driven by a hidden relevance.

The hidden relevance of a product to a session is

    match(query words, title words)        text-learnable: the noun, colour, feature and brand
  + trend[colour] + style[feature]         what everyone likes now: text-learnable too
  + user's brand affinity - price dislike  personal, hidden (user IDs are no model input)
  + noise

and from `shift_day` on, the trends flip and every user's brand affinities are redrawn, so what
users click changes: a model trained before the shift ranks yesterday's favourites first and
its click-through rate falls. Everything is vectorised numpy; 300k rows take a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# category -> (nouns, features)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "footwear": (("sneakers", "boots", "sandals", "loafers"), ("running", "waterproof", "leather", "hiking")),
    "outerwear": (("jacket", "parka", "raincoat", "vest"), ("waterproof", "insulated", "lightweight", "wool")),
    "bags": (("backpack", "tote", "duffel", "wallet"), ("leather", "travel", "laptop", "waterproof")),
    "audio": (("headphones", "earbuds", "speaker", "soundbar"), ("wireless", "noise-cancelling", "portable", "bass")),
    "kitchen": (("kettle", "blender", "mug", "skillet"), ("electric", "ceramic", "cast-iron", "insulated")),
    "home": (("lamp", "rug", "cushion", "blanket"), ("wool", "vintage", "minimalist", "cotton")),
    "sports": (("yoga mat", "dumbbells", "water bottle", "tent"), ("lightweight", "adjustable", "insulated", "travel")),
    "watches": (("watch", "smartwatch", "strap", "stopwatch"), ("digital", "leather", "waterproof", "solar")),
}
COLOURS = ("black", "white", "red", "blue", "green", "grey", "brown", "pink", "navy", "olive")
BRANDS = (
    "Acorn", "Borealis", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Harbor", "Ivy", "Juniper",
    "Kestrel", "Lumen", "Meridian", "Nimbus", "Orbit", "Pinecrest", "Quartz", "Ridge", "Summit", "Tundra",
)
CATEGORY_PRICE = {  # median price per category (log-normal around it)
    "footwear": 80.0, "outerwear": 120.0, "bags": 60.0, "audio": 90.0,
    "kitchen": 40.0, "home": 50.0, "sports": 35.0, "watches": 150.0,
}
START_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class _Catalogue:
    category: np.ndarray  # int index into CATEGORIES
    noun: np.ndarray  # int index into the category's nouns (global noun id below)
    noun_id: np.ndarray
    feature_id: np.ndarray  # global feature word id
    colour: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    frame: pd.DataFrame


def _vocabulary() -> tuple[list[str], list[str], list[str]]:
    categories = list(CATEGORIES)
    nouns = [noun for nouns, _ in CATEGORIES.values() for noun in nouns]
    features = sorted({feature for _, features in CATEGORIES.values() for feature in features})
    return categories, nouns, features


def _catalogue(rng: np.random.Generator, n_products: int) -> _Catalogue:
    import numpy as np
    import pandas as pd

    categories, nouns, features = _vocabulary()
    feature_index = {name: i for i, name in enumerate(features)}
    category = rng.integers(0, len(categories), n_products)
    noun_local = rng.integers(0, 4, n_products)
    noun_id = category * 4 + noun_local
    feature_local = rng.integers(0, 4, n_products)
    category_features = np.array(
        [[feature_index[f] for f in CATEGORIES[name][1]] for name in categories], dtype=np.int64
    )
    feature_id = category_features[category, feature_local]
    colour = rng.integers(0, len(COLOURS), n_products)
    # Brands lean to a few categories each, as real brands do.
    brand = (category * 3 + rng.integers(0, 6, n_products)) % len(BRANDS)
    medians = np.array([CATEGORY_PRICE[name] for name in categories])
    price = np.round(medians[category] * np.exp(rng.normal(0.0, 0.45, n_products)), 2)
    price = np.maximum(price, 1.0) - 0.01
    series = np.arange(n_products) % 90 + 10  # a model number keeps titles distinct
    nouns_arr = np.array(nouns, dtype=object)
    title = (
        np.array(BRANDS, dtype=object)[brand] + " "
        + np.array(COLOURS, dtype=object)[colour] + " "
        + np.array(features, dtype=object)[feature_id] + " "
        + nouns_arr[noun_id] + " " + series.astype(str)
    )
    frame = pd.DataFrame(
        {
            "product_id": [f"p{i:06d}" for i in range(n_products)],
            "title": title.astype(str),
            "brand": np.array(BRANDS)[brand],
            "category": np.array(categories)[category],
            "colour": np.array(COLOURS)[colour],
            "price": price,
        }
    )
    return _Catalogue(category, noun_local, noun_id, feature_id, colour, brand, price, frame)


def _queries(rng: np.random.Generator, n_queries: int, catalogue: _Catalogue) -> dict[str, np.ndarray]:
    """Queries built like shoppers type them: a noun, maybe a colour, a feature or a brand."""
    import numpy as np

    _, nouns, features = _vocabulary()
    # Queries describe things the shop sells: start from a random product's attributes.
    seed_products = rng.integers(0, len(catalogue.price), n_queries)
    noun = catalogue.noun_id[seed_products]
    use_colour = rng.random(n_queries) < 0.45
    use_feature = rng.random(n_queries) < 0.35
    use_brand = rng.random(n_queries) < 0.2
    colour = np.where(use_colour, catalogue.colour[seed_products], -1)
    feature = np.where(use_feature, catalogue.feature_id[seed_products], -1)
    brand = np.where(use_brand, catalogue.brand[seed_products], -1)
    text = []
    for i in range(n_queries):
        words = []
        if brand[i] >= 0:
            words.append(BRANDS[brand[i]].lower())
        if colour[i] >= 0:
            words.append(COLOURS[colour[i]])
        if feature[i] >= 0:
            words.append(features[feature[i]])
        words.append(nouns[noun[i]])
        text.append(" ".join(words))
    # Identical texts are one query: keep the first of each.
    _, first = np.unique(np.array(text), return_index=True)
    keep = np.sort(first)
    return {
        "text": np.array(text, dtype=object)[keep],
        "noun": noun[keep],
        "colour": colour[keep],
        "feature": feature[keep],
        "brand": brand[keep],
    }


def _match(queries: dict[str, np.ndarray], catalogue: _Catalogue, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """How well product p's title answers query q (arrays of indices of the same shape)."""
    import numpy as np

    noun_match = queries["noun"][q] == catalogue.noun_id[p]
    same_category = (queries["noun"][q] // 4) == catalogue.category[p]
    score = np.where(noun_match, 2.5, np.where(same_category, 0.5, -1.5))
    for key, attribute in (("colour", catalogue.colour), ("feature", catalogue.feature_id), ("brand", catalogue.brand)):
        wanted = queries[key][q]
        asked = wanted >= 0
        score = score + np.where(asked, np.where(wanted == attribute[p], 1.2, -0.8), 0.0)
    result: np.ndarray = score
    return result


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import numpy as np

    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


def generate_shop(
    *,
    users: int = 200,
    products: int = 300,
    sessions: int = 1000,
    days: int = 14,
    shift_day: int | None = None,
    seed: int = 0,
    queries: int | None = None,
    impressions_per_session: int = 10,
    start_epoch: float = START_EPOCH,
) -> dict[str, pd.DataFrame]:
    """A shop's catalogue and event log.

    Returns {"events", "catalogue", "users", "queries"}. "events" has one row per event with the
    default FineTuneJob field mapping: request_id, query, user_id, product_id, title, brand,
    category, price, event (impression, click, add_to_cart, purchase), position and timestamp
    (UTC). "users" holds the hidden preferences (for tests; never training input).
    """
    import numpy as np
    import pandas as pd

    if min(users, products, sessions, days) < 1:
        raise ValueError("users, products, sessions and days must be at least 1")
    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng, products)
    n_queries = queries or max(10, min(products // 3, 400))
    qs = _queries(rng, n_queries, catalogue)
    n_q = len(qs["text"])
    _, _, features = _vocabulary()

    # Hidden tastes: everyone's colour and feature trends, flipped from the shift day on.
    trend_before = rng.normal(0.0, 0.9, len(COLOURS))
    trend_after = -trend_before + rng.normal(0.0, 0.3, len(COLOURS))
    style_before = rng.normal(0.0, 0.5, len(features))
    style_after = rng.normal(0.0, 0.5, len(features))
    # Each user's brand affinity (sparse), price dislike and favourite categories.
    affinity_before = rng.normal(0.0, 1.0, (users, len(BRANDS))) * (rng.random((users, len(BRANDS))) < 0.3)
    affinity_after = rng.normal(0.0, 1.0, (users, len(BRANDS))) * (rng.random((users, len(BRANDS))) < 0.3)
    price_dislike = rng.gamma(2.0, 0.25, users)
    category_taste = rng.dirichlet(np.full(len(CATEGORIES), 0.5), users)
    activity = rng.pareto(1.5, users) + 1.0  # a few users shop a lot

    # Sessions: who, when, which query (queries of the categories the user likes).
    user = rng.choice(users, sessions, p=activity / activity.sum())
    day = rng.integers(0, days, sessions)
    start = start_epoch + day * SECONDS_PER_DAY + rng.uniform(0, SECONDS_PER_DAY, sessions)
    query_category = qs["noun"] // 4
    category_of_session = (category_taste[user].cumsum(axis=1) > rng.random((sessions, 1))).argmax(axis=1)
    by_category = [np.flatnonzero(query_category == c) for c in range(len(CATEGORIES))]
    fallback = rng.integers(0, n_q, sessions)
    query = np.array(
        [
            pool[rng.integers(0, len(pool))] if len(pool) else fallback[i]
            for i, pool in ((i, by_category[c]) for i, c in enumerate(category_of_session))
        ],
        dtype=np.int64,
    ) if sessions else np.zeros(0, dtype=np.int64)

    # What the shop shows: per query a candidate pool (best text matches plus some exploration),
    # from which each session draws its k items by a noisy text ranker (Gumbel top-k).
    k = min(impressions_per_session, products)
    pool_size = min(products, max(4 * k, 40))
    all_products = np.arange(products)
    match_all = _match(qs, catalogue, np.repeat(np.arange(n_q), products), np.tile(all_products, n_q)).reshape(
        n_q, products
    )
    exploration = rng.random((n_q, products)) * 0.5
    pools = np.argsort(-(match_all + exploration), axis=1, kind="stable")[:, :pool_size]
    pool_scores = np.take_along_axis(match_all, pools, axis=1)
    noisy = pool_scores[query] + rng.gumbel(0.0, 1.0, (sessions, pool_size))
    chosen = np.argsort(-noisy, axis=1, kind="stable")[:, :k]
    shown = np.take_along_axis(pools[query], chosen, axis=1)  # (sessions, k) products, in rank order

    # Hidden relevance of each shown item in its session.
    after = (day >= shift_day) if shift_day is not None else np.zeros(sessions, dtype=bool)
    rows_user = np.repeat(user, k).reshape(sessions, k)
    rows_after = np.repeat(after, k).reshape(sessions, k)
    trend = np.where(rows_after, trend_after[catalogue.colour[shown]], trend_before[catalogue.colour[shown]])
    style = np.where(rows_after, style_after[catalogue.feature_id[shown]], style_before[catalogue.feature_id[shown]])
    brand_taste = np.where(
        rows_after,
        affinity_after[rows_user, catalogue.brand[shown]],
        affinity_before[rows_user, catalogue.brand[shown]],
    )
    category_median = np.array([CATEGORY_PRICE[c] for c in CATEGORIES])[catalogue.category[shown]]
    price_term = price_dislike[rows_user] * np.log(catalogue.price[shown] / category_median)
    query_match = np.repeat(query, k).reshape(sessions, k)
    relevance = (
        _match(qs, catalogue, query_match, shown) + trend + style + brand_taste - price_term
        + rng.normal(0.0, 0.5, (sessions, k))
    )
    # Position bias: users look less far down the list.
    examined = rng.random((sessions, k)) < 1.0 / np.sqrt(1.0 + np.arange(k))[None, :]
    clicked = examined & (rng.random((sessions, k)) < _sigmoid(1.1 * relevance - 3.0))
    carted = clicked & (rng.random((sessions, k)) < _sigmoid(relevance - 4.5))
    bought = carted & (rng.random((sessions, k)) < _sigmoid(relevance - 4.0 - price_term))

    # Events, one row each; later events a little after the impression.
    session_ids = np.repeat(np.arange(sessions), k).reshape(sessions, k)
    positions = np.tile(np.arange(k), (sessions, 1))
    impression_time = np.repeat(start, k).reshape(sessions, k) + positions * 0.01
    frames = []
    for name, mask, delay in (
        ("impression", np.ones_like(clicked), (0.0, 0.0)),
        ("click", clicked, (2.0, 60.0)),
        ("add_to_cart", carted, (60.0, 300.0)),
        ("purchase", bought, (300.0, 1800.0)),
    ):
        count = int(mask.sum())
        frames.append(
            {
                "session": session_ids[mask],
                "product": shown[mask],
                "position": positions[mask],
                "event": np.full(count, name, dtype=object),
                "time": impression_time[mask] + rng.uniform(*delay, count),
                "relevance": relevance[mask],
            }
        )
    merged = {key: np.concatenate([f[key] for f in frames]) for key in frames[0]}
    order = np.lexsort((merged["time"], merged["session"]))
    merged = {key: value[order] for key, value in merged.items()}
    session = merged["session"]
    product = merged["product"]
    events = pd.DataFrame(
        {
            "request_id": np.char.add("r", np.char.zfill(session.astype(str), 8)) if len(session) else [],
            "query": qs["text"][query[session]].astype(str),
            "user_id": np.char.add("user_", np.char.zfill(user[session].astype(str), 6)) if len(session) else [],
            "product_id": catalogue.frame["product_id"].to_numpy()[product],
            "title": catalogue.frame["title"].to_numpy()[product],
            "brand": catalogue.frame["brand"].to_numpy()[product],
            "category": catalogue.frame["category"].to_numpy()[product],
            "price": catalogue.price[product],
            "event": merged["event"].astype(str),
            "position": merged["position"].astype(np.int64),
            "timestamp": pd.to_datetime(np.round(merged["time"] * 1000.0).astype(np.int64), unit="ms", utc=True),
        }
    )
    users_frame = pd.DataFrame(
        {
            "user_id": [f"user_{i:06d}" for i in range(users)],
            "price_dislike": price_dislike,
            "favourite_category": np.array(list(CATEGORIES))[category_taste.argmax(axis=1)],
            "favourite_brand_before": np.array(BRANDS)[affinity_before.argmax(axis=1)],
            "favourite_brand_after": np.array(BRANDS)[affinity_after.argmax(axis=1)],
        }
    )
    queries_frame = pd.DataFrame({"query": qs["text"].astype(str), "category": np.array(list(CATEGORIES))[query_category]})
    return {"events": events, "catalogue": catalogue.frame, "users": users_frame, "queries": queries_frame}


def generate_graded(*, products: int = 600, queries: int = 200, per_query: int = 30, seed: int = 0) -> pd.DataFrame:
    """Search-relevance judgements like a human-graded export: (query, product_id, title, grade 1-3), for
    each query `per_query` products from its candidate pool (good text matches and some others). The grade
    bins the hidden relevance (text match + the colour and feature trends + noise) at its terciles; rows are
    sorted by product, as exports often are."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng, products)
    qs = _queries(rng, queries, catalogue)
    n_q = len(qs["text"])
    _, _, features = _vocabulary()
    trend = rng.normal(0.0, 0.9, len(COLOURS))
    style = rng.normal(0.0, 0.5, len(features))
    k = min(per_query, products)
    match_all = _match(qs, catalogue, np.repeat(np.arange(n_q), products), np.tile(np.arange(products), n_q))
    noisy = match_all.reshape(n_q, products) + rng.gumbel(0.0, 1.5, (n_q, products))
    shown = np.argsort(-noisy, axis=1, kind="stable")[:, :k]
    q = np.repeat(np.arange(n_q), k)
    p = shown.reshape(-1)
    relevance = (_match(qs, catalogue, q, p) + trend[catalogue.colour[p]] + style[catalogue.feature_id[p]]
                 + rng.normal(0.0, 0.8, len(p)))
    low, high = np.quantile(relevance, [1 / 3, 2 / 3])
    frame = pd.DataFrame({
        "query": qs["text"][q].astype(str),
        "product_id": catalogue.frame["product_id"].to_numpy()[p],
        "title": catalogue.frame["title"].to_numpy()[p],
        "grade": 1 + (relevance > low).astype(int) + (relevance > high).astype(int),
    })
    return frame.sort_values(["product_id", "query"], kind="stable").reset_index(drop=True)


def write_shop(
    shop: dict[str, pd.DataFrame], out: str, fmt: str = "parquet", *, partition_by_day: bool = False
) -> list[str]:
    """Write events and catalogue under `out` (a path, file://, pvc:// or s3:// prefix):
    <out>/events.<ext> (or <out>/events/dt=YYYY-MM-DD/part-0.<ext>) and <out>/catalogue.<ext>.
    The hidden users and queries are not written. Returns the URIs written."""
    import io

    from recops import uris

    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"unknown format {fmt!r}: use parquet or jsonl")
    fs, root = uris.filesystem(out)
    prefix = out.rstrip("/")

    def encode(frame: pd.DataFrame) -> bytes:
        if fmt == "parquet":
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            return buffer.getvalue()
        text: str = frame.to_json(orient="records", lines=True, date_format="iso", date_unit="ms")
        return text.encode()

    outputs: list[tuple[str, pd.DataFrame]] = [(f"catalogue.{fmt}", shop["catalogue"])]
    events = shop["events"]
    if partition_by_day:
        day = events["timestamp"].dt.strftime("%Y-%m-%d")
        for value, part in events.groupby(day, sort=True):
            outputs.append((f"events/dt={value}/part-0.{fmt}", part))
    else:
        outputs.append((f"events.{fmt}", events))
    written = []
    for relative, frame in outputs:
        path = f"{root.rstrip('/')}/{relative}"
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as handle:
            handle.write(encode(frame))
        written.append(f"{prefix}/{relative}")
    return written


def dirty(events: pd.DataFrame, fraction: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """The events with the faults real logs have, each in about `fraction` of the rows: rows
    written twice, missing titles or product IDs, events nobody defined, absurdly long text
    and times that are no times. For exercising (and reporting) the cleaning."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = len(events)
    out = events.copy()
    # Text times, as many logs write them, so that a bad one can sit among them.
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").astype(object)

    def pick() -> np.ndarray:
        return rng.choice(n, size=max(1, int(fraction * n)), replace=False)

    out.loc[out.index[pick()], "title"] = None
    out.loc[out.index[pick()], "product_id"] = None
    out.loc[out.index[pick()], "event"] = "hover"
    out.loc[out.index[pick()], "title"] = "buy now " * 1000
    out.loc[out.index[pick()], "timestamp"] = "yesterday-ish"
    duplicates = out.iloc[pick()]
    return pd.concat([out, duplicates], ignore_index=True)
