"""The records the state machine keeps: tasks, their leases, and what effects it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..protocol import RunTask


class TaskState:
    NEW = "new"  # being created by a submit: not yet queued, delayed or expired
    QUEUED = "queued"  # due, waiting for a free slot
    DELAYED = "delayed"  # waiting for its ETA (a delay, or a retry's backoff)
    RUNNING = "running"  # leased to a worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # in the dead-letter queue
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not started before its `expires` time

    TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})


@dataclass(slots=True)
class Lease:
    worker: str
    attempt: int
    term: int  # the Raft term of the leader that granted it; a deposed leader's grants are stale
    started_at: float


@dataclass(slots=True)
class TaskError:
    type: str  # exception class name, or "timeout", "worker_lost", "cancelled"
    message: str
    traceback: str = ""

    def to_wire(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


# Shared by every task that has none (a million delayed tasks would hold a million empty
# containers otherwise: ~180 bytes each, measured). Never mutated: the state machine replaces.
NO_ARGS: list[Any] = []
NO_KWARGS: dict[str, Any] = {}


@dataclass(slots=True)
class Task:
    id: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    keys: dict[str, Any]
    priority: int
    order: int  # FIFO position among equal priorities; kept when a lost task goes back to the queue
    submitted_at: float
    state: str = TaskState.NEW  # changed only by StateMachine._move (transitions.MOVES)
    eta: float = 0.0
    attempt: int = 0  # deliveries so far; the handler sees it as current_task().attempt
    failures: int = 0  # handler failures so far (timeouts included); compared with `retries`
    losses: int = 0  # times its worker was lost while running it
    lease: Lease | None = None
    cancel_requested: bool = False
    result: Any = None
    error: TaskError | None = None
    finished_at: float = 0.0
    expires_at: float = 0.0  # when a finished task's record (and result) is dropped
    start_by: float = 0.0  # not started by then: expired (0: no limit)
    started_at: float = 0.0  # leader time of its latest lease: what rate limits count
    leased_in: int = 0  # the batch (StateMachine.applied) that granted its latest lease
    counted: tuple[Any, ...] = ()  # concurrency buckets its lease holds
    idempotency_key: str = ""
    trace: dict[str, str] | None = None  # W3C trace context of its submit (runtime/tracing.py)

    def summary(self, with_arguments: bool = False) -> dict[str, Any]:
        """The task as clients see it: ``result`` replies, and with its arguments ``dlq_show``."""
        out: dict[str, Any] = {
            "id": self.id, "actor": self.actor, "state": self.state, "attempt": self.attempt,
            "submitted_at": self.submitted_at,
        }
        if with_arguments:
            out["args"], out["kwargs"] = self.args, self.kwargs
        if self.state == TaskState.SUCCEEDED:
            out["value"] = self.result
        if self.error is not None:
            out["error"] = self.error.to_wire()
        if self.started_at:
            out["started_at"] = self.started_at
        if self.finished_at:
            out["finished_at"] = self.finished_at
        return out


# What happened to a task, for its history: (task id, event, leader time, attempt, worker, detail).
# Recorded only while the replication layer keeps a journal (TaskStore.journal); history/events.py
# says what each event's detail holds.
HistoryEvent = tuple[str, str, float, int, str, Any]


# ---------------------------------------------------------------------------------------------
# Effects: what applying a command asks the shell (the coordinator) to do or tell.


@dataclass(slots=True)
class Accepted:
    ids: list[str]


@dataclass(slots=True)
class Leased:
    worker: str
    task: RunTask  # what the worker is sent in `run`


@dataclass(slots=True)
class Refused:
    """A lease the leader granted ahead of its commit (`grant`) that did not stand: its task had
    left the queue, or its actor gained a limit or was paused, before the entry was applied."""

    worker: str
    id: str


@dataclass(slots=True)
class Finished:
    """A task reached a terminal state; waiting clients are answered with `summary`."""

    id: str
    summary: dict[str, Any]


@dataclass(slots=True)
class Retrying:
    id: str
    attempt: int
    delay: float
    error: TaskError
    actor: str = ""


@dataclass(slots=True)
class Requeued:
    """A lease was given up (worker lost, drained, fenced) and the task is due again."""

    id: str
    worker: str
    actor: str = ""
    attempt: int = 0


@dataclass(slots=True)
class CancelRunning:
    worker: str
    id: str


@dataclass(slots=True)
class Count:
    """How many records a command touched (DLQ replay/purge, cancel)."""

    n: int
    ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Internal:
    """The command raised inside the state machine (a bug, or a command this version cannot read):
    it keeps what it did before the error, and the batch's other commands still apply."""

    command: str  # its kind ("submit", "finish", ...)
    message: str  # names the command and the error, for the requester's `internal` error reply


Effect = Accepted | Leased | Refused | Finished | Retrying | Requeued | CancelRunning | Count | Internal


@dataclass(slots=True)
class Applied:
    """What applying one batch did: the effects of time passing, and each command's effects under
    the reference its proposer gave it (commands proposed without one are numbered 1, 2, ...)."""

    time: list[Effect]
    by_ref: dict[int, list[Effect]]

    def all_effects(self) -> list[Effect]:
        return [*self.time, *(e for effects in self.by_ref.values() for e in effects)]

    def effects(self) -> list[list[Effect]]:
        """Each command's effects, in the batch's order."""
        return list(self.by_ref.values())
