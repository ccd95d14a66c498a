"""60 s of chaos in `make test`: every check of the 10-minute `make chaos`, on a shorter run.

The seed is new each time (QRT_CHAOS_SEED=N replays one) and printed with the logs' directory.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from .harness import Config, report, run

DURATION = 55.0


@pytest.mark.timeout(240)
def test_no_task_lost_no_limit_broken_replicas_equal_under_a_minute_of_faults(tmp_path: Path) -> None:
    seed = int(os.environ.get("QRT_CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    summary = run(Config(DURATION, seed, str(tmp_path / f"chaos-{seed}")))
    print(report(summary))
    assert summary["faults_by_kind"], "no fault was injected"
    assert summary["ok"], (f"chaos seed {seed} failed {json.dumps(summary['failures'])}; replay: "
                           f"QRT_CHAOS_SEED={seed} or {summary['replay']}; logs in {summary['base_dir']}")
