"""qrt: a distributed actor runtime and task queue with a Raft-replicated coordinator."""

from .actor import Actor, Concurrency, RateLimit, TaskInfo, actor, current_task
from .client import AsyncClient, AsyncTaskHandle, Client, TaskHandle
from .errors import (
    ClientClosed,
    InvalidArgument,
    NoLeader,
    NonRetryable,
    QrtError,
    RemoteError,
    ResultTimeout,
    Retry,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
)

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AsyncClient",
    "AsyncTaskHandle",
    "Client",
    "ClientClosed",
    "Concurrency",
    "InvalidArgument",
    "NoLeader",
    "NonRetryable",
    "QrtError",
    "RateLimit",
    "RemoteError",
    "ResultTimeout",
    "Retry",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskHandle",
    "TaskInfo",
    "TaskNotFound",
    "actor",
    "current_task",
]
