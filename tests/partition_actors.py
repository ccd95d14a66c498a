"""Actors for the partition tests (`qrt worker tests.partition_actors`): each run leaves a trace file.

A worker cut off from the leader fences itself and reports nothing, so a run's own trace is the only
record of when it started and when it stopped. Workers and the test share the file system and the
kernel's clock (`time.time()` agrees across network namespaces), so traces from several workers
can be compared.
"""

from __future__ import annotations

import asyncio
import os
import time

import qrt


def _trace(path: str, event: str) -> None:
    with open(path, "a") as f:
        f.write(f"{event} {time.time():.6f}\n")


@qrt.actor(retries=0)
async def traced_sleep(trace_dir: str, seconds: float) -> dict[str, object]:
    """Sleeps `seconds`, writing `start`, then `end` or `cancelled`, to its own trace file."""
    info = qrt.current_task()
    path = os.path.join(trace_dir, f"{info.id}.{info.attempt}.{os.getpid()}")
    _trace(path, "start")
    try:
        await asyncio.sleep(seconds)  # ok-sleep: the handler's simulated work
    except asyncio.CancelledError:
        _trace(path, "cancelled")
        raise
    _trace(path, "end")
    return {"pid": os.getpid(), "attempt": info.attempt}
