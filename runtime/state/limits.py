"""Global rate and concurrency limits: the arithmetic of permission, kept in the replicated state.

A rate limit "N/P" counts starts (lease commits) on the leader's timestamps: a start at `t` is
permitted when fewer than N starts lie in [t - P - G, t], so no closed window of length P ever holds
more than N (DESIGN.md, "A start is a lease commit"). G, the guard, is 2 % of P, at most 50 ms: a
handler starts a few milliseconds after its lease commits, and those milliseconds vary (a large
batch commits slower than a small one), so without it the handlers' own start times could put
N + a few in a window of P (measured: 57 of a 50/s limit on 3 nodes). A concurrency limit counts leases.
Both are global (one replicated state) and may be per key: the value a task carries for the
limit's key in its envelope's `keys` map (a task without it shares the bucket of value None).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

INFINITY = math.inf
# A window reopens just after its oldest counted start leaves it (the window is closed: [t-P, t]).
EPSILON = 1e-6
# The guard between windows (see above): a fraction of the period, capped.
GUARD_FRACTION = 0.02
GUARD_MAX = 0.05

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+?)s?\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """"100/m" -> (100, 60.0); also "5/s", "10/2s", "1000/h", "3/day". ValueError naming the text."""
    match = _RATE.match(text.lower()) if isinstance(text, str) else None
    if match is None or match.group(3) not in _UNITS:
        raise ValueError(f"rate {text!r} is not N/PERIOD such as '5/s', '100/m', '10/2s', '1000/h' or '3/d'")
    n, multiple, unit = int(match.group(1)), match.group(2), match.group(3)
    period = (float(multiple) if multiple else 1.0) * _UNITS[unit]
    if n <= 0 or period <= 0:
        raise ValueError(f"rate {text!r} must allow at least one start in a positive period")
    return n, period


@dataclass(frozen=True, slots=True)
class Rate:
    n: int
    period: float
    key: str | None = None  # None: one bucket for the whole actor

    @property
    def span(self) -> float:
        """The period plus its guard: how long a counted start keeps its place in the window."""
        return self.period + min(self.period * GUARD_FRACTION, GUARD_MAX)


@dataclass(frozen=True, slots=True)
class Cap:
    n: int
    key: str | None = None


def rates_from_wire(raw: Any) -> list[Rate]:
    return [Rate(int(n), float(p), k) for n, p, k in raw or []]


def caps_from_wire(raw: Any) -> list[Cap]:
    return [Cap(int(n), k) for n, k in raw or []]


def _bucket(actor: str, key: str | None, keys: dict[str, Any]) -> tuple[str, str, Any]:
    """The counter of one limit for one key value. The value is tagged with its type, so 1, 1.0
    and True (equal in Python) are three buckets, as they are three lanes (lanes.lane_of)."""
    if not key:
        return (actor, "", None)
    value = keys.get(key)
    return (actor, key, None if value is None else (type(value).__name__, value))


@dataclass
class FlowState:
    windows: dict[tuple[str, str, Any], deque[float]] = field(default_factory=dict)
    running: dict[tuple[str, str, Any], int] = field(default_factory=dict)

    def blocked_until(self, actor: str, keys: dict[str, Any], rates: list[Rate], caps: list[Cap],
                      now: float) -> float:
        """0.0 when a task with these keys may start now; else when it may (inf: after a release)."""
        until = 0.0
        for cap in caps:
            if self.running.get(_bucket(actor, cap.key, keys), 0) >= cap.n:
                return INFINITY
        for rate in rates:
            window = self.windows.get(_bucket(actor, rate.key, keys))
            if window is None or len(window) < rate.n:
                continue
            inside = len(window) - bisect_left(window, now - rate.span)
            if inside >= rate.n:
                until = max(until, window[-rate.n] + rate.span + EPSILON)
        return until

    def start(self, actor: str, keys: dict[str, Any], rates: list[Rate], caps: list[Cap],
              now: float) -> tuple[tuple[str, str, Any], ...]:
        """Count a start; returns the concurrency buckets to release when its lease ends.

        Every key the task carries is counted (a limit added later sees true counts), and so is
        every keyed limit's bucket, value None included for a task without that key.
        """
        names = sorted(set(keys) | {cap.key for cap in caps if cap.key})
        counted = [_bucket(actor, None, keys)] + [_bucket(actor, k, keys) for k in names]
        for bucket in counted:
            self.running[bucket] = self.running.get(bucket, 0) + 1
        longest: dict[tuple[str, str, Any], int] = {}
        for rate in rates:
            bucket = _bucket(actor, rate.key, keys)
            longest[bucket] = max(longest.get(bucket, 0), rate.n)
        for bucket, keep in longest.items():
            window = self.windows.setdefault(bucket, deque())
            window.append(now)
            while len(window) > keep:  # only the newest N starts can matter
                window.popleft()
        return tuple(counted)

    def release(self, counted: tuple[tuple[str, str, Any], ...]) -> None:
        for bucket in counted:
            left = self.running.get(bucket, 0) - 1
            if left > 0:
                self.running[bucket] = left
            else:
                self.running.pop(bucket, None)

    def sweep(self, now: float, longest_period: float) -> None:
        """Forget idle per-key windows, so memory follows active keys, not every key ever seen."""
        horizon = now - longest_period - GUARD_MAX  # a start counts for its period and guard
        for bucket in [b for b, w in self.windows.items() if not w or w[-1] < horizon]:
            del self.windows[bucket]
