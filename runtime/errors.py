"""One hierarchy of errors under `QrtError`, each named for what went wrong (as httpx does)."""

from __future__ import annotations


class QrtError(Exception):
    """Base class of every error qrt raises."""


class ProtocolError(QrtError):
    """A frame that does not follow docs/protocol.md; `code` is one of protocol.ErrorCode."""

    def __init__(self, code: str, message: str, rid: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid  # the request id, when the frame was readable enough to have one
        self.field = field  # the offending field's path (e.g. "tasks[0].actor"), for bad_field


class RemoteError(QrtError):
    """The coordinator refused a request; `code` says why (see docs/protocol.md, "Error codes")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NoLeader(QrtError):
    """No coordinator answered as leader in time: the cluster is down, electing, or misaddressed."""


class ClientClosed(QrtError, RuntimeError):
    """The client was closed: it sends nothing more (make a new one). A request still waiting for its
    answer when the client closed fails with this too. (A RuntimeError as well, as `Client` raised.)"""


class InvalidArgument(QrtError, TypeError):
    """A task argument or option cannot be sent (not a msgpack value, wrong type, too large)."""


class ResultTimeout(QrtError, TimeoutError):
    """`result(timeout=...)` ran out before the task finished; the task itself goes on."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        super().__init__(f"task {task_id} did not finish within {timeout} s (it is still queued or running)")
        self.task_id = task_id
        self.timeout = timeout


class TaskFailed(QrtError):
    """The handler failed for good (retries exhausted, non-retryable, timed out, or its worker kept dying).

    `error_type` is the exception's class name, or "timeout" / "worker_lost"; `traceback` is the
    handler's formatted traceback, when there was one.
    """

    def __init__(self, task_id: str, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {message}")
        self.task_id = task_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class TaskExpired(TaskFailed):
    """The task was not started before its `expires` time, so it never ran."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, "expired", "not started before its expiry time")


class TaskCancelled(QrtError):
    """The task was cancelled before it finished."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was cancelled")
        self.task_id = task_id


class TaskNotFound(QrtError):
    """No task with this id is known: it was never submitted, or its result expired (result_ttl)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} is not known to the coordinator (never submitted, or its result expired)")
        self.task_id = task_id


class Retry(Exception):
    """Raise inside a handler to ask for another attempt after `delay` seconds (uses one retry)."""

    def __init__(self, delay: float | None = None, message: str = "retry requested") -> None:
        super().__init__(message)
        self.delay = delay


class NonRetryable(Exception):
    """Raise inside a handler to send the task straight to the dead-letter queue, without retries."""
