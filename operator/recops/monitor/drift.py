"""Score drift: the population stability index between two score histograms.

Prometheus histograms are cumulative (`le` buckets); PSI needs each bucket's share. Empty
buckets are smoothed with a small epsilon so that one empty bucket does not make PSI infinite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EPSILON = 1e-4


def bucket_shares(cumulative: Sequence[float]) -> list[float]:
    """Cumulative counts -> each bucket's share of the total (smoothed)."""
    counts = [max(b - a, 0.0) for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
    total = sum(counts)
    if total <= 0:
        raise ValueError("empty histogram")
    shares = [max(c / total, EPSILON) for c in counts]
    norm = sum(shares)
    return [s / norm for s in shares]


def psi(current: Sequence[float], baseline: Sequence[float]) -> float:
    """PSI of two cumulative histograms over the same bucket bounds (0.1 small, 0.25 large shift)."""
    if len(current) != len(baseline):
        raise ValueError(f"histograms have different buckets ({len(current)} vs {len(baseline)})")
    p, q = bucket_shares(current), bucket_shares(baseline)
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q, strict=True))
