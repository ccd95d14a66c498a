"""Questions about the task history, answered from this node's SQLite file (any node: every one
holds the same history). Read-only; each call takes its own connection's snapshot (WAL), so the
writer never waits for a reader.

The answers are the JSON shapes of docs/protocol.md ("tasks_list", "task_show", "stats",
"task_events"): times are epoch seconds (leader time), durations seconds.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from . import histogram
from .fingerprint import normalised, top_frame
from .recorder import id_hash
from .schema import DIMENSIONS, loaded, trace_id

MAX_PAGE = 1000
MAX_JOURNAL_PAGE = 5000  # events per `history_journal` page (node to node)
LIST_COLUMNS = ("seq", "id", "actor", "state", "attempt", "worker", "submitted_at", "started_at", "finished_at",
                "error_type", "error_message")


@dataclass(slots=True)
class Filters:
    """What `qrt tasks list` (and the bulk commands, and `tail`) select: all given must hold."""

    actor: str | None = None
    state: str | None = None
    worker: str | None = None
    key: tuple[str, str] | None = None  # (name, value as text)
    since: float | None = None  # last activity at or after (epoch seconds)
    until: float | None = None  # ... and before
    error: str | None = None  # text in the error's type, message or traceback
    args: str | None = None  # text in the arguments (JSON)
    fingerprint: str | None = None  # its error's (fingerprint.py): a group of dead letters

    def where(self, table: str = "") -> tuple[list[str], list[Any]]:
        """SQL conditions on the tasks table (named `table` in the query, if given), and their values."""
        t = f"{table}." if table else ""
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("actor", "state", "worker", "fingerprint"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{t}{column} = ?")
                params.append(value)
        if self.key is not None:
            clauses.append(f"{t}seq IN (SELECT seq FROM task_keys WHERE name = ? AND value = ?)")
            params.extend(self.key)
        if self.since is not None:
            clauses.append(f"{t}updated_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{t}updated_at < ?")
            params.append(self.until)
        if self.error:
            clauses.append(f"({t}error_type LIKE ? ESCAPE '\\' OR {t}error_message LIKE ? ESCAPE '\\' "
                           f"OR {t}traceback LIKE ? ESCAPE '\\')")
            params.extend([_like(self.error)] * 3)
        if self.args:
            clauses.append(f"({t}args LIKE ? ESCAPE '\\' OR {t}kwargs LIKE ? ESCAPE '\\')")
            params.extend([_like(self.args)] * 2)
        return clauses, params


def _like(text: str) -> str:
    return "%" + re.sub(r"([%_\\])", r"\\\1", text) + "%"


def list_tasks(conn: sqlite3.Connection, filters: Filters, limit: int = 50,
               cursor: int | None = None) -> dict[str, Any]:
    """Newest first; `next` is the cursor of the following page (None: this is the last)."""
    limit = max(1, min(limit, MAX_PAGE))
    clauses, params = filters.where()
    if cursor is not None:
        clauses.append("seq < ?")
        params.append(cursor)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM tasks {where} ORDER BY seq DESC LIMIT ?",
                        (*params, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    tasks = [{name: row[name] for name in LIST_COLUMNS if name != "seq"} for row in rows]
    return {"tasks": tasks, "next": rows[-1]["seq"] if more else None}


def matching_ids(conn: sqlite3.Connection, filters: Filters, limit: int) -> list[tuple[str, str]]:
    """(id, state) of every task the filters select, newest first, at most `limit` (bulk commands)."""
    clauses, params = filters.where()
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return [(r[0], r[1]) for r in conn.execute(f"SELECT id, state FROM tasks {where} ORDER BY seq DESC LIMIT ?",
                                               (*params, limit))]


def show_task(conn: sqlite3.Connection, task_id: str) -> dict[str, Any] | None:
    """The newest task with this id: what it carried, how it ended, and every event of it."""
    row = conn.execute("SELECT * FROM tasks WHERE idh = ? AND id = ? ORDER BY seq DESC LIMIT 1",
                       (id_hash(task_id), task_id)).fetchone()
    if row is None:
        return None
    events = [{"at": row["submitted_at"], "event": "submitted", "attempt": 0, "worker": "",
               "detail": {"eta": row["eta"]} if row["eta"] else None}]
    events += conn.execute("SELECT at, event, attempt, worker, detail FROM events WHERE seq = ? ORDER BY n",
                           (row["seq"],)).fetchall()
    return {
        "id": row["id"], "actor": row["actor"], "state": row["state"], "attempt": row["attempt"],
        "worker": row["worker"], "priority": row["priority"],
        "args": loaded(row["args"]), "kwargs": loaded(row["kwargs"]), "keys": loaded(row["keys"]),
        "result": loaded(row["result"]), "error_type": row["error_type"], "error_message": row["error_message"],
        "traceback": row["traceback"], "submitted_at": row["submitted_at"], "started_at": row["started_at"],
        "finished_at": row["finished_at"], "trace_id": trace_id(row["traceparent"]),
        "events": [{"at": e["at"], "event": e["event"], "attempt": e["attempt"], "worker": e["worker"],
                    **({"detail": _loaded(e["detail"])} if e["detail"] is not None else {})} for e in events],
    }


def dead_groups(conn: sqlite3.Connection, limit: int = 200) -> dict[str, Any]:
    """The dead letters grouped by error fingerprint (fingerprint.py), the largest groups first:
    each with its count, first and last seen, its actors, and the newest letter's error."""
    rows = conn.execute(
        "SELECT fingerprint, count(*) AS n, min(finished_at) AS first, max(finished_at) AS last, max(seq) AS newest, "
        "json_group_array(DISTINCT actor) AS actors FROM tasks WHERE fingerprint IS NOT NULL AND state = 'dead' "
        "GROUP BY fingerprint ORDER BY n DESC, last DESC LIMIT ?", (limit,)).fetchall()
    groups = []
    for row in rows:
        sample = conn.execute("SELECT id, error_type, error_message, traceback FROM tasks WHERE seq = ?",
                              (row["newest"],)).fetchone()
        groups.append({"fingerprint": row["fingerprint"], "count": row["n"], "first_seen": row["first"],
                       "last_seen": row["last"], "actors": sorted(loaded(row["actors"])),
                       "error_type": sample["error_type"], "message": normalised(sample["error_message"] or ""),
                       "top_frame": top_frame(sample["traceback"]), "sample_id": sample["id"]})
    total = conn.execute("SELECT count(*) FROM tasks WHERE state = 'dead'").fetchone()[0]
    return {"groups": groups, "total": total}


