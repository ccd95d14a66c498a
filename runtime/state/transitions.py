"""The legal moves of a task between states, in one table (h11's ``_state.py`` is the model).

Every change of a task's state goes through ``_move`` (store.py), which looks the move up here and
refuses one that is not listed by raising `IllegalMove` before it changes anything. A bug then fails
its one command (the command's effects end with ``Internal``) instead of corrupting the counters
that status, dispatch and the digest of replicas rely on.
"""

from __future__ import annotations

from .model import TaskState as S

# state -> {state it may move to: what moves it}
MOVES: dict[str, dict[str, str]] = {
    S.NEW: {
        S.QUEUED: "submitted, due now (or a cron fire)",
        S.DELAYED: "submitted with a delay or an ETA",
        S.EXPIRED: "submitted already past its expiry time",
    },
    S.QUEUED: {
        S.RUNNING: "leased to a worker's free slot (dispatch)",
        S.CANCELLED: "cancelled, or its queue purged",
        S.EXPIRED: "not started before its expiry time",
    },
    S.DELAYED: {
        S.QUEUED: "due: its delay, ETA or retry backoff has passed",
        S.CANCELLED: "cancelled, or its queue purged",
        S.EXPIRED: "not started before its expiry time, or due while no leader ran and its actor skips such tasks",
    },
    S.RUNNING: {
        S.SUCCEEDED: "its handler returned",
        S.DELAYED: "its handler failed and a retry is due after a backoff",
        S.FAILED: "its handler failed for good, or its worker was lost too often (dead-lettered)",
        S.CANCELLED: "cancelled while it ran, and its worker reported the end or was lost",
        S.QUEUED: "its worker was lost, drained or fenced: due again, in its old place",
    },
    S.FAILED: {
        S.QUEUED: "replayed from the dead-letter queue",
    },
    S.SUCCEEDED: {},
    S.CANCELLED: {},
    S.EXPIRED: {},
}


class IllegalMove(Exception):
    """A task was asked to move between two states that MOVES does not connect: a bug in a handler."""

    def __init__(self, task_id: str, state: str, to: str) -> None:
        super().__init__(f"task {task_id!r} cannot move from {state!r} to {to!r} (transitions.MOVES)")
        self.task_id = task_id
        self.state = state
        self.to = to
