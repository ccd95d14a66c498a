"""Runs one handler under its timeout and turns what happened into an outcome for ``done``."""

from __future__ import annotations

import asyncio
import contextvars
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import msgpack

from .. import defaults
from ..actor import Actor, TaskInfo, _current
from ..errors import NonRetryable, Retry
from ..protocol import check_packable

if TYPE_CHECKING:
    from .isolation import ChildPool

# A result must fit in a `done` frame with room to spare for the rest of the frame.
MAX_RESULT_BYTES = defaults.MAX_FRAME_BYTES - 64 * 1024
# An error's message and traceback are cut to this many characters each (a traceback keeps its end,
# where the exception is): errors must fit in a frame whatever the handler raised.
MAX_ERROR_TEXT = 32 * 1024


def outcome_ok(task_id: str, attempt: int, value: Any) -> dict[str, Any]:
    try:
        size = len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        try:
            check_packable(value, "the result")
            message = "the result is not a msgpack value"
        except TypeError as exc:  # names the offending part
            message = str(exc)
        return outcome_error(task_id, attempt, "UnpackableResult", message, "", retryable=False)
    if size > MAX_RESULT_BYTES:
        message = f"the result packs to {size} bytes, over the limit of {MAX_RESULT_BYTES}; store it elsewhere"
        return outcome_error(task_id, attempt, "ResultTooLarge", message, "", retryable=False)
    return {"id": task_id, "attempt": attempt, "ok": True, "value": value}


def outcome_error(task_id: str, attempt: int, error_type: str, message: str, tb: str,
                  retryable: bool = True, retry_delay: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": task_id, "attempt": attempt, "ok": False, "error_type": error_type[:200],
                           "message": message[:MAX_ERROR_TEXT], "traceback": tb[-MAX_ERROR_TEXT:],
                           "retryable": retryable}
    if retry_delay is not None:
        out["retry_delay"] = float(retry_delay)
    return out


def outcome_of_exception(task_id: str, attempt: int, exc: Exception) -> dict[str, Any]:
    """The outcome of a handler that raised `exc`: in a worker's thread or loop, or in a child process."""
    if isinstance(exc, Retry):
        return outcome_error(task_id, attempt, "Retry", str(exc), "", retry_delay=exc.delay)
    tb = "".join(traceback.format_exception(exc))
    if isinstance(exc, NonRetryable):
        return outcome_error(task_id, attempt, "NonRetryable", str(exc), tb, retryable=False)
    return outcome_error(task_id, attempt, type(exc).__name__, str(exc), tb)


def outcome_timed_out(actor: Actor[Any, Any], task_id: str, attempt: int, timeout: float) -> dict[str, Any]:
    return outcome_error(task_id, attempt, "timeout", f"{actor.name} ran longer than its timeout of {timeout} s", "")


async def run_handler(actor: Actor[Any, Any], task: dict[str, Any], executor: Executor,
                      on_overrun: Callable[[asyncio.Future[Any]], None],
                      children: ChildPool | None = None) -> dict[str, Any]:
    """Run the handler for one ``run`` entry and return its outcome; raises only CancelledError.

    A sync handler's thread cannot be killed: when it is still running as we leave (timed out, or
    cancelled), `on_overrun(future)` is told, so that its slot stays busy until the thread returns.
    An actor with isolation="process" runs in one of `children` instead, killed at its timeout
    (without `children`, in an in-process harness such as qrt.testing, it runs in a thread too).
    """
    if actor.isolation == "process" and children is not None:
        return await children.run(actor, task)
    task_id, attempt, timeout = task["id"], task["attempt"], float(task["timeout"])
    info = TaskInfo(task_id, actor.name, attempt)
    args, kwargs = task.get("args", []), task.get("kwargs", {})
    thread_future: asyncio.Future[Any] | None = None
    try:
        async with asyncio.timeout(timeout):
            if actor.is_async:
                token = _current.set(info)
                try:
                    value = await actor.fn(*args, **kwargs)
                finally:
                    _current.reset(token)
            else:
                ctx = contextvars.copy_context()
                ctx.run(_current.set, info)
                loop = asyncio.get_running_loop()
                thread_future = loop.run_in_executor(executor, lambda: ctx.run(actor.fn, *args, **kwargs))
                value = await asyncio.shield(thread_future)
        return outcome_ok(task_id, attempt, value)
    except TimeoutError:
        _check_overrun(thread_future, on_overrun)
        return outcome_timed_out(actor, task_id, attempt, timeout)
    except asyncio.CancelledError:
        _check_overrun(thread_future, on_overrun)
        raise
    except Exception as exc:
        return outcome_of_exception(task_id, attempt, exc)


def _check_overrun(future: asyncio.Future[Any] | None, on_overrun: Callable[[asyncio.Future[Any]], None]) -> None:
    if future is not None and not future.done():
        on_overrun(future)
