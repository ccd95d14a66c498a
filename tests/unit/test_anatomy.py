"""The hop marks bench/anatomy.py reads (runtime/anatomy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrt import anatomy
from qrt.protocol import Envelope, Outcome, RunTask
from qrt.state import commands as C
from qrt.state.model import Accepted, Finished, Leased


def test_marks_name_the_hop_of_each_task_and_are_written_at_exit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anatomy, "PATH", str(tmp_path / "anatomy"))
    assert anatomy.proposed(C.Submit([Envelope("t1", "a", [], {}), Envelope("t2", "a", [], {})])) == [
        ("proposed", "t1"), ("proposed", "t2")]
    assert anatomy.proposed(C.Finish("w1", [Outcome("t1", 1, True)])) == [("outcome_proposed", "t1")]
    assert anatomy.proposed(C.Tick()) == []
    found = [Accepted(["t1"]), Leased("w1", RunTask("t1", "a", [], {}, 1, 60.0, 1)), Finished("t1", {})]
    anatomy.effects(found, on_loop=False)
    anatomy.effects(found, on_loop=True)
    anatomy._write()
    (written,) = tmp_path.glob("anatomy.*")
    lines = [line.split() for line in written.read_text().splitlines()]
    assert [(task, hop) for task, hop, _ in lines] == [
        ("t1", "applied"), ("t1", "lease_applied"), ("t1", "outcome_applied"),
        ("t1", "accepted"), ("t1", "leased"), ("t1", "outcome_committed")]
    times = [int(ns) for _, _, ns in lines]
    assert times == sorted(times)
