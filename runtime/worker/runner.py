"""Runs one handler under its timeout and turns what happened into an outcome for ``done``."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from ..actor import Actor, TaskInfo, _current
from ..protocol import Outcome, RunTask
from . import outcomes

if TYPE_CHECKING:
    from .isolation import ChildPool


async def run_handler(actor: Actor[Any, Any], task: RunTask, executor: Executor,
                      on_overrun: Callable[[asyncio.Future[Any]], None],
                      children: ChildPool | None = None) -> Outcome:
    """Run the handler for one task of a ``run`` and return its outcome; raises only CancelledError.

    A sync handler's thread cannot be killed: when it is still running as we leave (timed out, or
    cancelled), `on_overrun(future)` is told, so that its slot stays busy until the thread returns.
    An actor with isolation="process" runs in one of `children` instead, killed at its timeout
    (without `children`, in an in-process harness such as qrt.testing, it runs in a thread too).
    """
    if actor.isolation == "process" and children is not None:
        return await children.run(actor, task)
    info = TaskInfo(task.id, actor.name, task.attempt)
    args, kwargs = task.args, task.kwargs
    thread_future: asyncio.Future[Any] | None = None
    try:
        async with asyncio.timeout(task.timeout):
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
        return outcomes.ok(task.id, task.attempt, value)
    except TimeoutError:
        _check_overrun(thread_future, on_overrun)
        return outcomes.timed_out(actor.name, task.id, task.attempt, task.timeout)
    except asyncio.CancelledError:
        _check_overrun(thread_future, on_overrun)
        raise
    except Exception as exc:
        return outcomes.of_exception(task.id, task.attempt, exc)


def _check_overrun(future: asyncio.Future[Any] | None, on_overrun: Callable[[asyncio.Future[Any]], None]) -> None:
    if future is not None and not future.done():
        on_overrun(future)
