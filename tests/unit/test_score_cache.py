"""The score cache of head queries (recops.serve.cache)."""

from __future__ import annotations

from recops.serve.cache import ScoreCache


def test_a_kept_score_is_found_by_version_context_id_and_text_only() -> None:
    cache = ScoreCache("v1", entries=10, ttl_s=60)
    keys = cache.keys("red shoes", [("Red running shoe", "p1"), ("Blue kettle", "p2"), ("Blue kettle", None)])
    assert cache.get(keys) == [None, None, None]
    cache.put(keys, [0.9, 0.1, 0.2])
    assert cache.get(keys) == [0.9, 0.1, 0.2]
    assert cache.get(cache.keys("red shoes", [("Red running shoe, new text", "p1")])) == [None]  # text changed
    assert cache.get(cache.keys("blue shoes", [("Red running shoe", "p1")])) == [None]  # another context
    assert cache.get(ScoreCache("v2", 10, 60).keys("red shoes", [("Red running shoe", "p1")])) == [None]
    # The user's earlier events move the fusion's user offset: another history is another score.
    rated = cache.keys("red shoes", [("Red running shoe", "p1")], (("p2", 5.0),))
    assert cache.get(rated) == [None]
    cache.put(rated, [0.95])
    assert cache.get(cache.keys("red shoes", [("Red running shoe", "p1")], (("p2", 5.0),))) == [0.95]
    assert cache.get(cache.keys("red shoes", [("Red running shoe", "p1")], (("p2", 4.0),))) == [None]
    other_version = ScoreCache("v2", 10, 60)
    other_version.entries = cache.entries  # even sharing one store, another model's scores are not its
    assert other_version.get(other_version.keys("red shoes", [("Red running shoe", "p1")])) == [None]


def test_bounded_least_recently_used_first_and_expiring() -> None:
    now = [0.0]
    cache = ScoreCache("v1", entries=2, ttl_s=10, timer=lambda: now[0])
    a, b, c = (cache.keys("q", [(text, None)])[0] for text in "abc")
    cache.put([a, b], [0.1, 0.2])
    assert cache.get([a]) == [0.1]  # a is now the most recently used
    cache.put([c], [0.3])
    assert cache.get([a, b, c]) == [0.1, None, 0.3]
    now[0] = 11.0
    assert cache.get([a, c]) == [None, None]


def test_no_entries_keeps_nothing() -> None:
    cache = ScoreCache("v1", entries=0, ttl_s=60)
    keys = cache.keys("q", [("a", "1")])
    cache.put(keys, [0.5])
    assert cache.get(keys) == [None]
