"""The projection: the state machine's events of each batch become rows of the history database.

Runs on the history's own thread (writer.py), never on pysyncobj's or the event loop. A flush
turns many batches into one transaction: each task touched gets one INSERT (new) or one UPDATE
(the columns its events changed, the last value winning), every event one row, and the per-minute
rollups their sums. The batch number of the last batch recorded is stored in the same transaction,
so a batch is recorded exactly once, whatever restarts and replays happen.

Events (state/store.py and machine.py emit them; detail in brackets):
    submitted [actor, args, kwargs, keys, priority, eta or 0, (trace context, when traced)]
                                                                 -> queued, or delayed when eta
    (an error is a TaskError, or its map: what crosses process.py's pipe, msgpack turning tuples
    into lists, is recorded as it comes)
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
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..state.model import HistoryEvent, TaskError
from . import histogram
from .fingerprint import fingerprint
from .schema import stored

STATE_AFTER = {"queued": "queued", "leased": "running", "retried": "delayed", "lost": "queued",
               "succeeded": "succeeded", "dead": "dead", "cancelled": "cancelled", "expired": "expired",
               "replayed": "queued", "purged": "failed"}
CLOSED = frozenset({"succeeded", "cancelled", "expired", "failed"})  # nothing more happens to these
ENDS_AN_ATTEMPT = frozenset({"succeeded", "retried", "dead"})
ENDS = frozenset({"succeeded", "dead", "cancelled", "expired"})

# The columns a task's events change (the others are written once, with its first row).
MUTABLE = ("state", "attempt", "worker", "due_at", "started_at", "finished_at", "updated_at", "error_type",
           "error_message", "traceback", "result", "fingerprint")
_INSERT = (f"INSERT OR REPLACE INTO tasks (seq, idh, id, actor, priority, submitted_at, eta, args, kwargs, keys, "
           f"traceparent, {', '.join(MUTABLE)}) VALUES ({', '.join('?' * (11 + len(MUTABLE)))})")
_UPDATE = f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in MUTABLE)} WHERE seq = ?"


def key_text(value: Any) -> str:
    """A key value as `--key NAME=VALUE` matches it: strings as they are, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def id_hash(task_id: str) -> int:
    """The history's index of task ids holds this, not the id: 4 bytes instead of 32 or more,
    so a million random ids dirty far fewer pages per write (measured: 25 -> 18 µs per task)."""
    return zlib.crc32(task_id.encode())


