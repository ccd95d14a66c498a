"""The history's SQLite tables, and how values are stored in them.

One row per task (`tasks`, its present state and what it carried), one per event (`events`, its
timeline), one per key value a task carries (`task_keys`, for `--key NAME=VALUE`), and per-minute
counts and duration histograms (`rollup`, for `stats` over any range without reading every task).

Every node applies the same log, so every node writes the same rows: a task's `seq` and an event's
`n` come from the log position of what created them (batch << 32 | index in the batch), not from
this file, so cursors and ids mean the same on every node. A task's `submitted` event has no row
of its own in `events`: its `n` is the task's `seq`, and the rest is in the task's row (queries
put it back); a third fewer rows to write.

Indexes are what a write pays for most (measured per task: the worker index 5.9 µs, last update
2.6, actor 1.2; a 32-character random id 17, so the id index holds its CRC-32): `--worker` scans
newest first without one.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    idh INTEGER NOT NULL,
    id TEXT NOT NULL,
    actor TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    eta REAL,
    due_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    error_type TEXT,
    error_message TEXT,
    traceback TEXT,
    args TEXT,
    kwargs TEXT,
    keys TEXT,
    result TEXT,
    traceparent TEXT,
    fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_id ON tasks (idh);
CREATE INDEX IF NOT EXISTS tasks_by_actor ON tasks (actor, seq);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, seq);
CREATE INDEX IF NOT EXISTS tasks_by_update ON tasks (updated_at);
CREATE TABLE IF NOT EXISTS task_keys (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (name, value, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_keys_by_task ON task_keys (seq);
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_task ON events (seq, n);
CREATE TABLE IF NOT EXISTS rollup (
    minute INTEGER NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    submitted INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    wait TEXT NOT NULL DEFAULT '{}',
    run TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (minute, dim, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v
);
"""

# How stats can group: the task's actor, the worker of the attempt, each key value ("NAME=VALUE"),
# or the minute (rollup keeps no rows for it: a minute's total is the sum of its actors' rows).
DIMENSIONS = ("actor", "worker", "key", "minute")


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode: one writer (the history's thread) and any number of readers."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10.0)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a lost tail is caught up from the log
        conn.executescript(DDL)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        for column in ("traceparent", "fingerprint"):  # a file written before traces, or before groups
            if column not in columns:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} TEXT")
        if "fingerprint" not in columns:  # the dead letters it holds join their groups
            _fingerprint_dead_letters(conn)
        conn.execute("CREATE INDEX IF NOT EXISTS tasks_by_fingerprint ON tasks (fingerprint, seq) "
                     "WHERE fingerprint IS NOT NULL AND state = 'dead'")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    conn.row_factory = sqlite3.Row
    return conn


def _fingerprint_dead_letters(conn: sqlite3.Connection) -> None:
    from .fingerprint import fingerprint

    rows = conn.execute("SELECT seq, error_type, error_message, traceback FROM tasks WHERE state = 'dead'").fetchall()
    conn.executemany("UPDATE tasks SET fingerprint = ? WHERE seq = ?",
                     [(fingerprint(t, m, tb), seq) for seq, t, m, tb in rows])


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (version-traceid-spanid-flags)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


def event_number(batch: int, index: int) -> int:
    """An event's place in the log, the same on every node: its batch, then its order in it."""
    return (batch << 32) | index


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return repr(value)


# One encoder for every value: json.dumps with options builds an encoder per call (a third of the
# history's time, measured); and the empty values most tasks carry, without encoding.
_encode = json.JSONEncoder(default=_plain, ensure_ascii=False, separators=(",", ":")).encode
_EMPTY = {type(None): "null", list: "[]", dict: "{}", str: '""'}


def stored(value: Any, cap: int) -> str:
    """`value` as JSON text, truncated past `cap` bytes (then a JSON string saying so)."""
    if not value and type(value) in _EMPTY:
        return _EMPTY[type(value)]
    try:
        text = _encode(value)
    except (TypeError, ValueError):  # keys JSON cannot take (tuples), cycles: keep its repr
        text = json.dumps(repr(value), ensure_ascii=False)
    if len(text) > cap:  # (characters: a byte cap within 4x; counted exactly below only when close)
        raw = text.encode()
        if len(raw) > cap:
            head = raw[:cap].decode(errors="ignore")
            return json.dumps(f"{head}… (truncated: {len(raw)} bytes, over the {cap}-byte cap)", ensure_ascii=False)
    return text


def loaded(text: str | None) -> Any:
    return None if text is None else json.loads(text)
