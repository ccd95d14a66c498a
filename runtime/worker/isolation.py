"""Sync handlers with ``isolation="process"``: each runs in a supervised child process.

A thread cannot be killed, so a sync handler stuck in C holds its slot until it returns (runner.py's
`on_overrun`). A child process can be: at the timeout, or when its task is cancelled (the leader's
cancel, fencing, the drain timeout), the worker sends SIGTERM, then SIGKILL after a brief grace, and
the slot is free as soon as the child is gone; the next task gets a fresh child.

Children are spawned, never forked (the worker has threads and an event loop); a child imports the
actor's module and finds the actor by name in the registry, so no function is pickled. Requests and
outcomes cross a socketpair as length-prefixed msgpack: nothing on our wire is pickled either (spawn
pickles only the child's start arguments: a socket, two names and a pid).
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
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from typing import Any

import msgpack

from .. import defaults
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
    actor: str
    pid: int  # kept: a closed Process object no longer tells
    tasks: int = 0  # tasks finished, for max_tasks_per_child
    stopping: bool = False


class ChildPool:
    """Children per process-isolated actor, at most `limit` in all: started lazily, reused, replaced."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: dict[str, list[_Child]] = {}  # actor name -> children waiting for a task
        self._children: set[_Child] = set()  # every child not being stopped: idle, busy or starting
        self._closed = False

    async def run(self, actor: Actor[Any, Any], task: RunTask) -> Outcome:
        """Run one task of a ``run`` in a child and return its outcome; raises only CancelledError."""
        try:
            child = await self._checkout(actor)
        except _ChildFailed as exc:
            return outcomes.error(task.id, task.attempt, exc.error_type, str(exc), retryable=exc.retryable)
        try:
            async with asyncio.timeout(task.timeout):
                outcome = await _call(child, task)
        except TimeoutError:
            log.warning("%s (task %s) ran past its timeout of %s s: killing its child process %s",
                        actor.name, task.id, task.timeout, child.pid)
            await self._stop(child)
            return outcomes.timed_out(actor.name, task.id, task.attempt, task.timeout)
        except _ChildFailed:
            how = await self._bury(child)
            log.warning("the child process running %s (task %s) %s", actor.name, task.id, how)
            message = f"the child process running {actor.name} {how}; a fresh one takes its place"
            return outcomes.error(task.id, task.attempt, "ChildDied", message)
        except BaseException:  # cancelled (the leader's cancel, fencing, drain): the handler goes with its task
            log.info("%s (task %s) cancelled: killing its child process %s", actor.name, task.id, child.pid)
            await self._stop(child)
            raise
        await self._checkin(child, actor)
        return outcome

    async def close(self) -> None:
        """Stop every child, idle or busy: none outlives the worker."""
        self._closed = True
        self._idle.clear()
        async with asyncio.TaskGroup() as group:
            for child in list(self._children):
                group.create_task(self._stop(child))

    async def _checkout(self, actor: Actor[Any, Any]) -> _Child:
        idle = self._idle.get(actor.name, [])
        while idle:
            child = idle.pop()  # the most recently used one
            if child.process.exitcode is None and not child.reader.at_eof():
                return child
            await self._bury(child)  # it died while idle (a signal, the OOM killer)
        if len(self._children) >= self.limit:
            # A busy or starting child holds a task's slot, so at the limit some child is idle
            # (unless killed ones are still being reaped after a fence: then we briefly go over).
            victim = next((c for children in self._idle.values() for c in children), None)
            if victim is not None:
                self._idle[victim.actor].remove(victim)
                await self._stop(victim)
        return await self._start(actor)

    async def _checkin(self, child: _Child, actor: Actor[Any, Any]) -> None:
        child.tasks += 1
        if self._closed or (actor.max_tasks_per_child is not None and child.tasks >= actor.max_tasks_per_child):
            await self._stop(child)  # recycled: whatever the handler leaked goes with it
        else:
            self._idle.setdefault(actor.name, []).append(child)

    async def _start(self, actor: Actor[Any, Any]) -> _Child:
        cannot = f"cannot start a child process for {actor.name}"
        try:
            ours, theirs = socket.socketpair()
        except OSError as exc:  # out of file descriptors: the task says so (a retry may find some)
            raise _ChildFailed("ChildDied", f"{cannot}: {exc}") from None
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        process = _SPAWN.Process(target=_child_main, args=(theirs, actor.fn.__module__, actor.name, os.getpid()),
                                 name=f"qrt-child {actor.name}")
        try:
            process.start()
        except Exception as exc:  # out of processes or memory: likewise
            writer.close()
            raise _ChildFailed("ChildDied", f"{cannot}: {exc}") from None
        finally:
            theirs.close()  # the child has its copy; ours would hide the child's exit (no EOF)
        child = _Child(process, reader, writer, actor.name, process.pid or 0)
        self._children.add(child)
        try:
            async with asyncio.timeout(CHILD_START_TIMEOUT):
                hello = await _read(child)
        except TimeoutError:
            await self._stop(child)
            raise _ChildFailed("ChildDied", f"a child process for {actor.name} did not start within "
                                            f"{CHILD_START_TIMEOUT} s") from None
        except _ChildFailed:
            how = await self._bury(child)
            raise _ChildFailed("ChildDied", f"a child process for {actor.name} {how} while starting") from None
        except BaseException:
            await self._stop(child)
            raise
        if "error" in hello:  # it cannot find the actor: running it again will not help
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


def _child_main(sock: socket.socket, module: str, name: str, parent: int) -> None:
    """A child's life: find the actor, say hello, run requests until the worker closes the socket."""
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the worker drains, so the handlers must go on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stream = sock.makefile("rwb")
    try:
        try:
            importlib.import_module(module)
            actor = registry.get(name)
        except Exception as exc:
            _send(stream, {"error": f"importing {module!r} in a child process failed: {type(exc).__name__}: {exc}"})
            return
        if actor is None:
            _send(stream, {"error": f"importing {module!r} in a child process did not define actor {name!r}; "
                                    "define process-isolated actors in an importable module"})
            return
        _send(stream, {"pid": os.getpid()})
        while (request := _receive(stream)) is not None:
            _send(stream, _run(actor, RunTask.from_wire(request, "task")).to_wire())
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


