"""Per-actor counts of what the log did, kept in the replicated state: every node counts the same,
a failover resets nothing, and a restart finds them in the snapshot (the metrics' counters)."""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

# Histogram buckets (seconds), Prometheus-style upper bounds; the last bucket is +Inf.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Actors counted one by one; beyond, under OTHER (one-off actor names leave one shared entry).
MAX_ACTORS = 1000
OTHER = "other"
# Key values ("NAME=VALUE") counted one by one; beyond, under OTHER. The metrics show the top
# few by volume (`--metrics-top-keys`), so this bounds memory, not the series exported.
MAX_KEY_VALUES = 1000


def _buckets() -> list[int]:
    return [0] * (len(BUCKETS) + 1)


@dataclass(slots=True)
class Tally:
    submitted: int = 0
    started: int = 0  # leases granted
    succeeded: int = 0
    failed: int = 0  # attempts that failed (retried, or dead)
    retried: int = 0
    dead_lettered: int = 0
    lost: int = 0  # leases lost with their worker
    rate_limited: int = 0  # picks a rate limit held back
    wait: list[int] = field(default_factory=_buckets)  # queue wait of each start (not cumulative)
    wait_sum: float = 0.0
    run: list[int] = field(default_factory=_buckets)  # lease to outcome, of each attempt that ended
    run_sum: float = 0.0

    def waited(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.wait[bisect_left(BUCKETS, seconds)] += 1
        self.wait_sum += seconds

    def ran(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.run[bisect_left(BUCKETS, seconds)] += 1
        self.run_sum += seconds


@dataclass(slots=True)
class KeyTally:
    submitted: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0

    COUNTS: ClassVar[tuple[str, ...]] = ("submitted", "started", "succeeded", "failed", "dead_lettered")


def key_label(name: str, value: Any) -> str:
    """A key value as metrics (and `qrt stats --by key`) name it: NAME=VALUE, a str as it is."""
    return f"{name}={value if isinstance(value, str) else json.dumps(value, default=repr)}"


class Tallies:
    def __init__(self) -> None:
        self.by_actor: dict[str, Tally] = {}
        self.by_key: dict[str, KeyTally] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.__dict__.update(state)  # (a snapshot written before per-key counts has none)

    def count_keys(self, keys: dict[str, Any], what: str) -> None:
        """Add one to count `what` of each of a task's key values (callers test `keys` first: most
        tasks have none)."""
        for name, value in keys.items():
            tally = _capped(self.by_key, key_label(name, value), MAX_KEY_VALUES, KeyTally)
            setattr(tally, what, getattr(tally, what) + 1)

    def of(self, actor: str) -> Tally:
        return _capped(self.by_actor, actor, MAX_ACTORS, Tally)


def _capped(tallies: dict[str, T], label: str, cap: int, new: Callable[[], T]) -> T:
    """`tallies[label]`, made if missing while fewer than `cap` exist; past them, OTHER's."""
    tally = tallies.get(label)
    if tally is None:
        if len(tallies) >= cap:
            label = OTHER
            tally = tallies.get(label)
        if tally is None:
            tally = tallies[label] = new()
    return tally
