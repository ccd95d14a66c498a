"""The clocks a coordinator reads: injectable, so that tests can step a real process's wall clock.

Replicated time never comes from here directly: the leader's `LeaderClock` (coordinator/proposer.py)
advances it by the monotonic clock and reads the wall clock only when it takes office.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

# Tests (and drills) set this to a file holding seconds to add to the wall clock; written at any
# time, it is read at most every WALL_OFFSET_READ_EVERY seconds. Unset, the system clock is used.
WALL_OFFSET_ENV = "QRT_WALL_CLOCK_OFFSET_FILE"
WALL_OFFSET_READ_EVERY = 0.05


class Clock(Protocol):
    def wall(self) -> float:
        """Epoch seconds, as the host believes (it may be stepped, by NTP or by hand)."""

    def monotonic(self) -> float:
        """Seconds that only move forward, at the rate of real time."""


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class SteppedClock(SystemClock):
    """The system clock with its wall time offset by the seconds written in a file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0.0
        self._read_at = -WALL_OFFSET_READ_EVERY

    def wall(self) -> float:
        now = time.monotonic()
        if now - self._read_at >= WALL_OFFSET_READ_EVERY:
            self._read_at = now
            try:
                with open(self.path) as f:
                    self._offset = float(f.read().strip() or 0.0)
            except (OSError, ValueError):
                pass  # keep the last offset read
        return time.time() + self._offset


def from_environment() -> Clock:
    path = os.environ.get(WALL_OFFSET_ENV)
    return SteppedClock(path) if path else SystemClock()