def with_present(record: dict[str, Any] | None, present: dict[str, Any] | None) -> dict[str, Any] | None:
    """A task as the CLI and the dashboard show it: the history's record (`show_task`), its state,
    attempt and worker taken from the state machine's present view (`describe`) when there is one
    (the history lags it by a few ms, or does not hold it: its node keeps none). None: neither."""
    if record is None:
        if present is None:
            return None
        return {**present, "args": None, "kwargs": None, "result": None, "traceback": None, "events": []}
    if present is not None:
        record.update(state=present["state"], attempt=present["attempt"], worker=present["worker"] or record["worker"])
    return record


def _events_in(after: int, before: int, limit: int) -> str:
    """SQL of the first `limit` events with `after` < n < `before` (parameters: after, before, limit,
    twice), `submitted` ones put back from their task's row (schema.py): each side is read in n
    order and cut at `limit`, so a page costs the same however far the range goes."""
    return ("SELECT * FROM (SELECT n, seq, at, event, attempt, worker, detail FROM events "
            "WHERE n > ? AND n < ? ORDER BY n LIMIT ?) UNION ALL "
            "SELECT * FROM (SELECT seq, seq, submitted_at, 'submitted', 0, '', NULL FROM tasks "
            "WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?)")


NEVER = (1 << 63) - 1  # above every event number (the largest SQLite INTEGER)


def newest_event(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT max(coalesce((SELECT max(n) FROM events), 0), "
                            "coalesce((SELECT max(seq) FROM tasks), 0))").fetchone()[0])


def events_after(conn: sqlite3.Connection, after: int, filters: Filters, limit: int = 500) -> dict[str, Any]:
    """Events newer than cursor `after` of the tasks the filters select, oldest first (a live tail:
    ask again with `next`). `after` 0: from the newest event on (nothing older).

    At most `limit` events are read past the cursor, whatever the filters keep of them, so a page
    costs the same however rare its matches; `next` is then where the reading stopped, never past
    an event it did not look at."""
    if after <= 0:  # (an empty history's "now" is 1: event numbers start at 1 << 32)
        return {"events": [], "next": max(1, newest_event(conn))}
    limit = max(1, min(limit, MAX_PAGE))
    # The window read: the first `limit` events past the cursor. Each side of the union (schema.py:
    # `submitted` events are task rows) is complete up to its `limit`-th row, if it has that many.
    ends = [row[1] for row in (
        conn.execute("SELECT count(*), max(n) FROM (SELECT n FROM events WHERE n > ? ORDER BY n LIMIT ?)",
                     (after, limit)).fetchone(),
        conn.execute("SELECT count(*), max(seq) FROM (SELECT seq FROM tasks WHERE seq > ? ORDER BY seq LIMIT ?)",
                     (after, limit)).fetchone()) if row[0] == limit]
    window_end = min(ends) if ends else NEVER - 1
    clauses, params = filters.where("t")
    task_where = "".join(f" AND {c}" for c in clauses)
    before = window_end + 1
    rows = conn.execute(
        "SELECT e.n, e.at, e.event, e.attempt, e.worker, t.id, t.actor, t.state, t.error_type, t.error_message "
        f"FROM ({_events_in(after, before, limit)}) e JOIN tasks t ON t.seq = e.seq WHERE 1{task_where} "
        "ORDER BY e.n LIMIT ?", (after, before, limit, after, before, limit, *params, limit)).fetchall()
    events = [{"at": r["at"], "event": r["event"], "attempt": r["attempt"], "worker": r["worker"], "id": r["id"],
               "actor": r["actor"], "state": r["state"], "error_type": r["error_type"],
               "error_message": r["error_message"]} for r in rows]
    if len(rows) == limit:
        cursor = rows[-1]["n"]  # a full page: more of the window may match
    elif ends:
        cursor = window_end  # the whole window read
    else:
        cursor = max(after, rows[-1]["n"] if rows else 0, newest_event(conn))  # read up to the newest
    return {"events": events, "next": cursor}


