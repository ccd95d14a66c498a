"""`AsyncClient` and `Client`: submit tasks, await their results, cancel, query.

One implementation: `AsyncClient` speaks the protocol on the caller's event loop; `Client` runs
an `AsyncClient` on a private loop in a background thread and blocks on it, so the sync and async
faces behave the same (as httpx's two clients do). Every request is idempotent (task ids are
chosen here), so after a redirect, a dead leader or a lost reply the client simply sends it again.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import math
import os
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop

from . import defaults, protocol
from .actor import Actor
from .errors import (
    InvalidArgument,
    NoLeader,
    ProtocolError,
    RemoteError,
    ResultTimeout,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
)
from .protocol import ErrorCode, check_packable
from .state.limits import parse_rate
from .transport import Link

T = TypeVar("T")
ActorRef = Actor[Any, Any] | str

# A request unanswered this long beyond what the coordinator may hold it goes to the next node.
SILENCE = defaults.SILENCE_BEFORE_FAILOVER
# Longest a single "wait" is held by the coordinator; result() repeats waits up to its timeout.
WAIT_CHUNK = 5.0
# How long a request may go without any leader answering before it fails with NoLeader.
REQUEST_TIMEOUT = 15.0


def resolve_coordinators(coordinators: str | Iterable[str] | None = None) -> list[str]:
    """The argument, else $QRT_COORDINATORS (comma-separated), else tcp://127.0.0.1:7700."""
    if coordinators is None:
        coordinators = os.environ.get(defaults.ENV_COORDINATORS, "") or defaults.COORDINATOR_URL
    if isinstance(coordinators, str):
        coordinators = coordinators.split(",")
    urls = [u.strip() for u in coordinators if u.strip()]
    for url in urls:
        if not url.startswith("tcp://") or ":" not in url[len("tcp://"):]:
            raise ValueError(f"coordinator address {url!r} must be a URL such as tcp://127.0.0.1:7700")
    if not urls:
        raise ValueError("no coordinator address given")
    return urls


def new_task_id() -> str:
    return uuid.uuid4().hex


def _actor_name(actor: ActorRef) -> str:
    if isinstance(actor, Actor):
        return actor.name
    if isinstance(actor, str):
        if actor and len(actor) <= 200:
            return actor
        raise InvalidArgument(f"an actor name must be 1 to 200 characters, not {actor!r}")
    raise InvalidArgument(f"actor must be a @qrt.actor function or its name, not {type(actor).__name__}")


