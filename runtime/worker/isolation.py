"""Sync handlers with ``isolation="process"``: each runs in a supervised child process.

A thread cannot be killed, so a sync handler stuck in C holds its slot until it returns (runner.py).
A child process can be: at the timeout, or when its task is cancelled (the leader's cancel, fencing,
the drain timeout), the worker sends SIGTERM, then SIGKILL after a brief grace.

Children are warm before their slot is offered: the worker starts one per slot before it says
hello, and a child that is stopped (killed, or recycled by `max_tasks_per_child`) is replaced while
its slot stays busy. A rate limit counts the leases the leader grants; a cold child (an interpreter
to start, modules to import) used to start its handler up to seconds after its lease while later
leases found warm children at once, so handler starts bunched past the limit (5/s: 10 starts
within 0.76 s).

Children are spawned, never forked (the worker has threads and an event loop). Every child imports
the modules of all the worker's process-isolated actors and runs any of them, finding each by name
in the registry, so no function is pickled. Requests and outcomes cross a socketpair as
length-prefixed msgpack: nothing on our wire is pickled either (spawn pickles only the child's start
arguments: a socket, module names and a pid).
"""

from __future__ import annotations

import asyncio
import importlib
import io
import logging
import multiprocessing
import os
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from typing import Any

import msgpack

from .. import defaults, logs
from ..actor import Actor, TaskInfo, _current, registry
from ..errors import ProtocolError
from ..lifetime import die_with_parent
from ..protocol import Outcome, RunTask
from . import outcomes

log = logging.getLogger("qrt.worker")

# Spawning an interpreter and importing the actor's module is the worker's time, not the handler's,
# so it is not counted in the handler's timeout; bounded all the same, so that a module that hangs
# on import cannot hold a slot forever.
CHILD_START_TIMEOUT = 30.0
# Between SIGTERM and SIGKILL: a handler that catches SIGTERM gets this long to clean up. Short,
# because the slot stays busy meanwhile (SIGTERM's default action kills at once anyway).
KILL_GRACE = 0.5
# After SIGKILL, the kernel tears the process down in milliseconds; wait at most this long.
KILL_WAIT = 5.0
# How often a bounded wait for a child's exit looks again (waitpid with WNOHANG).
EXIT_POLL = 0.01
# A child's outcome carries a result that fits a frame: anything much larger is garbage.
MAX_MESSAGE_BYTES = defaults.MAX_PEER_FRAME_BYTES
_HEADER = struct.Struct("!I")  # every message: its length (4 bytes, big-endian), then msgpack
_SPAWN = multiprocessing.get_context("spawn")


