"""Retry delays: exponential backoff with jitter that every replica computes identically."""

from __future__ import annotations

import zlib

from ..defaults import BACKOFF_BASE, BACKOFF_CAP, BACKOFF_FACTOR, BACKOFF_JITTER


def backoff_delay(task_id: str, failures: int) -> float:
    """Delay before the retry that follows failure number `failures` (1-based).

    1 s, 2 s, 4 s, ... capped at 5 min, plus up to 50 % jitter so that a burst of failures does not
    retry in lockstep. The jitter is seeded from the task id and the failure number, not from a
    random source, so every replica applying the same command gets the same delay.
    """
    base = min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** (failures - 1))
    fraction = zlib.crc32(f"{task_id}:{failures}".encode()) / 0xFFFFFFFF
    return min(BACKOFF_CAP, base * (1.0 + BACKOFF_JITTER * fraction))
