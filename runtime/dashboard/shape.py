"""What the dashboard's pages show, shaped from the cluster's answers (pure: no I/O here).

Filters come from the URL (so a view can be shared) and go to `list_tasks` as the CLI sends them;
a task's events become its attempts (wait and run time of each); per-minute stats become the
overview's chart series.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..durations import parse_duration, parse_time
from ..protocol.history import STATES

# The overview's ranges: seconds back from now, and how often its charts are read again.
RANGES = {"1h": (3600.0, 10.0), "24h": (86400.0, 60.0), "7d": (604800.0, 300.0)}
FILTER_NAMES = ("actor", "state", "worker", "key", "since", "from", "until", "error", "args", "fingerprint")
PAGE_SIZES = (20, 50, 100, 200)


@dataclass
class TaskQuery:
    """The task list's filters as the URL gives them (`form`, to fill the form again and build
    links) and as `list_tasks` takes them (`filters`)."""

    form: dict[str, str] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    limit: int = 50
    cursor: int | None = None

    def link(self, **changes: Any) -> str:
        """The query string of this view with `changes` (None drops a parameter)."""
        from urllib.parse import urlencode
        params: dict[str, Any] = {**self.form, "limit": self.limit}
        for name, value in changes.items():
            if value is None:
                params.pop(name, None)
            else:
                params[name] = value
        return urlencode({k: v for k, v in params.items() if v not in ("", None)})


def task_query(params: Mapping[str, str], now: float | None = None) -> TaskQuery:
    """The filters of a task-list URL; ValueError names the first that does not read."""
    now = time.time() if now is None else now
    form = {name: params.get(name, "").strip() for name in FILTER_NAMES}
    filters: dict[str, Any] = {name: form[name] or None for name in ("actor", "worker", "error", "args",
                                                                     "fingerprint")}
    if form["state"]:
        if form["state"] not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {form['state']!r}")
        filters["state"] = form["state"]
    if form["key"]:
        name, sep, value = form["key"].partition("=")
        if not sep or not name:
            raise ValueError(f"key {form['key']!r} is not NAME=VALUE")
        filters["key"] = (name, value)
    if form["since"] and form["from"]:
        raise ValueError("give since or from, not both")
    if form["since"]:
        filters["since"] = now - parse_duration(form["since"])
    if form["from"]:
        filters["since"] = parse_time(form["from"])
    if form["until"]:
        filters["until"] = parse_time(form["until"])
    limit = int(params.get("limit") or 50)
    if limit not in PAGE_SIZES:
        raise ValueError(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    cursor = params.get("cursor")
    return TaskQuery(form, {k: v for k, v in filters.items() if v is not None}, limit,
                     int(cursor) if cursor else None)


@dataclass
class Attempt:
    attempt: int
    worker: str
    leased_at: float
    wait: float  # from due to leased
    ended_at: float | None = None
    run: float | None = None  # from leased to its outcome
    outcome: str = "running"  # succeeded, retried, dead, lost, cancelled, or running


def attempts(events: list[dict[str, Any]]) -> list[Attempt]:
    """Each attempt of a task from its timeline: its worker, its wait in the queue and run time."""
    out: list[Attempt] = []
    due = None
    current: Attempt | None = None
    for e in events:
        event, at = e["event"], e["at"]
        detail = e.get("detail") or {}
        if event == "submitted":
            due = detail.get("eta") or at if isinstance(detail, dict) else at
        elif event in ("queued", "lost", "replayed"):
            due = at
        if event == "leased":
            current = Attempt(e["attempt"], e["worker"], at, max(0.0, at - (due if due is not None else at)))
            out.append(current)
        elif current is not None and event in ("succeeded", "retried", "dead", "lost", "cancelled"):
            current.ended_at, current.run, current.outcome = at, max(0.0, at - current.leased_at), event
            current = None
        if event == "retried" and isinstance(detail, dict):
            due = at + float(detail.get("delay") or 0.0)
    return out


def chart_series(rows: list[dict[str, Any]], since: float, until: float) -> dict[str, list[Any]]:
    """Per-minute stats rows as uPlot's columns: one x per minute of the range (a minute without
    tasks shows 0, and no percentile), throughput (ended attempts per second), failures per
    minute, queue wait and run time p50/p95 (seconds)."""
    by_minute = {int(r["group"]): r for r in rows}
    first, last = int(since // 60) * 60, int(until // 60) * 60
    series: dict[str, list[Any]] = {name: [] for name in ("x", "throughput", "failed", "wait_p50", "wait_p95",
                                                          "run_p50", "run_p95")}
    for minute in range(first, last + 60, 60):
        row = by_minute.get(minute)
        series["x"].append(minute)
        series["throughput"].append(round((row["succeeded"] + row["failed"]) / 60, 3) if row else 0)
        series["failed"].append(row["failed"] if row else 0)
        for name, source in (("wait_p50", "queue_wait_p50"), ("wait_p95", "queue_wait_p95"),
                             ("run_p50", "run_p50"), ("run_p95", "run_p95")):
            series[name].append(row[source] if row else None)
    return series


def firing(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every firing alert, oldest first: {rule, actor, since, value, text}."""
    out = [{"rule": r["name"], **f} for r in rules for f in r.get("firing", [])]
    return sorted(out, key=lambda a: a.get("since") or 0.0)


def limit_text(use: dict[str, Any]) -> str:
    """One limit as operators write it: "100/60s", "8 at once", with its key if any."""
    key = f" per {use['key']}" if use.get("key") else ""
    if use["kind"] == "rate":
        period = use["period"]
        unit = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "d"}.get(period, f"{period:g}s")
        return f"{use['limit']}/{unit}{key}"
    return f"{use['limit']} at once{key}"
