"""Summary statistics of measured values; standard library only, so the peers' virtualenv imports it too."""

from __future__ import annotations

import math
from statistics import median as median  # re-exported: the comparison takes its medians here


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 by the nearest-rank method, with mean and max, rounded to microseconds."""
    if not values_ms:
        return {}
    s = sorted(values_ms)

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"n": len(s), "p50_ms": round(rank(50), 3), "p95_ms": round(rank(95), 3), "p99_ms": round(rank(99), 3),
            "mean_ms": round(sum(s) / len(s), 3), "min_ms": round(s[0], 3), "max_ms": round(s[-1], 3)}


def busiest_window(stamps: list[float], width: float = 1.0) -> int:
    """The most stamps in any half-open window [t, t + width): what a rate limit of n per `width` bounds."""
    s = sorted(stamps)
    best = lo = 0
    for hi, t in enumerate(s):
        while t - s[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def sustained_rate(stamps: list[float], width: float = 1.0) -> float | None:
    """The median count per window of `width`, over the back-to-back windows from the first stamp
    that end before the last one: the rate a limiter allows once it binds, bursts or not."""
    s = sorted(stamps)
    if not s:
        return None
    full = int((s[-1] - s[0]) // width)
    if full < 1:
        return None
    counts = [0] * full
    for t in s:
        i = int((t - s[0]) // width)
        if i < full:
            counts[i] += 1
    return median(counts) / width
