"""Scores of head queries, kept: e-commerce traffic repeats its queries, and a model's score of a (context,
candidate) pair never changes while the model does not (the fusion's popularity is fixed with the model too).

Keyed by the model version, the context (with a hash of the user's `ratings`), the candidate's id and a hash of its
text, so an item whose text changed
is scored afresh and no score outlives its model. Bounded (least recently used entries go first) and expiring
(`ttl`), which only bounds what cold entries cost: a kept score is never stale. Used on the event loop only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

from cachetools import TTLCache

Key = tuple[str, str, str, bytes]


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=8).digest()


class ScoreCache:
    def __init__(self, model_version: str, entries: int, ttl_s: float,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.model_version = model_version
        self.entries: TTLCache[Key, float] | None = (
            TTLCache(maxsize=entries, ttl=ttl_s, timer=timer) if entries > 0 else None)

    def keys(self, context: str, candidates: Sequence[tuple[str, str | None]],
             ratings: Sequence[tuple[str, float]] = ()) -> list[Key]:
        """One key per (text, id) candidate of `context`; the user's earlier events (`user.ratings`, which the
        fusion's user offset reads) are part of the context."""
        if ratings:
            context = context + "\x00ratings:" + text_digest(repr(tuple(ratings))).hex()
        return [(self.model_version, context, item_id or "", text_digest(text)) for text, item_id in candidates]

    def get(self, keys: Sequence[Key]) -> list[float | None]:
        if self.entries is None:
            return [None] * len(keys)
        return [self.entries.get(key) for key in keys]

    def put(self, keys: Sequence[Key], scores: Sequence[float]) -> None:
        if self.entries is not None:
            for key, score in zip(keys, scores, strict=True):
                self.entries[key] = score
