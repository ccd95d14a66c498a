"""The projection: the state machine's events of each batch become rows of the history database.

Runs on the history's own thread (writer.py), never on pysyncobj's or the event loop. A flush
turns many batches into one transaction: each task touched gets one INSERT (new) or one UPDATE
(the columns its events changed, the last value winning), every event one row, and the per-minute
rollups their sums. The batch number of the last batch recorded is stored in the same transaction,
so a batch is recorded exactly once, whatever restarts and replays happen.

Events (state/store.py and machine.py emit them; detail in brackets):
    submitted [actor, args, kwargs, keys, priority, eta or 0]  -> queued, or delayed when eta
    queued     a delayed task came due                           -> queued
    leased     to `worker`, at `attempt`                        -> running
    retried    [delay, error]: its attempt failed               -> delayed
    lost       its worker was lost or left                      -> queued
    succeeded  [result]                                         -> succeeded
    dead       [error]: failed for good, in the dead letters    -> dead
    cancelled  [error or None]                                  -> cancelled
    expired    [error]                                          -> expired
    replayed   a dead letter runs again                         -> queued
    purged     [why]: a dead letter dropped                     -> failed (ended failed, not retried)
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ..state.model import HistoryEvent, TaskError
from . import histogram
from .schema import event_number, stored

STATE_AFTER = {"queued": "queued", "leased": "running", "retried": "delayed", "lost": "queued",
               "succeeded": "succeeded", "dead": "dead", "cancelled": "cancelled", "expired": "expired",
               "replayed": "queued", "purged": "failed"}
CLOSED = frozenset({"succeeded", "cancelled", "expired", "failed"})  # nothing more happens to these
ENDS_AN_ATTEMPT = frozenset({"succeeded", "retried", "dead"})


def key_text(value: Any) -> str:
    """A key value as `--key NAME=VALUE` matches it: strings as they are, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=repr)


@dataclass(slots=True)
class _Open:
    """What the projection keeps of a task that may still change (to count its waits and runs)."""

    seq: int
    actor: str
    dims: list[tuple[str, str]]  # (dimension, value) it counts under, the worker's excepted
    state: str
    due_at: float
    worker: str = ""
    started_at: float = 0.0


@dataclass(slots=True)
class _Sums:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    wait: histogram.Histogram = field(default_factory=dict)
    run: histogram.Histogram = field(default_factory=dict)


