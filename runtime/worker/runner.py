"""Runs one handler under its timeout and turns what happened into an outcome for ``done``."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from .. import logs
from ..actor import Actor, TaskInfo, _current
from ..protocol import Outcome, RunTask
from . import outcomes

if TYPE_CHECKING:
    from .isolation import ChildPool

log = logging.getLogger("qrt.worker")


async def run_handler(actor: Actor[Any, Any], task: RunTask, executor: Executor,
                      on_overrun: Callable[[asyncio.Future[Any]], None],
                      children: ChildPool | None = None,
                      hold_slot: Callable[[asyncio.Future[Any]], None] | None = None) -> Outcome:
    """Run the handler for one task of a ``run`` and return its outcome; raises only CancelledError.

    A sync handler's thread cannot be killed: past its timeout, the attempt waits for the thread and
    reports the timeout when it returns. When cancelled with its thread still running,
    `on_overrun(future)` is told, so that the caller can keep its slot busy until the thread returns.
    An actor with isolation="process" runs in one of `children` instead, killed at its timeout, and
    `hold_slot(future)` keeps the slot busy while its successor warms (without `children`, in an
    in-process harness such as qrt.testing, it runs in a thread too).
    """
    if actor.isolation == "process" and children is not None:
        return await children.run(actor, task, hold_slot or on_overrun)
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
        if thread_future is None or thread_future.done():
            return outcomes.timed_out(actor.name, task.id, task.attempt, task.timeout)
        # A thread cannot be stopped: the attempt holds its lease, slot and limit units until it
        # returns (reported then), or its retry would run beside it, over the actor's limits.
        log.warning("%s (task %s, attempt %d) ran past its timeout of %s s; its thread cannot be stopped: the "
                    "task keeps its slot until it returns (isolation=\"process\" can kill it)", actor.name, task.id,
                    task.attempt, task.timeout, extra=logs.about(task.id, actor.name, task.attempt))
        started = time.monotonic() - task.timeout
        try:
            await asyncio.shield(thread_future)
        except asyncio.CancelledError:
            _check_overrun(thread_future, on_overrun)
            raise
        except Exception:
            pass  # the attempt has failed by its timeout whatever the thread did after
        return outcomes.overran(actor.name, task.id, task.attempt, task.timeout, time.monotonic() - started)
    except asyncio.CancelledError:
        _check_overrun(thread_future, on_overrun)
        raise
    except Exception as exc:
        return outcomes.of_exception(task.id, task.attempt, exc)


def _check_overrun(future: asyncio.Future[Any] | None, on_overrun: Callable[[asyncio.Future[Any]], None]) -> None:
    if future is not None and not future.done():
        on_overrun(future)
