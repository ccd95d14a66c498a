"""Cron expressions and replicated cron entries: once per scheduled time, missed fires counted."""

from __future__ import annotations

import datetime
import os
import pickle

import pytest

from qrt.cron_expr import CronExpr
from qrt.state import commands as C

from .statehelp import Driver

UTC = datetime.UTC


def at(*fields: int) -> float:
    return datetime.datetime(*fields, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), [
    ("*/5 * * * *", "UTC", at(2026, 11, 25, 10, 2, 30), at(2026, 11, 25, 10, 5)),
    ("*/2 * * * * *", "UTC", at(2026, 11, 25, 10, 2, 30), at(2026, 11, 25, 10, 2, 32)),
    ("0 9 * * mon-fri", "Europe/Paris", at(2026, 11, 27, 9, 0), at(2026, 11, 30, 8, 0)),  # Friday -> Monday
    ("30 2 * * *", "Europe/Paris", at(2026, 3, 28, 12, 0), at(2026, 3, 29, 1, 30)),  # 02:30 skipped by DST
    ("0 0 1,15 * *", "UTC", at(2026, 1, 1, 0, 0), at(2026, 1, 15)),
    ("0 0 29 2 *", "UTC", at(2026, 1, 1), at(2028, 2, 29)),
])
def test_next_fire_time(expr: str, tz: str, after: float, expected: float) -> None:
    assert CronExpr.parse(expr, tz).next_after(after) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("* * *", "5 fields"), ("61 * * * *", "outside 0-59"), ("*/0 * * * *", "positive"),
    ("0 0 30 2 *", "never fires"), ("x * * * *", "not a number"),
])
def test_bad_expressions_name_the_problem(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronExpr.parse(expr)


def test_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        CronExpr.parse("* * * * *", "Mars/Olympus")


def test_an_entry_fires_once_per_scheduled_time_whatever_the_batches() -> None:
    d = Driver()
    d.now = at(2026, 11, 25, 10, 0, 0)
    d.apply(C.CronAdd("beat", "a", "*/10 * * * * *", "UTC", [1], {}))
    fired = []
    for _ in range(60):  # batches every 0.5 s for 30 s: fires at :10, :20, :30
        d.now += 0.5
        d.apply(C.Tick())
        fired += [t for t in d.machine.tasks if t.startswith("cron:")]
    assert sorted(set(fired)) == [f"cron:beat:{int(at(2026, 11, 25, 10, 0, s))}" for s in (10, 20, 30)]
    assert d.machine.tasks[fired[0]].args == [1]
    assert d.machine.cron.entries["beat"].missed == 0


def test_an_outage_fires_the_latest_time_once_and_counts_the_rest_as_missed() -> None:
    d = Driver()
    d.now = at(2026, 11, 25, 10, 0, 0)
    d.apply(C.CronAdd("beat", "a", "* * * * *", "UTC", [], {}))
    d.now = at(2026, 11, 25, 10, 5, 30)  # no leader for five and a half minutes
    d.apply(C.Tick())
    entry = d.machine.cron.entries["beat"]
    assert entry.missed == 4 and entry.last_fire == at(2026, 11, 25, 10, 5)
    assert [t for t in d.machine.tasks if t.startswith("cron:")] == [f"cron:beat:{int(at(2026, 11, 25, 10, 5))}"]
    assert entry.next_fire == at(2026, 11, 25, 10, 6)


def test_actors_declare_entries_and_a_skip_policy_skips_late_fires() -> None:
    d = Driver()
    d.now = at(2026, 11, 25, 10, 0, 0)
    d.apply(C.RegisterActors({"a": {"cron": "0 * * * *", "missed": "skip"}}))
    assert d.machine.cron.entries["a"].source == "actor"
    d.now = at(2026, 11, 25, 11, 5)  # 5 minutes late: skipped
    d.apply(C.Tick())
    assert not [t for t in d.machine.tasks if t.startswith("cron:")]
    assert d.machine.cron.entries["a"].missed == 1
    d.apply(C.RegisterActors({"a": {}}))
    assert "a" not in d.machine.cron.entries


def test_a_delayed_task_missed_during_an_outage_is_skipped_only_if_its_actor_says_so() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"skipper": {"missed": "skip"}}))
    d.submit("runs", delay=10)
    d.submit("skipped", actor="skipper", delay=10)
    d.now += 10 + 3600
    d.apply(C.Tick())
    assert d.state("runs") == "queued" and d.state("skipped") == "expired"