def _seconds(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative number of seconds, not {value!r}")
    return float(value)


def _epoch(value: Any, name: str) -> float:
    """An aware datetime or epoch seconds, as epoch seconds; a naive datetime is ambiguous."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(f"{name} is a naive datetime; give it a timezone (e.g. datetime.now(timezone.utc))")
        return value.timestamp()
    return _seconds(value, name)


@dataclass(slots=True)
class SubmitOptions:
    """The keyword options of submit_with, checked once."""

    delay: float | None = None
    eta: float | datetime.datetime | None = None
    expires: float | datetime.datetime | None = None
    priority: int = 0
    idempotency_key: str | None = None

    def apply_to(self, envelope: protocol.Envelope) -> None:
        if self.delay is not None and self.eta is not None:
            raise InvalidArgument("give delay or eta, not both")
        if self.delay is not None:
            envelope.delay = _seconds(self.delay, "delay")
        if self.eta is not None:
            envelope.eta = _epoch(self.eta, "eta")
        if isinstance(self.expires, datetime.datetime):
            envelope.expires_at = _epoch(self.expires, "expires")
        elif self.expires is not None:
            envelope.expires_in = _seconds(self.expires, "expires")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise InvalidArgument(f"priority must be an int (higher runs first), not {self.priority!r}")
        envelope.priority = self.priority
        if self.idempotency_key is not None:
            if not isinstance(self.idempotency_key, str) or not self.idempotency_key:
                raise InvalidArgument("idempotency_key must be a non-empty str")
            envelope.idempotency_key = self.idempotency_key


def make_envelope(actor: ActorRef, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any] | None,
                  options: SubmitOptions | None = None) -> protocol.Envelope:
    """Validate a call here, so that a bad argument fails at submit with its name."""
    name = _actor_name(actor)
    kwargs = dict(kwargs or {})
    if not isinstance(args, (tuple, list)):
        raise InvalidArgument(f"args must be a tuple or list, not {type(args).__name__}")
    keys: dict[str, Any] = {}
    try:
        if isinstance(actor, Actor):
            keys = actor.check_arguments(tuple(args), kwargs)
        else:
            for i, value in enumerate(args):
                check_packable(value, f"args[{i}] of {name}")
            for key, value in kwargs.items():
                check_packable(value, f"argument {key!r} of {name}")
    except TypeError as exc:
        raise InvalidArgument(str(exc)) from None
    envelope = protocol.Envelope(new_task_id(), name, list(args), kwargs, keys)
    if options is not None:
        options.apply_to(envelope)
    return envelope


def raise_for_result(reply: dict[str, Any]) -> Any:
    """Turn a ``result`` reply into the value, or the exception it stands for."""
    state, task_id = reply.get("state"), reply.get("id", "")
    if state == "succeeded":
        return reply.get("value")
    if state == "failed":
        err = reply.get("error") or {}
        raise TaskFailed(task_id, err.get("type", "Exception"), err.get("message", ""), err.get("traceback", ""))
    if state == "cancelled":
        raise TaskCancelled(task_id)
    if state == "expired":
        raise TaskExpired(task_id)
    if state == "not_found":
        raise TaskNotFound(task_id)
    raise ProtocolError(ErrorCode.BAD_FIELD, f"unexpected result state {state!r}")


@dataclass(slots=True)
class _Request:
    body: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]
    hold: float  # how long the coordinator may keep it before answering
    started: float
    sent_at: float = 0.0
    frame: bytes = field(default=b"")


class AsyncTaskHandle:
    """A submitted task; `await handle.result(timeout=...)`."""

    def __init__(self, client: AsyncClient, task_id: str) -> None:
        self.client = client
        self.id = task_id

    def __repr__(self) -> str:
        return f"<qrt task {self.id}>"

    async def result(self, timeout: float | None = None) -> Any:
        """The handler's return value; raises TaskFailed, TaskCancelled, TaskNotFound or ResultTimeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            hold = WAIT_CHUNK if deadline is None else max(0.0, min(WAIT_CHUNK, deadline - time.monotonic()))
            reply = await self.client._request({"t": "wait", "id": self.id, "timeout": hold}, hold)
            if reply.get("state") != "pending":
                return raise_for_result(reply)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, timeout)


