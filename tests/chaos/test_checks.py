"""The chaos checks themselves, on made-up records: each finds what it must, and excuses only a lost lease."""

from __future__ import annotations

import math
from pathlib import Path

from .checks import (
    Accepted,
    Evidence,
    Fault,
    FreeSlots,
    Run,
    check_rate,
    check_serial,
    check_tasks,
    compare_digests,
    logged_errors,
    runs_by_id,
)


def evidence(runs: list[Run], faults: list[Fault] | None = None,
             losses: dict[str, list[int]] | None = None) -> Evidence:
    return Evidence(faults or [], losses or {}, runs_by_id(runs), 0.0)


def test_a_window_with_one_start_too_many_is_a_violation() -> None:
    at_limit = [Run(f"t{i}", "limited", 1, i, 1, 10 + i * 0.049, 10.1 + i * 0.049, "ok") for i in range(20)]
    assert check_rate(at_limit, evidence(at_limit), 20, 1.0)["violations"] == []
    over = [*at_limit, Run("t20", "limited", 1, 20, 2, 10.99, 11.0, "ok")]
    result = check_rate(over, evidence(over), 20, 1.0)
    assert result["busiest_window"] == 21 and len(result["violations"]) == 1


def test_overlapping_serial_runs_are_excused_only_by_a_lost_lease_of_the_first() -> None:
    first = Run("a", "serial", 1, 0, 100, 1.0, 3.0, "ok")
    second = Run("b", "serial", 1, 1, 200, 2.0, 2.5, "ok")
    runs = [first, second]
    assert len(check_serial(runs, evidence(runs))["unexplained"]) == 1
    dropped = Fault("drop_conn", "pid 100", 1.5, 1.5, 100)
    # A fault on its worker is not enough: the leader must have taken the lease back.
    assert len(check_serial(runs, evidence(runs, [dropped]))["unexplained"]) == 1
    result = check_serial(runs, evidence(runs, [dropped], {"a": [100]}))
    assert result["overlaps"] == 1 and result["unexplained"] == []


def test_a_run_cut_by_its_workers_kill_ends_there() -> None:
    killed = Run("a", "serial", 1, 0, 100, 1.0)  # no end stamp
    rerun = Run("a", "serial", 2, 0, 200, 6.5, 7.0, "ok")
    runs = [killed, rerun]
    kill = Fault("kill_worker", "pid 100", 1.2, 1.2, 100)
    assert check_serial(runs, evidence(runs, [kill]))["overlaps"] == 0
    assert check_serial(runs, evidence(runs))["overlaps"] == 1  # without the kill it would never have ended


def test_a_task_that_succeeded_twice_is_a_duplicate_unless_its_worker_lost_the_lease() -> None:
    runs = [Run("a", "plain", 1, 0, 100, 1.0, 1.2, "ok"), Run("a", "plain", 2, 0, 200, 7.0, 7.1, "ok")]
    accepted = [Accepted(0, "a", "plain", 0.9, 0.95)]
    plain = check_tasks(accepted, runs, {"a": "succeeded"}, evidence(runs))
    assert plain["duplicates"] == 1 and len(plain["duplicates_unexplained"]) == 1
    kill = Fault("kill_worker", "pid 100", 1.5, 1.5, 100)  # before its report was acknowledged
    excused = check_tasks(accepted, runs, {"a": "succeeded"}, evidence(runs, [kill]))
    assert excused["duplicates_explained"] == 1 and excused["duplicates_unexplained"] == []


def test_wedged_and_forgotten_tasks_are_named() -> None:
    accepted = [Accepted(0, "a", "plain", 0.0, 0.1), Accepted(1, "b", "plain", 0.0, 0.1)]
    result = check_tasks(accepted, [], {"b": "not_found"}, evidence([]))
    assert [w["id"] for w in result["wedged"]] == ["a"] and [x["id"] for x in result["lost"]] == ["b"]


def test_digests_are_compared_only_where_two_nodes_stand_at_the_same_point() -> None:
    samples: list[dict[str, object]] = [
        {"node": "n1", "applied_batches": 5, "digest": "x"}, {"node": "n2", "applied_batches": 6, "digest": "y"},
        {"node": "n2", "applied_batches": 5, "digest": "x"},
        {"node": "n1", "state_digest": {"mark": 4, "digest": "s", "diverged": None}},
        {"node": "n3", "state_digest": {"mark": 4, "digest": "s", "diverged": None}}]
    result = compare_digests(samples)
    assert result["equal"] and result["points_compared"] == {"log": 1, "state": 1}
    samples.append({"node": "n3", "applied_batches": 6, "digest": "z"})
    assert not compare_digests(samples)["equal"]


def test_errors_in_any_log_are_found_with_their_traceback_and_known_lines_counted_apart(tmp_path: Path) -> None:
    log = tmp_path / "node0.log"
    log.write_text("2026-11-30 06:28:52,100 INFO    qrt.coordinator: fine\n"
                   "2026-11-30 06:28:52,138 ERROR   qrt.coordinator: handling the effects of a committed batch failed\n"
                   "Traceback (most recent call last):\n"
                   "AttributeError: 'Handle' object has no attribute 'when'\n"
                   "2026-11-30 06:28:53,000 CRITICAL pysyncobj.syncobj: truncating already-applied log entries\n")
    found = logged_errors([str(log)])
    assert found["count"] == 1 and len(found["examples"][0]["lines"]) == 3
    assert found["known"] == {"truncating already-applied log entries": 1}


def test_free_slot_time_leaves_out_what_every_slot_was_busy() -> None:
    runs = [Run("a", "plain", 1, 0, 100, 1.0, 3.0, "ok")]
    free = FreeSlots(runs, evidence(runs), {100: (0.0, math.inf)}, slots=1)
    assert free.between(0.0, 4.0) == 2.0  # 0-1 and 3-4
    assert free.between(1.5, 2.5) == 0.0
