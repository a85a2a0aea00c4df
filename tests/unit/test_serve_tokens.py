"""Feedback tokens: what verifies, what is rejected and why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recops.serve.tokens import MAX_ITEMS, MAX_TOKEN_CHARS, DuplicateFilter, TokenRejected, TokenSigner

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock, deployment: str = "ranker", key: bytes = KEY) -> TokenSigner:
    return TokenSigner(key, ttl_s=3600, namespace="shop", deployment=deployment, clock=clock)


def reason(token_signer: TokenSigner, token: object) -> str:
    with pytest.raises(TokenRejected) as err:
        token_signer.verify(token)
    return err.value.reason


def test_a_token_names_track_model_time_and_items() -> None:
    clock = Clock()
    token = signer(clock).issue("rid-1", "canary", "m-1", ["a", "b"])
    verified = signer(clock).verify(token)
    assert (verified.request_id, verified.track, verified.model_version) == ("rid-1", "canary", "m-1")
    assert verified.showed("a") and verified.showed("b") and not verified.showed("c")
    assert verified.issued_at == clock.now
    assert (verified.namespace, verified.deployment) == ("shop", "ranker")


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=50, unique=True), st.text(min_size=1))
def test_any_item_ids_round_trip(items: list[str], other: str) -> None:
    clock = Clock()
    verified = signer(clock).verify(signer(clock).issue("r", "stable", "m", items))
    assert all(verified.showed(item) for item in items)
    assert verified.showed(other) == (other in items)


def test_every_issued_token_verifies_however_long_the_ids() -> None:
    clock = Clock()
    for items in ([f"{i:05d}" + "x" * 400 for i in range(200)], [f"item-{i}" for i in range(MAX_ITEMS)]):
        token = signer(clock).issue("r", "stable", "m", items)
        assert len(token) <= MAX_TOKEN_CHARS
        assert signer(clock).verify(token).showed(items[-1])
    with pytest.raises(ValueError, match="at most"):
        signer(clock).issue("r", "stable", "m", [str(i) for i in range(MAX_ITEMS + 1)])


def test_expired_future_forged_foreign_and_malformed_tokens_are_rejected() -> None:
    clock = Clock()
    token = signer(clock).issue("r", "stable", "m", ["a"])
    later = Clock(clock.now + 3601)
    assert reason(signer(later), token) == "expired"
    earlier = Clock(clock.now - 3600)
    assert reason(signer(earlier), token) == "expired"  # issued "in the future": clocks disagree
    assert reason(signer(clock, key=b"x" * 32), token) == "forged"
    assert reason(signer(clock, deployment="other"), token) == "foreign"
    head, body, signature = token.split(".")
    assert reason(signer(clock), f"{head}.{body}x.{signature}") == "forged"  # tampered payload
    assert reason(signer(clock), "rt1.abc") == "malformed"
    assert reason(signer(clock), "rt2.a.b") == "malformed"
    assert reason(signer(clock), "") == "invalid"
    assert reason(signer(clock), 42) == "invalid"


def test_duplicates_are_remembered_for_the_ttl_only() -> None:
    now = Clock(0.0)
    seen = DuplicateFilter(ttl_s=10, clock=now)
    assert seen.first_time(("r", "a", "click"))
    assert not seen.first_time(("r", "a", "click"))
    assert seen.first_time(("r", "a", "purchase"))
    now.now = 11.0
    assert seen.first_time(("r", "a", "click"))


def test_duplicate_memory_is_bounded() -> None:
    seen = DuplicateFilter(ttl_s=1e9, max_entries=3, clock=Clock(0.0))
    for i in range(10):
        assert seen.first_time(("r", str(i), "click"))
    assert len(seen._seen) <= 3
