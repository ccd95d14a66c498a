"""`AsyncClient` and `Client`: submit tasks, await their results, cancel, query.

One implementation: `AsyncClient` speaks the protocol on the caller's event loop; `Client` runs
an `AsyncClient` on a private loop in a background thread and blocks on it, so the sync and async
faces behave the same (as httpx's two clients do). Both open on their first request and, once
closed, refuse any other (`ClientClosed`). Every request is idempotent (task ids are chosen here),
so after a redirect, a dead leader or a lost reply the client simply sends it again (requester.py).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import uvloop

from . import defaults, protocol, tracing
from .curve import peer_keys
from .envelope import ActorRef, SubmitOptions, make_envelope, new_task_id
from .errors import (
    ClientClosed,
    InvalidArgument,
    ProtocolError,
    RemoteError,
    ResultTimeout,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
)
from .operator import cron_request, limits_request
from .requester import ClientState, Requester

T = TypeVar("T")
R = TypeVar("R", bound=protocol.Reply)

__all__ = ["ActorRef", "AsyncClient", "AsyncTaskHandle", "Client", "ClientState", "SubmitOptions", "TaskHandle",
           "make_envelope", "raise_for_result", "resolve_coordinators"]


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


def _request_timeout(timeout: Any) -> float:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


def raise_for_result(result: protocol.Result | dict[str, Any]) -> Any:
    """Turn a ``result`` reply (or a task summary) into the value, or the exception it stands for."""
    if isinstance(result, dict):
        result = protocol.Result.of(0, result)
    state, task_id = result.state, result.id
    if state == "succeeded":
        return result.value
    if state == "failed":
        err = result.error or {}
        raise TaskFailed(task_id, err.get("type", "Exception"), err.get("message", ""), err.get("traceback", ""))
    if state == "cancelled":
        raise TaskCancelled(task_id)
    if state == "expired":
        raise TaskExpired(task_id)
    if state == "not_found":
        raise TaskNotFound(task_id)
    raise ProtocolError(protocol.ErrorCode.BAD_FIELD, f"unexpected result state {state!r}")


# `cancel_many`: requests in flight at once (each a small frame; the leader batches them in its entries).
CANCELS_IN_FLIGHT = 500

class AsyncTaskHandle:
    """A submitted task; `await handle.result(timeout=...)`."""

    def __init__(self, client: AsyncClient, task_id: str) -> None:
        self.client = client
        self.id = task_id
        self.ended: protocol.Result | None = None  # how it ended, once a `wait_any` told (as_completed)

    def __repr__(self) -> str:
        return f"<qrt task {self.id}>"

    async def result(self, timeout: float | None = None) -> Any:
        """The handler's return value; raises TaskFailed, TaskCancelled, TaskNotFound or ResultTimeout."""
        if self.ended is not None:
            return raise_for_result(self.ended)
        deadline = None if timeout is None else time.monotonic() + timeout
        chunk = defaults.WAIT_CHUNK
        while True:
            hold = chunk if deadline is None else max(0.0, min(chunk, deadline - time.monotonic()))
            reply = await self.client._request(protocol.Wait(self.id, hold), protocol.Result, hold)
            if reply.state != "pending":
                return raise_for_result(reply)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, timeout)


