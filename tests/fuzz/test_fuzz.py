"""2,000 hostile frames to each socket of a live coordinator and of a live worker (`make fuzz`
sends 100,000): no crash, no wedge, memory back near its baseline."""

from __future__ import annotations

import os
from pathlib import Path

from .harness import fuzz_coordinator, fuzz_worker

FRAMES = 2000
SEED = int(os.environ.get("QRT_FUZZ_SEED", "20261130"))


def test_a_coordinator_survives_hostile_frames_and_serves_after(tmp_path: Path) -> None:
    figures = fuzz_coordinator(FRAMES, SEED, str(tmp_path))
    print(figures)
    assert figures["frames"] == 2 * FRAMES


def test_a_worker_survives_hostile_frames_and_runs_a_task_after(tmp_path: Path) -> None:
    figures = fuzz_worker(FRAMES, SEED, str(tmp_path))
    print(figures)
    assert figures["frames"] == FRAMES
