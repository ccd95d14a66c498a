"""Requests any node answers itself, leader or follower: the task history's questions, read from
this node's SQLite copy on threads of their own (the event loop only hands over and sends), and
`describe`, a task's present state from this node's replica (queries cost the leader nothing when
asked of a follower)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import protocol as P
from ..history import queries
from ..history.schema import connect, trace_id
from ..history.writer import Recording
from ..replication import Replication
from ..state.model import TaskState
from .proposer import Proposer
from .router import Router

log = logging.getLogger("qrt.coordinator")

READER_THREADS = 2
# The state machine's names, in the history's words (a task that ended failed is a dead letter).
PRESENT = {TaskState.FAILED: "dead"}


class HistoryDesk:
    def __init__(self, router: Router, replication: Replication, proposer: Proposer,
                 history: Recording | None) -> None:
        self.router = router
        self.replication = replication
        self.proposer = proposer
        self.history = history
        self._pool = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="qrt-history-read")
        self._local = threading.local()

    def handle(self, identity: bytes, msg: P.HistoryRequest) -> None:
        if isinstance(msg, P.Describe):
            self._reply(identity, msg.rid, self.describe(msg.id))
            return
        if self.history is None:
            self.router.send(identity, P.Error(P.ErrorCode.NO_HISTORY, "this node keeps no task history (it was "
                                               "started with --no-history); ask another node", msg.rid).encode())
            return
        now = self.proposer.clock()
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._query, msg, now)
        future.add_done_callback(lambda done: self._answered(identity, msg, done))

    def _answered(self, identity: bytes, msg: P.HistoryRequest, done: asyncio.Future[dict[str, Any] | None]) -> None:
        error = done.exception()
        if error is not None:
            log.error("answering %s failed", msg.TYPE, exc_info=error)
            self.router.send(identity, P.Error(P.ErrorCode.INTERNAL, f"reading the task history failed: {error}",
                                               msg.rid).encode())
            return
        self._reply(identity, msg.rid, done.result())

    def _reply(self, identity: bytes, rid: int, body: dict[str, Any] | None) -> None:
        if body is None:
            self.router.send(identity, P.Error(P.ErrorCode.NOT_FOUND, "no task with this id (in the state "
                                               "machine, or in this node's history)", rid).encode())
        else:
            self.router.send(identity, P.Answer(rid, body).encode())

    # -- on a reader thread -----------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.history is not None
            conn = self._local.conn = connect(self.history.path, readonly=True)
        return conn

    def _query(self, msg: P.HistoryRequest, now: float) -> dict[str, Any] | None:
        conn = self._conn()
        if isinstance(msg, P.TaskShow):
            return queries.show_task(conn, msg.id)
        if isinstance(msg, P.HistoryJournal):
            return queries.journal(conn, msg.after, msg.before, min(msg.limit, queries.MAX_JOURNAL_PAGE))
        if isinstance(msg, P.Stats):
            return queries.stats(conn, msg.since, msg.until if msg.until is not None else now, msg.by, msg.actor)
        if isinstance(msg, P.DeadGroups):
            return queries.dead_groups(conn, msg.limit)
        assert isinstance(msg, P.TasksList | P.TaskEvents)
        filters = queries.Filters(msg.actor, msg.state, msg.worker, (msg.key[0], msg.key[1]) if msg.key else None,
                                  msg.since, msg.until, msg.error, msg.args, msg.fingerprint)
        if isinstance(msg, P.TasksList):
            return queries.list_tasks(conn, filters, msg.limit, msg.cursor)
        return queries.events_after(conn, msg.after, filters, msg.limit)

    # -- from the replica -------------------------------------------------------------------

    def describe(self, task_id: str) -> dict[str, Any] | None:
        """A task's present state, as this node's replica has it (a follower's is a few ms behind)."""
        with self.replication.reading() as machine:
            task = machine.tasks.get(task_id)
            if task is None:
                return None
            out: dict[str, Any] = {
                "id": task.id, "actor": task.actor, "state": PRESENT.get(task.state, task.state),
                "attempt": task.attempt, "worker": task.lease.worker if task.lease is not None else None,
                "submitted_at": task.submitted_at, "started_at": task.started_at or None,
                "finished_at": task.finished_at or None, "eta": task.eta if task.state == TaskState.DELAYED else None,
                "priority": task.priority, "keys": dict(task.keys), "cancel_requested": task.cancel_requested,
                "error_type": task.error.type if task.error else None,
                "error_message": task.error.message if task.error else None,
                "trace_id": trace_id(task.trace.get("traceparent")) if task.trace else None,
            }
        return out
