"""The history is a projection of the log: the state machine's events of each batch, written to
SQLite by a thread of its own, answer the operator's questions (runtime/history/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qrt.history import queries
from qrt.history.queries import Filters
from qrt.history.schema import connect
from qrt.history.writer import History, Retention
from qrt.protocol import Envelope, Outcome
from qrt.state import commands as C

from .statehelp import Driver


class Recorded(Driver):
    """A Driver whose every batch goes to a History, as the replication layer sends it."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history

    def apply(self, *commands: C.Command) -> list[list[Any]]:
        self.machine.journal = []
        try:
            return super().apply(*commands)
        finally:
            self.history.record(self.machine.applied, self.machine.journal)
            self.machine.journal = None

    def read(self) -> Any:
        assert self.history.wait_for(self.machine.applied, 5.0)
        return connect(self.history.path, readonly=True)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Recorded]:
    history = History(str(tmp_path))
    yield Recorded(history)
    history.close()


def test_a_task_that_fails_then_succeeds_has_its_whole_timeline(driver: Recorded) -> None:
    driver.apply(C.Submit([Envelope("t1", "mail.send", [1, "x"], {"to": "a@b"}, keys={"tenant": "acme"})]))
    driver.now += 2.0
    run = driver.dispatch("w1", ["mail.send"])[0]
    driver.now += 0.5
    driver.finish(run, "w1", ok=False, error_type="SMTPError", retry_delay=1.0)
    driver.now += 1.0
    driver.apply(C.Tick())
    run = driver.dispatch("w2", ["mail.send"])[0]
    driver.now += 0.25
    driver.finish(run, "w2", ok=True, value={"sent": True})
    shown = queries.show_task(driver.read(), "t1")
    assert shown is not None
    assert (shown["state"], shown["attempt"], shown["worker"]) == ("succeeded", 2, "w2")
    assert (shown["args"], shown["kwargs"], shown["keys"], shown["result"]) == \
        ([1, "x"], {"to": "a@b"}, {"tenant": "acme"}, {"sent": True})
    assert (shown["error_type"], shown["error_message"]) == ("SMTPError", "boom")  # its last failure
    assert [(e["event"], e["attempt"], e["worker"]) for e in shown["events"]] == [
        ("submitted", 0, ""), ("leased", 1, "w1"), ("retried", 1, "w1"), ("queued", 1, ""), ("leased", 2, "w2"),
        ("succeeded", 2, "w2")]
    assert shown["events"][2]["detail"] == {"delay": 1.0}


def test_list_filters_and_pages_newest_first(driver: Recorded) -> None:
    for i in range(30):
        driver.apply(C.Submit([Envelope(f"t{i}", "a" if i % 2 else "b", [i], {}, keys={"tenant": f"c{i % 3}"})]))
    runs = driver.dispatch("w1", ["a", "b"], n=10)
    for run in runs:
        driver.finish(run, "w1", ok=run.args[0] % 4 != 0, error_type="KeyError", retryable=False)
    conn = driver.read()
    failed = queries.list_tasks(conn, Filters(state="dead"))["tasks"]
    assert {t["id"] for t in failed} == {r.id for r in runs if r.args[0] % 4 == 0}
    assert all(t["error_type"] == "KeyError" for t in failed)
    first = queries.list_tasks(conn, Filters(actor="a"), limit=10)
    second = queries.list_tasks(conn, Filters(actor="a"), limit=10, cursor=first["next"])
    ids = [t["id"] for t in first["tasks"] + second["tasks"]]
    assert ids == [f"t{i}" for i in range(29, -1, -1) if i % 2] and second["next"] is None
    keyed = queries.list_tasks(conn, Filters(key=("tenant", "c1")))["tasks"]
    assert {t["id"] for t in keyed} == {f"t{i}" for i in range(30) if i % 3 == 1}
    assert [t["id"] for t in queries.list_tasks(conn, Filters(args="29"))["tasks"]] == ["t29"]
    assert queries.list_tasks(conn, Filters(worker="w1", state="succeeded"))["tasks"]
    assert queries.list_tasks(conn, Filters(since=driver.now + 1))["tasks"] == []