class AsyncClient:
    """The asyncio client. ``async with qrt.AsyncClient() as c: t = await c.submit(add, 1, 2)``."""

    def __init__(self, coordinators: str | Iterable[str] | None = None) -> None:
        self.coordinators = resolve_coordinators(coordinators)
        self._endpoint = 0
        self._rids = itertools.count(1)
        self._pending: dict[int, _Request] = {}
        self._link: Link | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for request in self._pending.values():
            if not request.future.done():
                request.future.set_exception(NoLeader("the client was closed"))
        self._pending.clear()
        if self._link is not None:
            self._link.close()
            self._link = None

    # -- tasks ------------------------------------------------------------------------------

    async def submit(self, actor: ActorRef, *args: Any, **kwargs: Any) -> AsyncTaskHandle:
        return (await self._submit([make_envelope(actor, args, kwargs)]))[0]

    async def submit_with(self, actor: ActorRef, args: tuple[Any, ...] | list[Any] = (),
                          kwargs: dict[str, Any] | None = None, *, delay: float | None = None,
                          eta: float | datetime.datetime | None = None,
                          expires: float | datetime.datetime | None = None, priority: int = 0,
                          idempotency_key: str | None = None) -> AsyncTaskHandle:
        """Submit with options, all held by the coordinator (never in a worker's memory).

        `delay` seconds from now, or `eta` (an aware datetime or epoch seconds); `expires` (seconds
        from now, or an aware datetime): not started by then, it never runs and ends `expired`;
        `priority` (int, higher first, default 0); `idempotency_key`: a second submit to the same
        actor with the same key, while the first task or its result is kept, returns the first
        task's handle and runs nothing.
        """
        options = SubmitOptions(delay, eta, expires, priority, idempotency_key)
        return (await self._submit([make_envelope(actor, args, kwargs, options)]))[0]

    async def submit_many(self, actor: ActorRef, calls: Iterable[tuple[Any, ...] | list[Any]]) -> list[AsyncTaskHandle]:
        """Submit one task per tuple of positional arguments: one round trip, one Raft entry."""
        envelopes = [make_envelope(actor, args, None) for args in calls]
        return await self._submit(envelopes) if envelopes else []

    def task(self, task_id: str) -> AsyncTaskHandle:
        """A handle to a task submitted elsewhere (by its id)."""
        return AsyncTaskHandle(self, task_id)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: a queued one never runs, a running async handler is cancelled."""
        return bool((await self._request({"t": "cancel", "id": task_id}))["n"])

    async def _submit(self, envelopes: list[protocol.Envelope]) -> list[AsyncTaskHandle]:
        reply = await self._request({"t": "submit", "tasks": [e.to_wire() for e in envelopes]})
        return [AsyncTaskHandle(self, task_id) for task_id in reply["ids"]]

    # -- operators --------------------------------------------------------------------------

    async def status(self, local: bool = False) -> dict[str, Any]:
        return await self._request({"t": "status", "local": local})

    async def dlq_list(self, limit: int = 100) -> dict[str, Any]:
        return await self._request({"t": "dlq_list", "limit": limit})

    async def dlq_show(self, task_id: str) -> dict[str, Any]:
        return (await self._request({"t": "dlq_show", "id": task_id}))["entry"]  # type: ignore[no-any-return]

    async def dlq_replay(self, ids: list[str] | None) -> int:
        """Put dead letters back in their queue (None: all of them); returns how many."""
        body = {"t": "dlq_replay", "all": True} if ids is None else {"t": "dlq_replay", "ids": ids}
        return int((await self._request(body))["n"])

    async def dlq_purge(self, ids: list[str] | None) -> int:
        body = {"t": "dlq_purge", "all": True} if ids is None else {"t": "dlq_purge", "ids": ids}
        return int((await self._request(body))["n"])

    async def limits(self) -> dict[str, Any]:
        """Per actor: the limits in force, what workers registered, operators' overrides, running."""
        return (await self._request({"t": "limits"}))["actors"]  # type: ignore[no-any-return]

    async def set_limits(self, actor: str, rate: str | None = None, key: Any = None,
                         concurrency: int | None = None, weight: int | None = None) -> None:
        """Override `actor`'s actor-wide `rate` ("10/s") and/or `concurrency`, or with `key` the rate
        of one value of its keyed rate limit and/or that value's `weight` (tasks per round-robin
        turn); in force at once, across failovers, until reset."""
        body: dict[str, Any] = {"t": "limits_set", "actor": actor}
        if weight is not None:
            body["weight"] = weight
        if rate is not None:
            try:
                body["rate"] = list(parse_rate(rate))
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        if key is not None:
            body["key"] = key
        if concurrency is not None:
            body["concurrency"] = concurrency
        await self._request(body)

    async def reset_limits(self, actor: str) -> bool:
        """Drop the operators' overrides of `actor`: what its workers registered holds again."""
        return bool((await self._request({"t": "limits_reset", "actor": actor}))["n"])

    async def pause(self, actor: str) -> None:
        """Stop starting `actor`'s tasks (they stay queued and keep arriving)."""
        await self._request({"t": "queue_pause", "actor": actor, "paused": True})

    async def resume(self, actor: str) -> None:
        await self._request({"t": "queue_pause", "actor": actor, "paused": False})

    async def purge(self, actor: str) -> int:
        """Cancel every queued and delayed task of `actor`; returns how many."""
        return int((await self._request({"t": "queue_purge", "actor": actor}))["n"])

    async def cron_add(self, name: str, actor: ActorRef, expr: str, args: list[Any] | tuple[Any, ...] = (),
                       kwargs: dict[str, Any] | None = None, tz: str = "UTC") -> None:
        """Have the cluster submit `actor(*args, **kwargs)` once per time of `expr`, as entry `name`."""
        envelope = make_envelope(actor, args, kwargs)
        reply = await self._request({"t": "cron_add", "name": name, "actor": envelope.actor, "expr": expr,
                                     "tz": tz, "args": envelope.args, "kwargs": envelope.kwargs})
        if not reply["n"]:
            raise InvalidArgument(f"cron entry {name!r} is an actor's own schedule (@qrt.actor(cron=...)); "
                                  "choose another name")

    async def cron_remove(self, name: str) -> bool:
        return bool((await self._request({"t": "cron_remove", "name": name}))["n"])

    async def cron_list(self) -> list[dict[str, Any]]:
        """Every cron entry with its next and last fire time and how many fires it missed."""
        return (await self._request({"t": "cron_list"}))["entries"]  # type: ignore[no-any-return]

    # -- requests ---------------------------------------------------------------------------

    async def _request(self, body: dict[str, Any], hold: float = 0.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if self._link is None:
            self._loop = loop
            self._link = Link(loop, self._on_frame)
            self._link.connect(self.coordinators[self._endpoint])
            self._timer = loop.call_later(0.1, self._on_timer)
        rid = next(self._rids)
        body["rid"] = rid
        frame = protocol.encode(body)
        if len(frame) > defaults.MAX_FRAME_BYTES:
            raise InvalidArgument(f"request of {len(frame)} bytes exceeds the frame limit of "
                                  f"{defaults.MAX_FRAME_BYTES} bytes; pass large data by reference")
        request = _Request(body, loop.create_future(), hold, time.monotonic(), frame=frame)
        self._pending[rid] = request
        self._send(request)
        try:
            return await request.future
        finally:
            self._pending.pop(rid, None)

    def _send(self, request: _Request) -> None:
        request.sent_at = time.monotonic()
        assert self._link is not None
        self._link.send(request.frame)

    def _on_frame(self, frame: bytes) -> None:
        try:
            # Replies (a dead letter with its arguments) may exceed a request's limit: the client
            # trusts its coordinator that far, as a worker does.
            msg = protocol.decode(frame, 4 * defaults.MAX_FRAME_BYTES)
        except ProtocolError:
            return
        request = self._pending.get(msg.get("rid", -1))
        if request is None or request.future.done():
            return
        kind = msg["t"]
        if kind == "redirect" and isinstance(msg.get("leader"), str):
            self._switch(msg["leader"])
        elif kind == "error" and msg.get("code") in (ErrorCode.NO_LEADER, ErrorCode.UNAVAILABLE):
            request.sent_at = time.monotonic() - SILENCE - request.hold + 0.2  # try again in 0.2 s
        elif kind == "error":
            request.future.set_exception(RemoteError(msg.get("code", "?"), msg.get("message", "")))
        else:
            request.future.set_result(msg)

    def _switch(self, url: str) -> None:
        """Connect to `url` (the leader, or the next node) and send every pending request there."""
        assert self._link is not None
        if url in self.coordinators:
            self._endpoint = self.coordinators.index(url)
        self._link.connect(url)
        for request in self._pending.values():
            if not request.future.done():
                self._send(request)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(0.1, self._on_timer)
        now = time.monotonic()
        silent = []
        for request in self._pending.values():
            if request.future.done():
                continue
            if now - request.started > REQUEST_TIMEOUT + request.hold:
                tried = ", ".join(self.coordinators)
                request.future.set_exception(NoLeader(
                    f"no coordinator leader answered within {REQUEST_TIMEOUT:.0f} s (tried {tried})"))
            elif now - request.sent_at > SILENCE + request.hold:
                silent.append(request)
        if silent:  # this node is dead or not answering: try the next one
            self._endpoint = (self._endpoint + 1) % len(self.coordinators)
            self._switch(self.coordinators[self._endpoint])


class TaskHandle:
    """A submitted task; `handle.result(timeout=...)` blocks until it finishes."""

    def __init__(self, client: Client, inner: AsyncTaskHandle) -> None:
        self._client = client
        self._inner = inner
        self.id = inner.id

    def __repr__(self) -> str:
        return f"<qrt task {self.id}>"

    def result(self, timeout: float | None = None) -> Any:
        return self._client._call(self._inner.result(timeout))


class Client:
    """The blocking client: ``with qrt.Client() as c: c.submit(add, 1, 2).result(timeout=10)``."""

    def __init__(self, coordinators: str | Iterable[str] | None = None) -> None:
        self._async = AsyncClient(coordinators)
        self.coordinators = self._async.coordinators
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qrt-client", daemon=True)
        self._thread.start()
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _wrap(self, handle: AsyncTaskHandle) -> TaskHandle:
        return TaskHandle(self, handle)

    def submit(self, actor: ActorRef, *args: Any, **kwargs: Any) -> TaskHandle:
        return self._wrap(self._call(self._async.submit(actor, *args, **kwargs)))

    def submit_with(self, actor: ActorRef, args: tuple[Any, ...] | list[Any] = (),
                    kwargs: dict[str, Any] | None = None, *, delay: float | None = None,
                    eta: float | datetime.datetime | None = None,
                    expires: float | datetime.datetime | None = None, priority: int = 0,
                    idempotency_key: str | None = None) -> TaskHandle:
        """See `AsyncClient.submit_with`."""
        return self._wrap(self._call(self._async.submit_with(
            actor, args, kwargs, delay=delay, eta=eta, expires=expires, priority=priority,
            idempotency_key=idempotency_key)))

    def submit_many(self, actor: ActorRef, calls: Iterable[tuple[Any, ...] | list[Any]]) -> list[TaskHandle]:
        return [self._wrap(h) for h in self._call(self._async.submit_many(actor, list(calls)))]

    def task(self, task_id: str) -> TaskHandle:
        return self._wrap(self._async.task(task_id))

    def cancel(self, task_id: str) -> bool:
        return self._call(self._async.cancel(task_id))

    def status(self, local: bool = False) -> dict[str, Any]:
        return self._call(self._async.status(local))

    def dlq_list(self, limit: int = 100) -> dict[str, Any]:
        return self._call(self._async.dlq_list(limit))

    def dlq_show(self, task_id: str) -> dict[str, Any]:
        return self._call(self._async.dlq_show(task_id))

    def dlq_replay(self, ids: list[str] | None) -> int:
        return self._call(self._async.dlq_replay(ids))

    def dlq_purge(self, ids: list[str] | None) -> int:
        return self._call(self._async.dlq_purge(ids))

    def limits(self) -> dict[str, Any]:
        return self._call(self._async.limits())

    def cron_add(self, name: str, actor: ActorRef, expr: str, args: list[Any] | tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, tz: str = "UTC") -> None:
        self._call(self._async.cron_add(name, actor, expr, args, kwargs, tz))

    def cron_remove(self, name: str) -> bool:
        return self._call(self._async.cron_remove(name))

    def cron_list(self) -> list[dict[str, Any]]:
        return self._call(self._async.cron_list())

    def set_limits(self, actor: str, rate: str | None = None, key: Any = None, concurrency: int | None = None,
                   weight: int | None = None) -> None:
        self._call(self._async.set_limits(actor, rate, key, concurrency, weight))

    def reset_limits(self, actor: str) -> bool:
        return self._call(self._async.reset_limits(actor))

    def pause(self, actor: str) -> None:
        self._call(self._async.pause(actor))

    def resume(self, actor: str) -> None:
        self._call(self._async.resume(actor))

    def purge(self, actor: str) -> int:
        return self._call(self._async.purge(actor))
