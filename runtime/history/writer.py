"""The node's task history: the events of every batch this node applies, written to SQLite by a
thread of its own (never pysyncobj's, never the event loop), and trimmed by age and size.

`record(batch, events)` is called by the replication layer for every batch applied, on pysyncobj's
thread: it only puts the list in a queue. The thread gathers what is queued, up to FLUSH_EVENTS or
FLUSH_EVERY, and writes it in one transaction (recorder.py). Every node applies the same log, so
every node writes the same history; any node can answer queries about it (queries.py).

A batch number that skips (the node installed a snapshot: it never applied the batches in
between) is a gap in this node's history: it is noted in `meta` as `gaps`, logged, and filled from
a peer's history if one has it (catchup.py).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..state.model import HistoryEvent
from . import schema
from .recorder import Recorder
from .schema import event_number

log = logging.getLogger("qrt.history")

FLUSH_EVERY = 0.5  # seconds: what a query sees lags the log by about this much
FLUSH_EVENTS = 50_000  # events per transaction, at most (a large batch is written whole)
TRIM_EVERY = 60.0  # seconds between retention passes
TRIM_CHUNK = 5_000  # tasks deleted per statement: short transactions, queries never wait long
BACKFILL_TIMEOUT = 60.0  # seconds to find a peer that holds the batches this node missed
CLOSED_STATES = ("succeeded", "failed", "dead", "cancelled", "expired")


class Recording(Protocol):
    """What the replication layer and the coordinator need of a history: History (a thread, in
    this process), or process.HistoryProcess (the coordinator's: a process of its own)."""

    path: str

    def record(self, batch: int, events: list[HistoryEvent]) -> None: ...

    @property
    def lag(self) -> int: ...  # batches recorded and not written yet

    def wait_for(self, batch: int, timeout: float) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Retention:
    max_age: float = 7 * 24 * 3600.0  # seconds since a finished task's last event
    max_bytes: int = 1 << 30  # the database's size on disk (its WAL included)
    value_bytes: int = 64 * 1024  # arguments and results are stored truncated past this


# What the writer reads: the next batch's (number, events), None at the end, or queue.Empty when
# nothing came within the timeout given (seconds; None: wait).
Source = Callable[[float | None], "tuple[int, list[HistoryEvent]] | None"]


class Batches:
    """What both histories share (this module's History, and process.HistoryProcess): batches queued
    by `record` without waiting, the newest written (`last_batch`, waited for by `wait_for`), and
    how far the writing lags the log (`lag`)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, list[HistoryEvent]] | None] = queue.SimpleQueue()
        self._written = threading.Condition()
        self.last_batch = 0  # the newest batch written
        self.recorded = 0  # the newest batch given to `record`

    def record(self, batch: int, events: list[HistoryEvent]) -> None:
        """A batch was applied (on pysyncobj's thread): queue its events, never wait."""
        self.recorded = batch
        self._queue.put((batch, events))

    @property
    def lag(self) -> int:
        """Batches applied that the history has not written yet."""
        return max(0, self.recorded - self.last_batch)

    def _set_written(self, batch: int) -> None:
        with self._written:
            self.last_batch = max(self.last_batch, batch)
            self._written.notify_all()

    def _writing(self) -> bool:
        """Whether a batch not yet written may still be (else `wait_for` stops waiting)."""
        return True

    def wait_for(self, batch: int, timeout: float) -> bool:
        """Wait until the history has written batch `batch` (tests, and reads that must see a write)."""
        deadline = time.monotonic() + timeout
        with self._written:
            while self.last_batch < batch:
                left = deadline - time.monotonic()
                if left <= 0 or not self._writing():
                    return False
                self._written.wait(left)
        return True


class History(Batches):
    """The writer. With `thread` (tests, and `qrt.testing`-like uses), a thread of its own fed by
    `record`; without, the caller runs `serve(source)` (process.py does, in the history's process)."""

    def __init__(self, data_dir: str, retention: Retention | None = None,
                 on_written: Callable[[int], None] | None = None, thread: bool = True) -> None:
        super().__init__()
        self.path = os.path.join(data_dir, "history.sqlite3")
        self.retention = retention or Retention()
        self._on_written = on_written  # told the batch written after each flush (process.py)
        self._ready = threading.Event()
        # Where batches this node missed are read from: (after, before) -> a page of queries.journal
        # from a peer whose history holds them all (the coordinator sets it; None: no peer).
        self.fetch: Callable[[int, int], dict[str, Any]] | None = None
        self._thread: threading.Thread | None = None
        if thread:
            self._thread = threading.Thread(target=self.serve, args=(self._from_queue,), name="qrt-history",
                                            daemon=True)
            self._thread.start()
            self._ready.wait(10.0)

    def _from_queue(self, timeout: float | None) -> tuple[int, list[HistoryEvent]] | None:
        return self._queue.get(timeout=timeout)

    def _writing(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def close(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    # -- the loop ---------------------------------------------------------------------------

    def serve(self, source: Source) -> None:
        """Write what `source` gives until it gives None: up to FLUSH_EVERY's worth per transaction."""
        conn = schema.connect(self.path)
        recorder = Recorder(conn, self.retention.value_bytes)
        self.last_batch = recorder.last_batch
        self._ready.set()
        trimmed_at = time.monotonic()
        stopping = False
        while not stopping:
            item = source(None)
            deadline = time.monotonic() + FLUSH_EVERY
            while True:
                if item is None:
                    stopping = True
                    break
                self._add(recorder, *item)
                if recorder.pending() >= FLUSH_EVENTS:
                    break
                try:
                    item = source(max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            try:
                recorder.flush()
            except Exception:  # a full disk, a locked file: the node goes on; these events are lost here
                log.exception("writing the task history failed; the batches up to %d are missing from it",
                              recorder.last_batch)
            self._set_written(recorder.last_batch)
            if self._on_written is not None:
                self._on_written(recorder.last_batch)
            if time.monotonic() - trimmed_at >= TRIM_EVERY:
                trimmed_at = time.monotonic()
                try:
                    self.trim(conn, recorder.newest_at)
                except Exception:
                    log.exception("trimming the task history failed; trying again later")
        conn.close()

    def _add(self, recorder: Recorder, batch: int, events: list[HistoryEvent]) -> None:
        before = recorder.last_batch
        if batch > before + 1:  # (a new node's first batch may come after a snapshot too)
            self._backfill(recorder, before + 1, batch - 1)
        recorder.add(batch, events)

    def _backfill(self, recorder: Recorder, first: int, last: int) -> None:
        """This node did not apply batches `first`..`last` (it installed a snapshot of the state
        instead): record them as a peer recorded them, before any later batch, so that every task
        they touched goes on from the state they left it in. A gap no peer fills in BACKFILL_TIMEOUT
        is noted (`meta.gaps`) and logged; this node's history then lacks those events."""
        log.info("this node installed a snapshot: its task history takes batches %d-%d from a peer", first, last)
        after, before = event_number(first, 0) - 1, event_number(last + 1, 0)
        deadline = time.monotonic() + BACKFILL_TIMEOUT
        copied = 0
        while time.monotonic() < deadline:
            fetch = self.fetch
            if fetch is None:  # the coordinator is not up yet (this node is starting)
                time.sleep(0.1)
                continue
            try:
                page = fetch(after, before)
            except LookupError:  # no peer at all (a lone node)
                break
            except Exception as exc:  # every peer unreachable, or none holds the range yet: retry
                log.debug("backfilling the task history: %s", exc)
                time.sleep(0.5)
                continue
            for batch, events in _by_batch(page["events"]):
                recorder.add(batch, events)
                copied += len(events)
                if recorder.pending() >= FLUSH_EVENTS:
                    recorder.flush()
            if page["next"] is None:
                recorder.last_batch = max(recorder.last_batch, last)
                recorder.flush()
                log.info("task history: %d events of batches %d-%d copied from a peer", copied, first, last)
                return
            after = page["next"]
        recorder.last_batch = max(recorder.last_batch, last)
        self._note_gap(recorder, first, last)

    def _note_gap(self, recorder: Recorder, first: int, last: int) -> None:
        log.warning("this node's task history misses batches %d-%d (it installed a snapshot of the state, and "
                    "no peer's history gave them: ask another node about that time)", first, last)
        row = recorder.conn.execute("SELECT v FROM meta WHERE k = 'gaps'").fetchone()
        gaps = json.loads(row[0]) if row else []
        gaps.append([first, last])
        recorder.conn.execute("INSERT OR REPLACE INTO meta VALUES ('gaps', ?)", (json.dumps(gaps),))

    # -- retention --------------------------------------------------------------------------

    def trim(self, conn: sqlite3.Connection, now: float) -> int:
        """Delete finished tasks older than max_age (leader time `now`), then the oldest finished
        ones while the file is over max_bytes; the number deleted."""
        deleted = 0
        horizon = now - self.retention.max_age
        closed = ",".join("?" * len(CLOSED_STATES))
        while True:
            seqs = [r[0] for r in conn.execute(
                f"SELECT seq FROM tasks WHERE updated_at < ? AND state IN ({closed}) LIMIT ?",
                (horizon, *CLOSED_STATES, TRIM_CHUNK))]
            if not seqs:
                break
            deleted += _delete(conn, seqs)
        conn.execute("DELETE FROM rollup WHERE minute < ?", (int(horizon // 60),))
        while self.size(conn) > self.retention.max_bytes:
            seqs = [r[0] for r in conn.execute(f"SELECT seq FROM tasks WHERE state IN ({closed}) ORDER BY seq LIMIT ?",
                                               (*CLOSED_STATES, TRIM_CHUNK))]
            if not seqs:
                break
            deleted += _delete(conn, seqs)
            conn.execute("PRAGMA incremental_vacuum")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if deleted:
            log.info("task history: %d finished tasks deleted (older than %.0f s, or over %d bytes)", deleted,
                     self.retention.max_age, self.retention.max_bytes)
        return deleted

    def size(self, conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        wal = self.path + "-wal"
        return int(pages * conn.execute("PRAGMA page_size").fetchone()[0]) + \
            (os.path.getsize(wal) if os.path.exists(wal) else 0)


def _by_batch(rows: list[list[Any]]) -> Iterator[tuple[int, list[HistoryEvent]]]:
    """A journal page (queries.journal: [batch, task id, event, at, attempt, worker, detail], in
    their wire form, which the recorder takes as it is) as the events of each batch."""
    batch = -1
    events: list[HistoryEvent] = []
    for number, task_id, event, at, attempt, worker, detail in rows:
        if number != batch and events:
            yield batch, events
            events = []
        batch = number
        events.append((task_id, event, at, attempt, worker, detail))
    if events:
        yield batch, events


def _delete(conn: sqlite3.Connection, seqs: list[int]) -> int:
    marks = ",".join("?" * len(seqs))
    conn.execute("BEGIN")
    conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs)
    conn.execute(f"DELETE FROM task_keys WHERE seq IN ({marks})", seqs)
    conn.execute(f"DELETE FROM tasks WHERE seq IN ({marks})", seqs)
    conn.execute("COMMIT")
    return len(seqs)
