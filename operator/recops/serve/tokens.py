"""Feedback tokens: the signed `requestId` of a ranked response (Contracts: `recops.api.contracts`, feedback).

A token names the namespace and deployment, the track and model version that ranked, the
issue time and the items shown, so that feedback reaching any replica (with the same key) is
credited to the right track and model. Format::

    rt1.<base64url(zlib(json payload))>.<base64url(HMAC-SHA256(key, "rt1.<payload>"))>

The payload is compressed rather than hashed so that the ids stay readable when debugging;
it is not secret (the client already knows what it was shown), only unforgeable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TOKEN_VERSION = "rt1"
CLOCK_SKEW_S = 300.0  # replicas' clocks may differ this much
# A token names each shown item by a fixed-size digest, so its length is bounded whatever the ids:
# at most MAX_ITEMS items (the CRD's largest maxCandidates), each under ITEM_CHARS once compressed and encoded.
MAX_ITEMS = 10_000
ITEM_CHARS = 28
MAX_TOKEN_CHARS = 2048 + ITEM_CHARS * MAX_ITEMS

# recops_feedback_rejected_total{reason}
REJECT_REASONS = ("invalid", "malformed", "forged", "expired", "foreign", "not_shown", "duplicate")


class TokenRejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        assert reason in REJECT_REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FeedbackToken:
    request_id: str  # short id: the event log's request_id
    namespace: str
    deployment: str
    track: str
    model_version: str
    issued_at: float  # unix seconds
    item_digests: frozenset[str]

    def showed(self, item_id: str) -> bool:
        """Whether the response this token was issued for showed `item_id`."""
        return item_digest(item_id) in self.item_digests


def item_digest(item_id: str) -> str:
    """64 bits of SHA-256: a fixed size per item, and collisions among one response's items are negligible."""
    return hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_request_id() -> str:
    return secrets.token_hex(12)


class TokenSigner:
    """Issues and verifies the tokens of one deployment."""

    def __init__(self, key: bytes, ttl_s: float, namespace: str, deployment: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.namespace = namespace
        self.deployment = deployment
        self._clock = clock

    def _signature(self, signed_part: str) -> str:
        return _b64encode(hmac.new(self._key, signed_part.encode(), hashlib.sha256).digest())

    def issue(self, request_id: str, track: str, model_version: str, items: Sequence[str]) -> str:
        if len(items) > MAX_ITEMS:
            raise ValueError(f"a token names at most {MAX_ITEMS} items, not {len(items)}")
        payload = {
            "r": request_id, "n": self.namespace, "d": self.deployment, "t": track, "m": model_version,
            "iat": round(self._clock(), 3), "i": [item_digest(item) for item in items],
        }
        body = _b64encode(zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 6))
        signed_part = f"{TOKEN_VERSION}.{body}"
        return f"{signed_part}.{self._signature(signed_part)}"

    def verify(self, token: object) -> FeedbackToken:
        """The token's content; raises TokenRejected(reason) when it must not be credited."""
        if not isinstance(token, str) or not token:
            raise TokenRejected("invalid", "requestId must be the non-empty string a ranked response returned")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("malformed", "requestId is too long to be a token this server issued")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_VERSION:
            raise TokenRejected("malformed", f"requestId is not a {TOKEN_VERSION} feedback token")
        signed_part = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._signature(signed_part), parts[2]):
            raise TokenRejected("forged", "requestId's signature does not verify: not issued by this deployment")
        try:
            payload = json.loads(zlib.decompress(_b64decode(parts[1])))
            token_content = FeedbackToken(
                request_id=str(payload["r"]), namespace=str(payload["n"]), deployment=str(payload["d"]),
                track=str(payload["t"]), model_version=str(payload["m"]), issued_at=float(payload["iat"]),
                item_digests=frozenset(str(i) for i in payload["i"]),
            )
        except (ValueError, KeyError, TypeError, zlib.error, binascii.Error) as err:
            raise TokenRejected("malformed", f"requestId's payload is unreadable: {err}") from None
        if (token_content.namespace, token_content.deployment) != (self.namespace, self.deployment):
            raise TokenRejected(
                "foreign",
                f"requestId was issued by {token_content.namespace}/{token_content.deployment}, "
                f"not {self.namespace}/{self.deployment}",
            )
        now = self._clock()
        if token_content.issued_at > now + CLOCK_SKEW_S:
            raise TokenRejected("expired", "requestId was issued in the future: replica clocks disagree")
        if now - token_content.issued_at > self.ttl_s:
            raise TokenRejected(
                "expired", f"requestId expired: issued {now - token_content.issued_at:.0f}s ago, "
                f"feedback is accepted for {self.ttl_s:.0f}s",
            )
        return token_content


class DuplicateFilter:
    """Remembers (request, item, event) triples for the token TTL; best effort, per replica."""

    def __init__(self, ttl_s: float, max_entries: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._seen: dict[tuple[str, str, str], float] = {}  # insertion-ordered

    def first_time(self, key: tuple[str, str, str]) -> bool:
        now = self._clock()
        while self._seen:  # evict expired (oldest first) and overflow
            oldest_key, at = next(iter(self._seen.items()))
            if now - at <= self._ttl_s and len(self._seen) < self._max_entries:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            return False
        self._seen[key] = now
        return True
