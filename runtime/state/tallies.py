"""Per-actor counts of what the log did, kept in the replicated state: every node counts the same,
a failover resets nothing, and a restart finds them in the snapshot (the metrics' counters)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Histogram buckets (seconds), Prometheus-style upper bounds; the last bucket is +Inf.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Actors counted one by one; beyond, under OTHER (one-off actor names leave one shared entry).
MAX_ACTORS = 1000
OTHER = "other"


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


class Tallies:
    def __init__(self) -> None:
        self.by_actor: dict[str, Tally] = {}

    def of(self, actor: str) -> Tally:
        tally = self.by_actor.get(actor)
        if tally is None:
            if len(self.by_actor) >= MAX_ACTORS:
                actor = OTHER
                tally = self.by_actor.get(actor)
            if tally is None:
                tally = self.by_actor[actor] = Tally()
        return tally
