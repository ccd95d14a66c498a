"""What the dashboard's pages show, shaped from the cluster's answers (runtime/dashboard/shape.py)."""

from __future__ import annotations

import pytest

from qrt.dashboard.shape import attempts, chart_series, firing, limit_text, task_query


def test_a_task_urls_filters_read_as_the_cli_sends_them() -> None:
    query = task_query({"actor": "mail.send", "state": "dead", "key": "tenant=acme", "since": "1h",
                        "error": "SMTP", "limit": "20", "cursor": "4294967296"}, now=10_000.0)
    assert query.filters == {"actor": "mail.send", "state": "dead", "key": ("tenant", "acme"), "since": 6400.0,
                             "error": "SMTP"}
    assert (query.limit, query.cursor) == (20, 4294967296)
    assert "cursor=7" in query.link(cursor=7) and "state=dead" in query.link(cursor=7)
    assert "state" not in query.link(state=None)
    ranged = task_query({"from": "1700000000", "until": "1700003600"})
    assert (ranged.filters["since"], ranged.filters["until"]) == (1700000000.0, 1700003600.0)


@pytest.mark.parametrize(("params", "says"), [
    ({"state": "exploded"}, "state must be one of"), ({"key": "tenant"}, "is not NAME=VALUE"),
    ({"since": "1h", "from": "1700000000"}, "since or from"), ({"since": "soon"}, "not a duration"),
    ({"until": "yesterday"}, "neither epoch seconds nor an ISO time"), ({"limit": "7"}, "limit must be one of"),
])
def test_a_filter_that_does_not_read_is_named(params: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        task_query(params)


def test_each_attempt_has_its_worker_wait_and_run_time() -> None:
    events = [{"at": 100.0, "event": "submitted", "attempt": 0, "worker": "", "detail": None},
              {"at": 100.5, "event": "leased", "attempt": 1, "worker": "w1"},
              {"at": 101.0, "event": "retried", "attempt": 1, "worker": "w1", "detail": {"delay": 2.0}},
              {"at": 103.0, "event": "queued", "attempt": 1, "worker": ""},
              {"at": 103.25, "event": "leased", "attempt": 2, "worker": "w2"},
              {"at": 104.0, "event": "succeeded", "attempt": 2, "worker": "w2"}]
    shown = attempts(events)
    assert [(a.attempt, a.worker, a.wait, a.run, a.outcome) for a in shown] == [
        (1, "w1", 0.5, 0.5, "retried"), (2, "w2", 0.25, 0.75, "succeeded")]
    running = attempts(events[:2])
    assert running[0].outcome == "running" and running[0].run is None


def test_chart_series_have_a_point_for_every_minute_of_the_range() -> None:
    rows = [{"group": 120, "submitted": 6, "succeeded": 5, "failed": 1, "queue_wait_p50": 0.01,
             "queue_wait_p95": 0.02, "run_p50": 0.1, "run_p95": 0.2}]
    series = chart_series(rows, since=60.0, until=239.0)
    assert series["x"] == [60, 120, 180]
    assert series["throughput"] == [0, 0.1, 0] and series["failed"] == [0, 1, 0]
    assert series["wait_p95"] == [None, 0.02, None]


def test_firing_alerts_and_limits_read_as_operators_write_them() -> None:
    rules = [{"name": "backlog", "firing": [{"actor": "a", "since": 5.0, "value": 130, "text": "old"}]},
             {"name": "quiet", "firing": []}]
    assert firing(rules) == [{"rule": "backlog", "actor": "a", "since": 5.0, "value": 130, "text": "old"}]
    assert limit_text({"kind": "rate", "limit": 100, "period": 60.0}) == "100/m"
    assert limit_text({"kind": "rate", "limit": 5, "period": 2.0, "key": "tenant"}) == "5/2s per tenant"
    assert limit_text({"kind": "concurrency", "limit": 8}) == "8 at once"