def stats(conn: sqlite3.Connection, since: float, until: float, by: str = "actor",
          actor: str | None = None) -> dict[str, Any]:
    """Per group (actor, worker, key value "NAME=VALUE", or minute), over [since, until) by the
    minute: submitted, succeeded and failed attempts, the failure rate, and the p50/p95/p99 of queue
    wait and run time (histogram.py: within ~5 %). `actor`: its tasks only (by actor or minute)."""
    if by not in DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    if actor is not None and by not in ("actor", "minute"):
        raise ValueError(f"stats by {by} cannot be narrowed to one actor (the rollups count them apart)")
    # Per minute, every task counts once under its actor: the minute's total is the sum of those.
    sql = "SELECT minute, value, submitted, succeeded, failed, wait, run FROM rollup WHERE dim = ? AND minute >= ? " \
          "AND minute < ?"
    params: list[Any] = ["actor" if by == "minute" else by, int(since // 60), int(-(-until // 60))]
    if actor is not None:
        sql += " AND value = ?"
        params.append(actor)
    rows = conn.execute(sql, params).fetchall()
    groups: dict[Any, dict[str, Any]] = {}
    for row in rows:
        group = row["minute"] * 60 if by == "minute" else row["value"]
        g = groups.setdefault(group, {"submitted": 0, "succeeded": 0, "failed": 0, "wait": {}, "run": {}})
        for name in ("submitted", "succeeded", "failed"):
            g[name] += row[name]
        for name in ("wait", "run"):
            histogram.merge(g[name], {int(b): n for b, n in loaded(row[name]).items()})
    out = []
    for group in sorted(groups):
        g = groups[group]
        ended = g["succeeded"] + g["failed"]
        entry: dict[str, Any] = {"group": group, "submitted": g["submitted"], "succeeded": g["succeeded"],
                                 "failed": g["failed"], "failure_rate": g["failed"] / ended if ended else 0.0}
        for name, key in (("wait", "queue_wait"), ("run", "run")):
            for q in (50, 95, 99):
                entry[f"{key}_p{q}"] = histogram.percentile(g[name], q / 100)
        out.append(entry)
    return {"rows": out}


def journal(conn: sqlite3.Connection, after: int, before: int, limit: int = 5000) -> dict[str, Any]:
    """The events with `after` < n < `before`, oldest first, as the state machine's journal held
    them (batch, task id, event, at, attempt, worker, detail): what a node that missed those
    batches (it installed a snapshot) records in their place (writer.py, `_backfill`). `next`: the
    cursor of the following page, None when done; `complete`: whether this node holds every batch
    of the range (it missed none itself)."""
    rows = conn.execute(
        "SELECT e.n, e.event, e.at, e.attempt, e.worker, e.detail, t.id, t.actor, t.args, t.kwargs, t.keys, "
        "t.priority, t.eta, t.result, t.error_type, t.error_message, t.traceback, t.traceparent "
        f"FROM ({_events_in(after, before, limit + 1)}) e JOIN tasks t ON t.seq = e.seq ORDER BY e.n LIMIT ?",
        (after, before, limit + 1, after, before, limit + 1, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    events = [[r["n"] >> 32, r["id"], r["event"], r["at"], r["attempt"], r["worker"], _detail(r)] for r in rows]
    gaps = conn.execute("SELECT v FROM meta WHERE k = 'gaps'").fetchone()
    first, last = (after >> 32), (before >> 32)
    missed = any(a <= last and b >= first for a, b in (loaded(gaps[0]) if gaps else []))
    recorded = conn.execute("SELECT v FROM meta WHERE k = 'last_batch'").fetchone()
    complete = not missed and recorded is not None and int(recorded[0]) >= last - 1
    return {"events": events, "next": rows[-1]["n"] if more else None, "complete": complete}


def _loaded(detail: Any) -> Any:
    return loaded(detail) if isinstance(detail, str) else detail


def _detail(r: sqlite3.Row) -> Any:
    """An event's detail as the state machine gave it (history/recorder.py), from what was stored.
    A task's result and error are its latest: a replayed task's earlier ones are not kept."""
    event = r["event"]
    error = None if r["error_type"] is None else \
        {"type": r["error_type"], "message": r["error_message"], "traceback": r["traceback"] or ""}
    if event == "submitted":
        submitted = [r["actor"], loaded(r["args"]), loaded(r["kwargs"]), loaded(r["keys"]), r["priority"],
                     r["eta"] or 0.0]
        return [*submitted, {"traceparent": r["traceparent"]}] if r["traceparent"] else submitted
    if event == "succeeded":
        return loaded(r["result"])
    if event == "retried":
        return [(loaded(r["detail"]) or {}).get("delay", 0.0), error]
    if event in ("dead", "cancelled", "expired"):
        return error
    return loaded(r["detail"])