class _ChildFailed(Exception):
    """A child that could not start, or that died or stopped making sense: the task's outcome says so."""

    def __init__(self, error_type: str, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


@dataclass(eq=False)
class _Child:
    process: SpawnProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int  # kept: a closed Process object no longer tells
    tasks: int = 0  # tasks finished, for max_tasks_per_child
    stopping: bool = False


HoldSlot = Callable[["asyncio.Future[Any]"], None]  # keeps a slot busy until the future is done


class ChildPool:
    """Up to `limit` children (one per slot), each able to run every actor of `modules`: warmed
    before the worker offers its slots, reused, and replaced before a stopped one's slot is free."""

    def __init__(self, limit: int, modules: list[str]) -> None:
        self.limit = limit
        self.modules = modules  # none: the worker has no process-isolated actor, and starts no child
        self._idle: list[_Child] = []  # children waiting for a task, the most recently used last
        self._children: set[_Child] = set()  # every child not being stopped: idle, busy or starting
        self._successors: set[asyncio.Future[None]] = set()  # children starting in place of stopped ones
        self._closed = False

    async def warm(self) -> None:
        """Start a child per slot (in parallel). A child that cannot start is logged; its tasks
        then fail with ChildStartFailed, as they would have anyway."""
        async def one() -> None:
            try:
                self._idle.append(await self._start())
            except _ChildFailed as exc:
                log.error("%s", exc)
        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(self.limit - len(self._children))))
        log.info("%d child processes warm for process-isolated actors in %.1f s", len(self._idle),
                 time.monotonic() - started)

    async def run(self, actor: Actor[Any, Any], task: RunTask, hold_slot: HoldSlot) -> Outcome:
        """Run one task of a ``run`` in a child and return its outcome; raises only CancelledError.
        A child stopped on the way is replaced, its slot held with `hold_slot` until the new one is warm."""
        try:
            child = await self._checkout()
        except _ChildFailed as exc:
            return outcomes.error(task.id, task.attempt, exc.error_type, str(exc), retryable=exc.retryable)
        try:
            async with asyncio.timeout(task.timeout):
                outcome = await _call(child, task)
        except TimeoutError:
            log.warning("%s (task %s, attempt %d) ran past its timeout of %s s: killing its child process %s",
                        actor.name, task.id, task.attempt, task.timeout, child.pid,
                        extra=logs.about(task.id, actor.name, task.attempt))
            await self._replace(child, hold_slot)
            return outcomes.timed_out(actor.name, task.id, task.attempt, task.timeout)
        except _ChildFailed:
            how = await self._bury(child)
            self._replace_later(hold_slot)
            log.warning("the child process running %s (task %s, attempt %d) %s", actor.name, task.id, task.attempt,
                        how, extra=logs.about(task.id, actor.name, task.attempt))
            message = f"the child process running {actor.name} {how}; a fresh one takes its place"
            return outcomes.error(task.id, task.attempt, "ChildDied", message)
        except BaseException:  # cancelled (the leader's cancel, fencing, drain): the handler goes with its task
            log.info("%s (task %s, attempt %d) cancelled: killing its child process %s", actor.name, task.id,
                     task.attempt, child.pid, extra=logs.about(task.id, actor.name, task.attempt))
            await self._replace(child, hold_slot)
            raise
        child.tasks += 1
        if actor.max_tasks_per_child is not None and child.tasks >= actor.max_tasks_per_child:
            await self._replace(child, hold_slot)  # recycled: whatever the handler leaked goes with it
        elif self._closed:
            await self._stop(child)
        else:
            self._idle.append(child)
        return outcome

    async def close(self) -> None:
        """Stop every child, idle or busy: none outlives the worker."""
        self._closed = True
        self._idle.clear()
        for successor in list(self._successors):
            successor.cancel()  # its child, once started, is in _children: stopped below
        if self._successors:
            await asyncio.wait(self._successors)
        async with asyncio.TaskGroup() as group:
            for child in list(self._children):
                group.create_task(self._stop(child))

    async def _checkout(self) -> _Child:
        while self._idle:
            child = self._idle.pop()  # the most recently used one
            if child.process.exitcode is None and not child.reader.at_eof():
                return child
            await self._bury(child)  # it died while idle (a signal, the OOM killer)
        # None warm: the first task after a failed warm-up, or one whose child died while idle.
        return await self._start()

    async def _replace(self, child: _Child, hold_slot: HoldSlot) -> None:
        """Stop `child`, and start its successor while its slot stays busy."""
        try:
            await self._stop(child)
        finally:  # cancelled during the stop too: the slot still waits for a warm child
            self._replace_later(hold_slot)

    def _replace_later(self, hold_slot: HoldSlot) -> None:
        if self._closed or not self.modules:
            return

        async def successor() -> None:
            try:
                child = await self._start()
            except _ChildFailed as exc:
                log.error("%s", exc)  # the next task starts one itself (and says why if it fails)
                return
            if self._closed:
                await self._stop(child)
            else:
                self._idle.insert(0, child)  # under the used ones: _checkout reuses the most recently used
        future = asyncio.ensure_future(successor())
        self._successors.add(future)
        future.add_done_callback(self._successors.discard)
        hold_slot(future)

    async def _start(self) -> _Child:
        modules = ", ".join(self.modules)
        cannot = f"cannot start a child process for {modules}"
        try:
            ours, theirs = socket.socketpair()
        except OSError as exc:  # out of file descriptors: the task says so (a retry may find some)
            raise _ChildFailed("ChildDied", f"{cannot}: {exc}") from None
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        process = _SPAWN.Process(target=_child_main, args=(theirs, self.modules, os.getpid()), name="qrt-child")
        try:
            process.start()
        except Exception as exc:  # out of processes or memory: likewise
            writer.close()
            raise _ChildFailed("ChildDied", f"{cannot}: {exc}") from None
        finally:
            theirs.close()  # the child has its copy; ours would hide the child's exit (no EOF)
        child = _Child(process, reader, writer, process.pid or 0)
        self._children.add(child)
        try:
            async with asyncio.timeout(CHILD_START_TIMEOUT):
                hello = await _read(child)
        except TimeoutError:
            await self._stop(child)
            raise _ChildFailed("ChildDied", f"a child process for {modules} did not start within "
                                            f"{CHILD_START_TIMEOUT} s") from None
        except _ChildFailed:
            how = await self._bury(child)
            raise _ChildFailed("ChildDied", f"a child process for {modules} {how} while starting") from None
        except BaseException:
            await self._stop(child)
            raise
        if "error" in hello:  # it cannot import the modules: running it again will not help
            await self._stop(child)
            raise _ChildFailed("ChildStartFailed", str(hello["error"]), retryable=False)
        return child

    async def _bury(self, child: _Child) -> str:
        """Reap a child that stopped answering and say how it ended."""
        if child.stopping:  # close() got there first: the worker is shutting down
            return "was stopped with the worker"
        await _wait_exit(child.process, KILL_GRACE)  # it is exiting, usually: let it, for its exit code
        code = child.process.exitcode
        await self._stop(child)
        if code is None:
            return "stopped answering (killed)"
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    async def _stop(self, child: _Child) -> None:
        """SIGTERM, up to KILL_GRACE to exit, then SIGKILL; the child is reaped when this returns."""
        if child.stopping:
            return
        child.stopping = True
        self._children.discard(child)
        child.writer.close()  # an idle child exits by itself when its socket closes
        process = child.process
        try:
            if process.exitcode is None:
                process.terminate()
                await _wait_exit(process, KILL_GRACE)
        finally:  # also when cancelled during the grace: a child never outlives its task
            if process.exitcode is None:
                process.kill()
                process.join(KILL_WAIT)
            if process.exitcode is not None:
                process.close()
            else:
                log.error("child process %s survived SIGKILL for %s s", child.pid, KILL_WAIT)


