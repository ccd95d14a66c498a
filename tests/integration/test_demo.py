"""`make demo` runs real tasks end to end and stops what it started."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_the_mix_of_tasks() -> None:
    result = subprocess.run([sys.executable, "-m", "examples.demo"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "add(2, 3)                 async -> 5" in out
    assert "-> 'HELLO!'" in out
    assert "succeeded on attempt 3" in out
    assert "sum 9900" in out
    assert "delayed 2 s -> 42" in out
    assert "dead-letter queue holds 2" in out
    assert "all processes stopped" in out