@dataclass(slots=True, eq=False)
class _Task:
    """A task the projection may still change: its row as it will be written (MUTABLE columns),
    and what its rollups need. `first` holds the columns written once, until its first flush."""

    seq: int
    actor: str
    dims: tuple[tuple[str, str], ...]  # (dimension, value) it counts under, the worker's excepted
    state: str
    due_at: float
    updated_at: float
    # (id hash, id, actor, priority, submitted_at, eta, args, kwargs, keys, traceparent)
    first: tuple[Any, ...] | None = None
    attempt: int = 0
    worker: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    result: str | None = None
    fingerprint: str | None = None  # of its error (fingerprint.py): groups the dead letters

    def mutable(self) -> tuple[Any, ...]:
        return (self.state, self.attempt, self.worker, self.due_at, self.started_at, self.finished_at,
                self.updated_at, self.error_type, self.error_message, self.traceback, self.result, self.fingerprint)

    def set_error(self, error: TaskError | dict[str, str]) -> None:
        """A TaskError, or its map as it crosses the pipe from the coordinator (process.py)."""
        if isinstance(error, dict):
            self.error_type, self.error_message, self.traceback = error["type"], error["message"], \
                error.get("traceback")
        else:
            self.error_type, self.error_message, self.traceback = error.type, error.message, error.traceback
        self.fingerprint = fingerprint(self.error_type, self.error_message, self.traceback)


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
        self.open: dict[str, _Task] = {}  # task id -> its record, while something may still happen to it
        self.last_batch = int(self._meta("last_batch", 0))
        self.newest_at = float(self._meta("newest_at", 0.0))  # leader time of the newest event recorded
        self.unknown = 0  # events of tasks the history never saw submitted (it began after them)
        self._reset()

    def _reset(self) -> None:
        self._touched: dict[int, _Task] = {}  # seq -> task, of the tasks this flush writes
        self._events: list[tuple[Any, ...]] = []
        self._keys: list[tuple[str, str, int]] = []
        self._sums: dict[tuple[int, str, str], _Sums] = {}  # (minute, dimension, value) -> its rollup
        self._combos: dict[tuple[Any, ...], list[_Sums]] = {}  # (minute, dims, worker) -> the rollups it counts in

    def _meta(self, key: str, default: Any) -> Any:
        row = self.conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return default if row is None else row[0]

    # -- events -----------------------------------------------------------------------------

    def add(self, batch: int, events: list[HistoryEvent]) -> bool:
        """Project one batch's events (False, and nothing done, for a batch already recorded)."""
        if batch <= self.last_batch:
            return False
        base = batch << 32  # schema.event_number
        for index, (task_id, event, at, attempt, worker, detail) in enumerate(events):
            if event == "submitted":
                self._submitted(base | index, task_id, at, detail)
                continue
            task = self.open.get(task_id) or self._load(task_id)
            if task is None:
                self.unknown += 1
                continue
            self._event(base | index, task, task_id, event, at, attempt, worker, detail)
        self.last_batch = batch
        if events:
            self.newest_at = max(self.newest_at, events[-1][2])
        return True

    def _submitted(self, n: int, task_id: str, at: float, detail: Any) -> None:
        actor, args, kwargs, keys, priority, eta = detail[:6]
        trace = detail[6] if len(detail) > 6 else None
        cap = self.value_cap
        dims: tuple[tuple[str, str], ...] = (("actor", actor),)
        if keys:
            dims += tuple(("key", f"{name}={key_text(keys[name])}") for name in sorted(keys))
            self._keys.extend((name, key_text(keys[name]), n) for name in keys)
        task = _Task(n, actor, dims, "delayed" if eta else "queued", eta or at, at,
                     (id_hash(task_id), task_id, actor, priority, at, eta or None, stored(args, cap),
                      stored(kwargs, cap), stored(keys, cap), trace.get("traceparent") if trace else None))
        self.open[task_id] = self._touched[n] = task  # (its `submitted` event is its row: schema.py)
        for sums in self._sums_of(at, dims):
            sums.submitted += 1

    def _event(self, n: int, task: _Task, task_id: str, event: str, at: float, attempt: int, worker: str,
               detail: Any) -> None:
        if event == "leased":
            task.worker, task.started_at = worker, at
            waited = histogram.bucket(at - task.due_at)
            for sums in self._sums_of(at, task.dims, worker):
                sums.wait[waited] = sums.wait.get(waited, 0) + 1
        elif event in ENDS_AN_ATTEMPT and task.state == "running":
            ran = histogram.bucket(at - (task.started_at or at))
            succeeded = event == "succeeded"
            for sums in self._sums_of(at, task.dims, task.worker):
                sums.run[ran] = sums.run.get(ran, 0) + 1
                if succeeded:
                    sums.succeeded += 1
                else:
                    sums.failed += 1
        if event in ENDS:
            task.finished_at = at
            if event != "expired":
                worker = worker or task.worker
        if event == "succeeded":
            task.result = stored(detail, self.value_cap)
            detail = None
        elif event == "retried":
            delay, error = detail
            task.due_at = at + delay
            task.set_error(error)
            detail = {"delay": delay}
        elif event in ENDS:
            if detail is not None:
                task.set_error(detail)
            detail = None
        elif event in ("queued", "lost", "replayed"):
            task.due_at = at
            if event == "replayed":
                task.finished_at = task.error_type = task.error_message = task.traceback = task.result = None
                task.fingerprint = None
        task.state = STATE_AFTER[event]
        task.attempt = attempt
        task.updated_at = at
        self._touched[task.seq] = task
        self._events.append((n, task.seq, at, event, attempt, worker,
                             None if detail is None else stored(detail, self.value_cap)))
        if task.state in CLOSED:
            self.open.pop(task_id, None)

    def _load(self, task_id: str) -> _Task | None:
        """A task the projection no longer keeps in memory (a dead letter, or after a restart)."""
        row = self.conn.execute(f"SELECT seq, actor, keys, {', '.join(MUTABLE)} FROM tasks WHERE idh = ? AND id = ? "
                                "ORDER BY seq DESC LIMIT 1", (id_hash(task_id), task_id)).fetchone()
        if row is None or row[3] in CLOSED:  # (closed: an id used again after its task was forgotten,
            return None                      # whose new task was never submitted here)
        seq, actor, keys = row[0], row[1], loaded_keys(row[2])
        dims = (("actor", actor), *(("key", f"{k}={key_text(v)}") for k, v in sorted(keys.items())))
        task = _Task(seq, actor, dims, row[3], row[6] or 0.0, row[9])
        (task.attempt, task.worker, task.started_at, task.finished_at, task.error_type, task.error_message,
         task.traceback, task.result, task.fingerprint) = (row[4], row[5] or "", row[7], row[8], row[10], row[11],
                                                           row[12], row[13], row[14])
        self.open[task_id] = task
        return task

    # -- rollups ----------------------------------------------------------------------------

    def _sums_of(self, at: float, dims: tuple[tuple[str, str], ...], worker: str = "") -> list[_Sums]:
        """The rollup rows of minute `at` that a task with `dims` (and `worker`, if any) counts in
        (one lookup per task event: the list for each combination is kept for the flush)."""
        combo = (int(at // 60), dims, worker)
        found = self._combos.get(combo)
        if found is None:
            found = self._combos[combo] = []
            for dim, value in (*dims, ("worker", worker)) if worker else dims:
                key = (combo[0], dim, value)
                sums = self._sums.get(key)
                if sums is None:
                    sums = self._sums[key] = _Sums()
                found.append(sums)
        return found

    # -- writing ----------------------------------------------------------------------------

    def pending(self) -> int:
        return len(self._events)

    def flush(self) -> None:
        """Write what was projected since the last flush, and the batch it reached, atomically:
        one row per task touched (an INSERT for a new one, an UPDATE of MUTABLE for another)."""
        conn = self.conn
        new = [(t.seq, *t.first, *t.mutable()) for t in self._touched.values() if t.first is not None]
        old = [(*t.mutable(), t.seq) for t in self._touched.values() if t.first is None]
        conn.execute("BEGIN")
        try:
            conn.executemany(_INSERT, new)
            conn.executemany(_UPDATE, old)
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
            for task in self._touched.values():
                task.first = None  # written (or lost with this flush: the node logs it)
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


def loaded_keys(text: str | None) -> dict[str, Any]:
    keys = json.loads(text) if text else {}
    return keys if isinstance(keys, dict) else {}  # (stored truncated: a string)