class AsyncClient:
    """The asyncio client. ``async with qrt.AsyncClient() as c: t = await c.submit(add, 1, 2)``.

    `timeout`: how long a request may go without any leader answering before it fails with NoLeader
    (a `wait` held by the coordinator gets its own hold on top). `curve_secret_key`: this client's
    `.key_secret` file, `curve_server_key`: the coordinator's public `.key` (else $QRT_CURVE_SECRET_KEY
    and $QRT_CURVE_SERVER_KEY; neither: no CURVE). ValueError when a key cannot be read.
    """

    def __init__(self, coordinators: str | Iterable[str] | None = None,
                 timeout: float = defaults.REQUEST_TIMEOUT, *, curve_secret_key: str | None = None,
                 curve_server_key: str | None = None) -> None:
        self.coordinators = resolve_coordinators(coordinators)
        self.timeout = _request_timeout(timeout)
        keys = peer_keys(curve_secret_key, curve_server_key)
        # The files, to open more clients alike (`qrt status` asks each node itself).
        self.curve_secret_key = keys.secret_file if keys else None
        self.curve_server_key = keys.server_file if keys else None
        self._requester = Requester(self.coordinators, self.timeout, keys)

    @property
    def state(self) -> ClientState:
        return self._requester.state

    async def __aenter__(self) -> AsyncClient:
        if self.state is ClientState.CLOSED:
            raise ClientClosed("the client is closed; make a new one")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; requests still waiting, and any made later, fail with ClientClosed."""
        self._requester.close()

    def _request(self, message: protocol.Request, expected: type[R], hold: float = 0.0) -> Coroutine[Any, Any, R]:
        return self._requester.request(message, expected, hold)  # its coroutine: no extra await per request

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
        """Submit one task per tuple of positional arguments: one round trip, one Raft entry (a
        submit per MAX_TASKS_PER_SUBMIT tasks, all sent at once: each is accepted whole or not)."""
        envelopes = [make_envelope(actor, args, None) for args in calls]
        n = defaults.MAX_TASKS_PER_SUBMIT
        parts = await asyncio.gather(*(self._submit(envelopes[i:i + n]) for i in range(0, len(envelopes), n)))
        return [handle for part in parts for handle in part]

    def task(self, task_id: str) -> AsyncTaskHandle:
        """A handle to a task submitted elsewhere (by its id)."""
        return AsyncTaskHandle(self, task_id)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: a queued one never runs, a running async handler is cancelled."""
        return bool((await self._request(protocol.Cancel(task_id), protocol.Counted)).n)

    async def as_completed(self, handles: Iterable[AsyncTaskHandle],
                           timeout: float | None = None) -> AsyncIterator[AsyncTaskHandle]:
        """The handles in the order their tasks end, each one's `result()` then answered at once;
        a few `wait_any` requests for them all, not one long poll each. ResultTimeout (naming a
        task still running) when `timeout` passes first."""
        pending: dict[str, list[AsyncTaskHandle]] = {}
        for handle in handles:
            pending.setdefault(handle.id, []).append(handle)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            hold = defaults.WAIT_CHUNK if deadline is None else max(0.0, min(defaults.WAIT_CHUNK,
                                                                              deadline - time.monotonic()))
            for result in await self._ended(list(pending)[:protocol.MAX_IDS_PER_WAIT], hold):
                for handle in pending.pop(result.id, []):
                    handle.ended = result
                    yield handle
            if pending and deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(next(iter(pending)), timeout)

    async def results(self, handles: Iterable[AsyncTaskHandle], timeout: float | None = None) -> list[Any]:
        """Every task's result, in the order of `handles`: the first failure (in that order) raises."""
        handles = list(handles)
        async for _ in self.as_completed(handles, timeout):
            pass
        return [await handle.result() for handle in handles]

    async def _ended(self, ids: list[str], hold: float) -> list[protocol.Result]:
        """Those of `ids` that have ended (or are unknown); else, within `hold`, the first to end."""
        reply = await self._request(protocol.WaitAny(ids, hold), protocol.Answer, hold)
        return [protocol.Result.from_wire({**raw, "rid": reply.rid}) for raw in reply.body.get("results", [])]

    async def cancel_many(self, task_ids: list[str]) -> int:
        """Cancel each of `task_ids` (as `cancel`, many requests in flight at once); how many were."""
        done = 0
        for i in range(0, len(task_ids), CANCELS_IN_FLIGHT):
            done += sum(await asyncio.gather(*(self.cancel(t) for t in task_ids[i:i + CANCELS_IN_FLIGHT])))
        return done

    async def submit_again(self, task_id: str) -> AsyncTaskHandle:
        """A new task with what the history holds of `task_id`: its actor, arguments, keys and
        priority (a finished task runs again). InvalidArgument when the history stored its
        arguments truncated (over --history-value-bytes)."""
        record = await self.task_history(task_id)
        if any(isinstance(record[name], str) for name in ("args", "kwargs", "keys")):
            raise InvalidArgument(f"the history holds the arguments of {task_id} truncated: it cannot run again")
        envelope = protocol.Envelope(new_task_id(), record["actor"], record["args"] or [], record["kwargs"] or {},
                                     record["keys"] or {}, priority=record.get("priority") or 0)
        return (await self._submit([envelope]))[0]

    async def _submit(self, envelopes: list[protocol.Envelope]) -> list[AsyncTaskHandle]:
        with tracing.submit_span(envelopes):
            reply = await self._request(protocol.Submit(envelopes), protocol.Accepted)
        return [AsyncTaskHandle(self, task_id) for task_id in reply.ids]

    # -- operators --------------------------------------------------------------------------

    async def status(self, local: bool = False) -> dict[str, Any]:
        return (await self._request(protocol.Status(local), protocol.StatusReply)).status

    async def dlq_list(self, limit: int = 100) -> dict[str, Any]:
        page = await self._request(protocol.DlqList(limit), protocol.DlqPage)
        return {"total": page.total, "entries": page.entries, "arguments_truncated": page.arguments_truncated}

    async def dlq_show(self, task_id: str) -> dict[str, Any]:
        return (await self._request(protocol.DlqShow(task_id), protocol.DlqEntry)).entry

    async def dlq_replay(self, ids: list[str] | None) -> int:
        """Put dead letters back in their queue (None: all of them); returns how many."""
        return (await self._request(protocol.DlqReplay(ids, uuid.uuid4().hex), protocol.Counted)).n

    async def dlq_purge(self, ids: list[str] | None) -> int:
        return (await self._request(protocol.DlqPurge(ids, uuid.uuid4().hex), protocol.Counted)).n

    async def limits(self) -> dict[str, Any]:
        """Per actor: the limits in force, what workers registered, operators' overrides, running."""
        return (await self._request(protocol.LimitsShow(), protocol.LimitsReply)).actors

    async def set_limits(self, actor: str, rate: str | None = None, key: Any = None,
                         concurrency: int | None = None, weight: int | None = None) -> None:
        """Override `actor`'s actor-wide `rate` ("10/s") and/or `concurrency`, or with `key` the rate
        of one value of its keyed rate limit and/or that value's `weight` (tasks per round-robin
        turn); in force at once, across failovers, until reset. InvalidArgument, before anything
        is sent, for a combination or value the coordinator would refuse."""
        message = limits_request(actor, rate, key, concurrency, weight)
        await self._request(message, protocol.Counted)

    async def reset_limits(self, actor: str) -> bool:
        """Drop the operators' overrides of `actor`: what its workers registered holds again."""
        return bool((await self._request(protocol.LimitsReset(actor), protocol.Counted)).n)

    async def pause(self, actor: str) -> None:
        """Stop starting `actor`'s tasks (they stay queued and keep arriving)."""
        await self._request(protocol.QueuePause(actor, True), protocol.Counted)

    async def resume(self, actor: str) -> None:
        await self._request(protocol.QueuePause(actor, False), protocol.Counted)

    async def purge(self, actor: str) -> int:
        """Cancel every queued and delayed task of `actor`; returns how many."""
        return (await self._request(protocol.QueuePurge(actor, uuid.uuid4().hex), protocol.Counted)).n

    async def cron_add(self, name: str, actor: ActorRef, expr: str, args: list[Any] | tuple[Any, ...] = (),
                       kwargs: dict[str, Any] | None = None, tz: str = "UTC") -> None:
        """Have the cluster submit `actor(*args, **kwargs)` once per time of `expr`, as entry `name`.

        InvalidArgument, before anything is sent, for an expression or time zone that does not parse.
        """
        message = cron_request(name, actor, expr, args, kwargs, tz)
        if not (await self._request(message, protocol.Counted)).n:
            raise InvalidArgument(f"cron entry {name!r} is an actor's own schedule (@qrt.actor(cron=...)); "
                                  "choose another name")

    async def cron_remove(self, name: str) -> bool:
        return bool((await self._request(protocol.CronRemove(name), protocol.Counted)).n)

    async def alerts(self) -> list[dict[str, Any]]:
        """The leader's alert rules, each with what fires: `[{"name", "condition", "threshold", "actor",
        "window", "for", "sinks", "firing": [{"actor", "since", "value", "text"}]}]`."""
        return list((await self._request(protocol.AlertsList(), protocol.Answer)).body.get("rules", []))

    async def cron_list(self) -> list[dict[str, Any]]:
        """Every cron entry with its next and last fire time and how many fires it missed."""
        return (await self._request(protocol.CronList(), protocol.CronEntries)).entries

    # -- what happened (the task history: any node answers) --------------------------------

    async def describe(self, task_id: str) -> dict[str, Any]:
        """A task's present state, without waiting: queued, delayed, running (on which worker, at
        which attempt) or how it ended. TaskNotFound when no node holds it (its record was dropped:
        `task_history` may still have it)."""
        return await self._answer(protocol.Describe(task_id), task_id)

    async def task_history(self, task_id: str) -> dict[str, Any]:
        """Everything the history holds of a task: its arguments, keys, result or error and
        traceback, and every event of it (each attempt, its worker, its times)."""
        return await self._answer(protocol.TaskShow(task_id), task_id)

    async def list_tasks(self, **filters: Any) -> dict[str, Any]:
        """Tasks newest first, as `qrt tasks list` shows them: `{"tasks": [...], "next": cursor}`.

        Filters (all optional, every one given must hold): actor, state (queued, delayed, running,
        succeeded, failed, dead, cancelled, expired), worker, key=(NAME, VALUE), since and until
        (epoch seconds of the task's latest event), error and args (text they contain); then
        limit (default 50, at most 1000) and cursor (the previous page's `next`).
        """
        return (await self._request(protocol.TasksList(**_history_filters(filters)), protocol.Answer)).body

    async def task_events(self, after: int = 0, limit: int = 500, **filters: Any) -> dict[str, Any]:
        """Events after cursor `after` of the tasks the filters select, oldest first: `{"events":
        [...], "next": cursor}`. `after=0` starts from now (no events, a cursor): a live tail asks
        again with `next`."""
        message = protocol.TaskEvents(after=after, limit=limit, **_history_filters(filters))
        return (await self._request(message, protocol.Answer)).body

    async def stats(self, since: float, until: float | None = None, by: str = "actor",
                    actor: str | None = None) -> dict[str, Any]:
        """Per actor (or worker, key value, minute) between epoch seconds `since` and `until` (now):
        `{"rows": [{"group", "submitted", "succeeded", "failed", "failure_rate", "queue_wait_p50",
        ..., "run_p99"}]}` (failed: attempts that failed; durations in seconds). `actor`: that
        actor's tasks only (by actor or minute)."""
        return (await self._request(protocol.Stats(since, until, by, actor), protocol.Answer)).body

    async def dead_groups(self, limit: int = 200) -> dict[str, Any]:
        """The dead letters grouped by error fingerprint, largest first: `{"groups": [{"fingerprint",
        "count", "first_seen", "last_seen", "actors", "error_type", "message", "top_frame",
        "sample_id"}], "total"}`; `list_tasks(state="dead", fingerprint=F)` lists a group."""
        return (await self._request(protocol.DeadGroups(limit), protocol.Answer)).body

    async def history_journal(self, after: int, before: int) -> dict[str, Any]:
        """Node to node (a node that missed batches copies them): the answering node's history
        events with `after` < n < `before` (history/queries.py, `journal`)."""
        return (await self._request(protocol.HistoryJournal(after, before), protocol.Answer)).body

    async def _answer(self, message: protocol.Describe | protocol.TaskShow, task_id: str) -> dict[str, Any]:
        try:
            return (await self._request(message, protocol.Answer)).body
        except RemoteError as exc:
            if exc.code == protocol.ErrorCode.NOT_FOUND:
                raise TaskNotFound(task_id) from None
            raise


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
    """The blocking client: ``with qrt.Client() as c: c.submit(add, 1, 2).result(timeout=10)``.

    `timeout`, `curve_secret_key`, `curve_server_key`: as for `AsyncClient`. Safe to share between threads.
    """

    def __init__(self, coordinators: str | Iterable[str] | None = None,
                 timeout: float = defaults.REQUEST_TIMEOUT, *, curve_secret_key: str | None = None,
                 curve_server_key: str | None = None) -> None:
        self._async = AsyncClient(coordinators, timeout, curve_secret_key=curve_secret_key,
                                  curve_server_key=curve_server_key)
        self.coordinators = self._async.coordinators
        self.timeout = self._async.timeout
        self.curve_secret_key = self._async.curve_secret_key
        self.curve_server_key = self._async.curve_server_key
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qrt-client", daemon=True)
        self._thread.start()

    @property
    def state(self) -> ClientState:
        return self._async.state

    def __enter__(self) -> Client:
        if self.state is ClientState.CLOSED:
            raise ClientClosed("the client is closed; make a new one")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the client's thread; requests fail with ClientClosed from now on."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.state is ClientState.CLOSED or self._loop.is_closed():
            coro.close()
            raise ClientClosed("the client is closed; make a new one to send requests")
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

    def alerts(self) -> list[dict[str, Any]]:
        return self._call(self._async.alerts())

    def cancel_many(self, task_ids: list[str]) -> int:
        return self._call(self._async.cancel_many(task_ids))

    def as_completed(self, handles: Iterable[TaskHandle], timeout: float | None = None) -> Iterator[TaskHandle]:
        """The handles in the order their tasks end (as AsyncClient.as_completed)."""
        handles = list(handles)
        outer = {id(h._inner): h for h in handles}
        ended = self._async.as_completed([h._inner for h in handles], timeout)

        async def next_one() -> AsyncTaskHandle | None:
            return await anext(ended, None)
        while (inner := self._call(next_one())) is not None:
            yield outer[id(inner)]

    def results(self, handles: Iterable[TaskHandle], timeout: float | None = None) -> list[Any]:
        """Every task's result, in the order of `handles`: the first failure (in that order) raises."""
        handles = list(handles)
        for _ in self.as_completed(handles, timeout):
            pass
        return [handle.result() for handle in handles]

    def submit_again(self, task_id: str) -> TaskHandle:
        return self._wrap(self._call(self._async.submit_again(task_id)))

    def describe(self, task_id: str) -> dict[str, Any]:
        return self._call(self._async.describe(task_id))

    def task_history(self, task_id: str) -> dict[str, Any]:
        return self._call(self._async.task_history(task_id))

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        return self._call(self._async.list_tasks(**filters))

    def task_events(self, after: int = 0, limit: int = 500, **filters: Any) -> dict[str, Any]:
        return self._call(self._async.task_events(after, limit, **filters))

    def stats(self, since: float, until: float | None = None, by: str = "actor",
              actor: str | None = None) -> dict[str, Any]:
        return self._call(self._async.stats(since, until, by, actor))

    def dead_groups(self, limit: int = 200) -> dict[str, Any]:
        return self._call(self._async.dead_groups(limit))

    def history_journal(self, after: int, before: int) -> dict[str, Any]:
        return self._call(self._async.history_journal(after, before))

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


def _history_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters of `list_tasks` and `task_events` as their message takes them (key as [NAME, VALUE])."""
    known = {"actor", "state", "worker", "key", "since", "until", "error", "args", "fingerprint", "limit", "cursor"}
    unknown = set(filters) - known
    if unknown:
        raise InvalidArgument(f"unknown filter {', '.join(sorted(unknown))}: use {', '.join(sorted(known))}")
    out = {k: v for k, v in filters.items() if v is not None}
    if "key" in out:
        name, value = out["key"]
        out["key"] = [str(name), value if isinstance(value, str) else json.dumps(value)]
    return out