def test_stats_count_exactly_and_time_within_the_histograms_precision(driver: Recorded) -> None:
    for i in range(100):
        driver.apply(C.Submit([Envelope(f"t{i}", "a", [], {})]))
    driver.now += 3.0  # every task waits 3 s
    runs = driver.dispatch("w1", ["a"], n=100)
    driver.now += 0.2  # and runs 200 ms
    for run in runs:
        driver.finish(run, "w1", ok=int(run.id[1:]) >= 10, retryable=False)
    rows = queries.stats(driver.read(), driver.now - 3600, driver.now + 60, "actor")["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["group"], row["submitted"], row["succeeded"], row["failed"]) == ("a", 100, 90, 10)
    assert row["failure_rate"] == pytest.approx(0.1)
    assert row["queue_wait_p50"] == pytest.approx(3.0, rel=0.05) and row["run_p99"] == pytest.approx(0.2, rel=0.05)
    by_worker = queries.stats(driver.read(), driver.now - 3600, driver.now + 60, "worker")["rows"]
    assert [(r["group"], r["succeeded"], r["failed"]) for r in by_worker] == [("w1", 90, 10)]


def test_a_batch_recorded_twice_counts_once(driver: Recorded) -> None:
    driver.submit("t1")
    batch = driver.machine.applied
    driver.history.record(batch, [("t1", "submitted", driver.now, 0, "", ("a", [], {}, {}, 0, 0.0))])
    driver.submit("t2")
    rows = queries.stats(driver.read(), 0, driver.now + 60, "actor")["rows"]
    assert rows[0]["submitted"] == 2


def test_old_finished_tasks_are_trimmed_and_open_ones_kept(tmp_path: Path) -> None:
    history = History(str(tmp_path), Retention(max_age=3600.0))
    driver = Recorded(history)
    try:
        driver.submit("old-done")
        driver.finish(driver.dispatch()[0])
        driver.submit("old-queued")
        driver.now += 7200.0
        driver.submit("new")
        conn = driver.read()
        writer_side = connect(history.path)
        assert history.trim(writer_side, driver.now) == 1
        assert [t["id"] for t in queries.list_tasks(conn, Filters())["tasks"]] == ["new", "old-queued"]
        assert queries.show_task(conn, "old-done") is None
    finally:
        history.close()


def test_values_over_the_cap_are_stored_truncated_naming_it(tmp_path: Path) -> None:
    history = History(str(tmp_path), Retention(value_bytes=100))
    driver = Recorded(history)
    try:
        driver.submit("big", args=["x" * 1000])
        shown = queries.show_task(driver.read(), "big")
        assert shown is not None and isinstance(shown["args"], str)
        assert "truncated" in shown["args"] and "100-byte cap" in shown["args"]
    finally:
        history.close()


def _traceback(function: str, line: int) -> str:
    return (f'Traceback (most recent call last):\n  File "/srv/app/worker.py", line 10, in run\n    x()\n'
            f'  File "/srv/app/billing.py", line {line}, in {function}\n    raise KeyError(k)\n')


def test_an_error_fingerprint_ignores_what_varies_and_keeps_where_it_was_raised() -> None:
    from qrt.history.fingerprint import fingerprint, normalised, top_frame

    assert normalised("no user 'u-41' at 0x7f3a after 3.5 s (id 9f8e7d6c5b4a)") == "no user … at … after … s (id …)"
    assert top_frame(_traceback("charge", 42)) == "billing.py:charge"
    assert top_frame("") == ""
    same = fingerprint("KeyError", "'user-41'", _traceback("charge", 42))
    assert same == fingerprint("KeyError", "'user-7'", _traceback("charge", 43))  # another line of it too
    assert same != fingerprint("KeyError", "'user-41'", _traceback("refund", 42))
    assert same != fingerprint("ValueError", "'user-41'", _traceback("charge", 42))


def test_dead_letters_group_by_fingerprint_and_a_group_lists_exactly_its_letters(driver: Recorded) -> None:
    errors = {"a": ("KeyError", "'user-1'", "charge"), "b": ("KeyError", "'user-2'", "charge"),
              "c": ("KeyError", "'user-3'", "charge"), "d": ("TimeoutError", "after 5 s", "fetch")}
    driver.apply(C.Submit([Envelope(tid, "billing.charge", [], {}) for tid in errors]))
    for run in driver.dispatch("w1", ["billing.charge"], n=4):
        error_type, message, function = errors[run.id]
        driver.apply(C.Finish("w1", [Outcome(run.id, run.attempt, False, None, error_type, message,
                                             _traceback(function, 7), None, False)]))
        driver.now += 1.0
    conn = driver.read()
    groups = queries.dead_groups(conn)
    assert groups["total"] == 4
    assert [(g["count"], g["error_type"], g["message"], g["top_frame"]) for g in groups["groups"]] == [
        (3, "KeyError", "…", "billing.py:charge"), (1, "TimeoutError", "after … s", "billing.py:fetch")]
    big = groups["groups"][0]
    assert big["first_seen"] < big["last_seen"] and big["actors"] == ["billing.charge"]
    listed = queries.list_tasks(conn, Filters(state="dead", fingerprint=big["fingerprint"]))
    assert sorted(t["id"] for t in listed["tasks"]) == ["a", "b", "c"]
    driver.apply(C.DlqReplay(["a"]))  # replayed: no longer a dead letter of the group
    assert queries.dead_groups(driver.read())["groups"][0]["count"] == 2


def test_a_live_tail_gets_the_events_after_its_cursor(driver: Recorded) -> None:
    driver.apply(C.Submit([Envelope("t1", "a", [], {})]))
    start = queries.events_after(driver.read(), 0, Filters())
    assert start["events"] == [] and start["next"] > 0  # from now on
    driver.apply(C.Submit([Envelope("t2", "a", [], {}), Envelope("t3", "b", [], {})]))
    driver.finish(driver.dispatch("w1", ["a"])[0], "w1")
    page = queries.events_after(driver.read(), start["next"], Filters(actor="a"))
    assert [(e["id"], e["event"]) for e in page["events"]] == [("t2", "submitted"), ("t1", "leased"),
                                                                ("t1", "succeeded")]
    assert queries.events_after(driver.read(), page["next"], Filters())["events"] == []


def test_a_filtered_tail_misses_no_event_behind_a_page_of_others(driver: Recorded) -> None:
    start = queries.events_after(driver.read(), 0, Filters())["next"]
    driver.apply(C.Submit([Envelope(f"b{i}", "b", [], {}) for i in range(30)]))
    driver.apply(C.Submit([Envelope("a1", "a", [], {})]))
    driver.apply(C.Submit([Envelope(f"c{i}", "b", [], {}) for i in range(30)]))
    conn, cursor, seen = driver.read(), start, []
    for _ in range(10):  # a page of 10 events at a time, filtered to actor a
        page = queries.events_after(conn, cursor, Filters(actor="a"), limit=10)
        seen += [e["id"] for e in page["events"]]
        assert page["next"] >= cursor
        cursor = page["next"]
    assert seen == ["a1"]