class Recorder:
    def __init__(self, conn: sqlite3.Connection, value_cap: int) -> None:
        self.conn = conn
        self.value_cap = value_cap
        self.open: dict[str, _Open] = {}
        self.last_batch = int(self._meta("last_batch", 0))
        self.newest_at = float(self._meta("newest_at", 0.0))  # leader time of the newest event recorded
        self.unknown = 0  # events of tasks the history never saw submitted (it began after them)
        self._reset()

    def _reset(self) -> None:
        self._new: dict[int, dict[str, Any]] = {}  # seq -> row of a task first seen in this flush
        self._changed: dict[int, dict[str, Any]] = {}  # seq -> columns changed of an older row
        self._events: list[tuple[Any, ...]] = []
        self._keys: list[tuple[str, str, int]] = []
        self._sums: dict[tuple[int, str, str], _Sums] = {}

    def _meta(self, key: str, default: Any) -> Any:
        row = self.conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return default if row is None else row[0]

    # -- events -----------------------------------------------------------------------------

    def add(self, batch: int, events: list[HistoryEvent]) -> bool:
        """Project one batch's events (False, and nothing done, for a batch already recorded)."""
        if batch <= self.last_batch:
            return False
        for index, (task_id, event, at, attempt, worker, detail) in enumerate(events):
            n = event_number(batch, index)
            if event == "submitted":
                self._submitted(n, task_id, at, detail)
                continue
            task = self.open.get(task_id) or self._load(task_id)
            if task is None:
                self.unknown += 1
                continue
            self._event(n, task, task_id, event, at, attempt, worker, detail)
        self.last_batch = batch
        if events:
            self.newest_at = max(self.newest_at, events[-1][2])
        return True

    def _submitted(self, n: int, task_id: str, at: float, detail: Any) -> None:
        actor, args, kwargs, keys, priority, eta = detail
        state = "delayed" if eta else "queued"
        dims = [("actor", actor)] + [("key", f"{name}={key_text(keys[name])}") for name in sorted(keys)]
        self.open[task_id] = _Open(n, actor, dims, state, eta or at)
        self._new[n] = {"seq": n, "id": task_id, "actor": actor, "state": state, "attempt": 0, "worker": "",
                        "priority": priority, "submitted_at": at, "due_at": eta or at, "updated_at": at,
                        "args": stored(args, self.value_cap), "kwargs": stored(kwargs, self.value_cap),
                        "keys": stored(keys, self.value_cap)}
        self._keys.extend((name, key_text(keys[name]), n) for name in keys)
        self._events.append((n, n, at, "submitted", 0, "", stored({"eta": eta} if eta else None, self.value_cap)))
        self._count(at, dims, "submitted")

    def _event(self, n: int, task: _Open, task_id: str, event: str, at: float, attempt: int, worker: str,
               detail: Any) -> None:
        cols: dict[str, Any] = {"state": STATE_AFTER[event], "updated_at": at, "attempt": attempt}
        if event == "leased":
            task.worker, task.started_at = worker, at
            cols.update(worker=worker, started_at=at)
            self._observe(at, task, "wait", at - task.due_at)
        elif event in ENDS_AN_ATTEMPT and task.state == "running":
            worker = worker or task.worker
            self._count(at, [*task.dims, ("worker", task.worker)], "succeeded" if event == "succeeded" else "failed")
            self._observe(at, task, "run", at - task.started_at)
        worker = worker or (task.worker if event in ("succeeded", "dead", "cancelled") else "")
        if event in ("succeeded", "dead", "cancelled", "expired"):
            cols["finished_at"] = at
        if event == "succeeded":
            cols["result"] = stored(detail, self.value_cap)
        elif event == "retried":
            delay, error = detail
            task.due_at = at + delay
            cols.update(due_at=task.due_at, **_error_columns(error))
            detail = {"delay": delay}
        elif isinstance(detail, TaskError):
            cols.update(_error_columns(detail))
            detail = None
        elif event in ("queued", "lost", "replayed"):
            task.due_at = at
            cols["due_at"] = at
            if event == "replayed":
                cols.update(finished_at=None, error_type=None, error_message=None, traceback=None, result=None)
        task.state = cols["state"]
        row = self._new.get(task.seq)
        (row if row is not None else self._changed.setdefault(task.seq, {})).update(cols)
        stored_detail = None if detail is None else stored(detail, self.value_cap)
        self._events.append((n, task.seq, at, event, attempt, worker, stored_detail))
        if task.state in CLOSED:
            self.open.pop(task_id, None)

    def _load(self, task_id: str) -> _Open | None:
        """A task the projection no longer keeps in memory (a dead letter, or after a restart)."""
        row = self.conn.execute("SELECT seq, actor, keys, state, due_at, worker, started_at FROM tasks "
                                "WHERE id = ? ORDER BY seq DESC LIMIT 1", (task_id,)).fetchone()
        if row is None:
            new = [r for r in self._new.values() if r["id"] == task_id]  # rare: not kept, yet new
            if not new:
                return None
            row = (new[-1]["seq"], new[-1]["actor"], new[-1]["keys"], new[-1]["state"], new[-1]["due_at"], "", 0.0)
        seq, actor, keys, state, due_at, worker, started_at = row
        if state in CLOSED:
            return None  # an id used again after its task was forgotten: its new task was never submitted here
        keys = json.loads(keys) if keys else {}
        dims = [("actor", actor)] + ([("key", f"{k}={key_text(v)}") for k, v in sorted(keys.items())]
                                     if isinstance(keys, dict) else [])
        task = _Open(seq, actor, dims, state, due_at or 0.0, worker or "", started_at or 0.0)
        self.open[task_id] = task
        return task

    # -- rollups ----------------------------------------------------------------------------

    def _sums_of(self, at: float, dim: str, value: str) -> _Sums:
        key = (int(at // 60), dim, value)
        sums = self._sums.get(key)
        if sums is None:
            sums = self._sums[key] = _Sums()
        return sums

    def _count(self, at: float, dims: list[tuple[str, str]], what: str) -> None:
        for dim, value in [*dims, ("minute", "")]:
            sums = self._sums_of(at, dim, value)
            setattr(sums, what, getattr(sums, what) + 1)

    def _observe(self, at: float, task: _Open, which: str, seconds: float) -> None:
        for dim, value in [*task.dims, ("worker", task.worker), ("minute", "")]:
            histogram.add(getattr(self._sums_of(at, dim, value), which), max(0.0, seconds))

    # -- writing ----------------------------------------------------------------------------

    def pending(self) -> int:
        return len(self._events)

    def flush(self) -> None:
        """Write what was projected since the last flush, and the batch it reached, atomically."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            # One statement per set of columns (most tasks of a flush share one), many rows each.
            inserts: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            for row in self._new.values():
                inserts.setdefault(tuple(row), []).append(tuple(row.values()))
            for columns, rows in inserts.items():
                conn.executemany(f"INSERT OR REPLACE INTO tasks ({', '.join(columns)}) "
                                 f"VALUES ({', '.join('?' * len(columns))})", rows)
            updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            for seq, cols in self._changed.items():
                updates.setdefault(tuple(cols), []).append((*cols.values(), seq))
            for columns, rows in updates.items():
                sets = ", ".join(f"{name} = ?" for name in columns)
                conn.executemany(f"UPDATE tasks SET {sets} WHERE seq = ?", rows)
            conn.executemany("INSERT OR IGNORE INTO task_keys VALUES (?, ?, ?)", self._keys)
            conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", self._events)
            self._write_sums()
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_batch', ?)", (self.last_batch,))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('newest_at', ?)", (self.newest_at,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            self._reset()

    def _write_sums(self) -> None:
        for (minute, dim, value), sums in self._sums.items():
            row = self.conn.execute("SELECT submitted, succeeded, failed, wait, run FROM rollup "
                                    "WHERE minute = ? AND dim = ? AND value = ?", (minute, dim, value)).fetchone()
            if row is not None:
                sums.submitted += row[0]
                sums.succeeded += row[1]
                sums.failed += row[2]
                histogram.merge(sums.wait, {int(b): c for b, c in json.loads(row[3]).items()})
                histogram.merge(sums.run, {int(b): c for b, c in json.loads(row[4]).items()})
            self.conn.execute("INSERT OR REPLACE INTO rollup VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (minute, dim, value, sums.submitted, sums.succeeded, sums.failed,
                               json.dumps(sums.wait), json.dumps(sums.run)))


def _error_columns(error: TaskError) -> dict[str, Any]:
    return {"error_type": error.type, "error_message": error.message, "traceback": error.traceback}