async def _call(child: _Child, task: RunTask) -> Outcome:
    """Send the task to the child and read back its outcome (both as their wire maps)."""
    data = msgpack.packb(task.to_wire(), use_bin_type=True)
    child.writer.write(_HEADER.pack(len(data)) + data)
    try:
        await child.writer.drain()
    except ConnectionError as exc:
        raise _ChildFailed("ChildDied", str(exc)) from None
    try:
        return Outcome.from_wire(await _read(child), "outcome")
    except ProtocolError as exc:
        raise _ChildFailed("ChildDied", f"garbage from the child: {exc.message}") from None


async def _read(child: _Child) -> dict[str, Any]:
    """The child's next message; _ChildFailed if it closed its socket (it died) or sent garbage."""
    try:
        (size,) = _HEADER.unpack(await child.reader.readexactly(_HEADER.size))
        if size > MAX_MESSAGE_BYTES:
            raise _ChildFailed("ChildDied", f"message of {size} bytes")
        message = msgpack.unpackb(await child.reader.readexactly(size), raw=False, strict_map_key=False)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise _ChildFailed("ChildDied", str(exc)) from None
    except ValueError as exc:  # msgpack's errors for garbage are ValueErrors
        raise _ChildFailed("ChildDied", f"garbage from the child: {exc}") from None
    if not isinstance(message, dict):
        raise _ChildFailed("ChildDied", "garbage from the child: not a map")
    return message


async def _wait_exit(process: SpawnProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process.exitcode is None and time.monotonic() < deadline:
        await asyncio.sleep(EXIT_POLL)


# -- in the child -----------------------------------------------------------------------------


def _child_main(sock: socket.socket, modules: list[str], parent: int) -> None:
    """A child's life: import the modules, say hello, run requests until the worker closes the socket."""
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the worker drains, so the handlers must go on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stream = sock.makefile("rwb")
    try:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                _send(stream, {"error": f"importing {module!r} in a child process failed: {type(exc).__name__}: {exc}"})
                return
        _send(stream, {"pid": os.getpid()})
        while (request := _receive(stream)) is not None:
            task = RunTask.from_wire(request, "task")
            actor = registry.get(task.actor)
            if actor is None:
                outcome = outcomes.error(task.id, task.attempt, "ChildStartFailed", f"importing {', '.join(modules)} "
                                         f"in a child process did not define actor {task.actor!r}; define "
                                         "process-isolated actors in an importable module", retryable=False)
            else:
                outcome = _run(actor, task)
            _send(stream, outcome.to_wire())
    except OSError:  # the worker is gone (BrokenPipeError): so are we
        return


def _run(actor: Actor[Any, Any], task: RunTask) -> Outcome:
    token = _current.set(TaskInfo(task.id, actor.name, task.attempt))
    try:
        return outcomes.ok(task.id, task.attempt, actor.fn(*task.args, **task.kwargs))
    except Exception as exc:
        return outcomes.of_exception(task.id, task.attempt, exc)
    finally:
        _current.reset(token)


def _send(stream: io.BufferedRWPair, message: dict[str, Any]) -> None:
    data = msgpack.packb(message, use_bin_type=True)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: io.BufferedRWPair) -> dict[str, Any] | None:
    """The worker's next request; None when it closed the socket (or died)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    request: dict[str, Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return request