def test_a_very_long_outage_still_fires_once() -> None:
    d = Driver()
    d.now = at(2026, 11, 25, 10, 0, 0)
    d.apply(C.CronAdd("beat", "a", "* * * * * *", "UTC", [], {}))
    d.now += 25_000.5  # more missed seconds than are counted one by one
    d.apply(C.Tick())
    d.now += 0.1
    d.apply(C.Tick())
    assert len([t for t in d.machine.tasks if t.startswith("cron:")]) == 1
    assert d.machine.cron.entries["beat"].last_fire == int(d.now - 0.1)


def test_long_entry_names_give_ids_within_the_limit_and_operators_cannot_take_an_actors_name() -> None:
    d = Driver()
    d.now = at(2026, 11, 25, 10, 0, 0)
    d.apply(C.CronAdd("n" * 200, "a", "* * * * * *", "UTC", [], {}))
    d.apply(C.RegisterActors({"own": {"cron": "* * * * *"}}))
    [effects] = d.apply(C.CronAdd("own", "a", "* * * * * *", "UTC", [], {}))
    assert effects[-1].n == 0 and d.machine.cron.entries["own"].source == "actor"
    d.now += 1
    d.apply(C.Tick())
    [task_id] = [t for t in d.machine.tasks if t.startswith("cron:")]
    assert len(task_id) <= 200


def test_an_entry_parses_its_expression_once_when_put_and_pickles_as_its_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = Driver()
    d.now = at(2026, 11, 25, 10, 0, 0)
    d.apply(C.CronAdd("beat", "a", "*/10 * * * * *", "Europe/Paris", [], {}))
    d.apply(C.RegisterActors({"own": {"cron": "* * * * *"}}))

    def parse_again(text: str, tz: str = "UTC") -> CronExpr:
        raise AssertionError(f"{text!r} parsed again")
    monkeypatch.setattr(CronExpr, "parse", parse_again)
    d.apply(C.RegisterActors({"own": {"cron": "* * * * *"}}))  # a worker's hello again: unchanged
    for _ in range(3):
        d.now += 10
        d.apply(C.Tick())
    assert len([t for t in d.machine.tasks if t.startswith("cron:beat:")]) == 3
    monkeypatch.undo()

    entry = d.machine.cron.entries["beat"]
    snapshot = pickle.dumps(d.machine)  # what a Raft snapshot holds
    assert b"frozenset" not in snapshot  # the expression, not its parsed sets
    restored = pickle.loads(snapshot).cron.entries["beat"]
    assert restored.schedule == entry.schedule and restored.view() == entry.view()


def test_time_zones_come_from_the_pinned_tzdata_package_not_the_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # zoneinfo prefers the host's database: a replica whose copy is missing a zone or older computed
    # other fire times than the rest (replicas diverge unseen). Here a host whose "Europe/Paris" is UTC.
    import shutil
    import zoneinfo

    import tzdata

    fake = tmp_path / "zoneinfo"
    (fake / "Europe").mkdir(parents=True)
    shutil.copy(os.path.join(os.path.dirname(tzdata.__file__), "zoneinfo", "UTC"), fake / "Europe" / "Paris")
    zoneinfo.reset_tzpath([str(fake)])
    zoneinfo.ZoneInfo.clear_cache()
    try:
        expr = CronExpr.parse("0 12 * * *", "Europe/Paris")
        noon_utc = 1_783_339_200.0  # 2026-07-06 12:00 UTC, summer time in Paris (UTC+2)
        assert expr.next_after(noon_utc - 86400) == noon_utc - 2 * 3600
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()
