"""Actors the benchmarks' worker processes serve (`qrt worker bench.actors`)."""

from __future__ import annotations

import qrt


@qrt.actor(name="bench.noop")
async def noop() -> None:
    """Does nothing: what is measured is qrt's own cost per task."""
    return None


@qrt.actor(name="bench.noop_sync")
def noop_sync() -> None:
    """The same in a worker thread: adds the cost of the handler thread pool."""
    return None


# No worker ever serves this name: tasks submitted to it stay queued (the memory benchmark).
UNSERVED = "bench.unserved"
