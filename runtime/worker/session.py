"""A worker process's session with the coordinator: hello, credit, run, done, heartbeat, drain.

It announces its actors and free slots, runs what it is sent (never more than its free slots),
reports outcomes until the leader acknowledges them (so a failover neither loses nor doubles a
report: a repeated report of a finished lease is ignored by the state machine), heartbeats once a
second, follows redirects, and fences itself when no leader has answered for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import defaults, protocol
from ..actor import Actor
from ..errors import ProtocolError
from ..transport import Link
from .isolation import ChildPool
from .runner import outcome_error, run_handler

log = logging.getLogger("qrt.worker")

# Outcomes not acknowledged this long are sent again (the leader may have died before committing).
RESEND_AFTER = 1.0
TIMER_INTERVAL = 0.1


@dataclass(slots=True)
class Running:
    attempt: int
    job: asyncio.Task[None]


class Worker:
    def __init__(self, actors: dict[str, Actor[Any, Any]], coordinators: list[str],
                 concurrency: int = defaults.WORKER_CONCURRENCY,
                 drain_timeout: float = defaults.DRAIN_TIMEOUT) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.actors = actors
        self.coordinators = coordinators
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        # Also its ZeroMQ routing id (at most 255 bytes): keep it short and ASCII.
        host = socket.gethostname().encode("ascii", "replace").decode()[:60]
        self.id = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.running: dict[str, Running] = {}
        self.busy_threads = 0  # sync handlers timed out or cancelled whose thread still holds a slot
        self.unacked: dict[str, tuple[dict[str, Any], float]] = {}  # task id -> (outcome, sent at)
        self._outbox: list[dict[str, Any]] = []
        self._outbox_credit = 0
        self._flush_scheduled = False
        self._endpoint = 0
        self._welcomed = False
        self._draining = False
        self._last_heard = time.monotonic()  # the last frame from a leader (not a redirect)
        self._last_connect = time.monotonic()
        self._last_beat = 0.0
        self._last_hello = 0.0
        self._hello_again = False  # the last hello met "no leader yet": ask again shortly
        self._hello_slots = 0  # free slots announced in the last hello
        self._bye_acked = False
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="qrt-handler")
        self._children = ChildPool(concurrency)  # for isolation="process"; none start until needed
        self._jobs: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then drain: finish within the drain timeout, give back the rest."""
        self._loop = asyncio.get_running_loop()
        self._link = Link(self._loop, self._on_frame, identity=self.id.encode())
        self._connect(self.coordinators[0])
        try:
            while not stop.is_set():
                self._on_timer()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TIMER_INTERVAL)
            await self._drain()
        finally:
            for job in list(self._jobs):
                job.cancel()
            if self._jobs:
                await asyncio.wait(self._jobs, timeout=1.0)
            await self._children.close()
            self._link.close()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        log.info("worker %s draining: %d running, up to %.0f s", self.id, len(self.running), self.drain_timeout)
        self._draining = True
        self._send({"t": "drain"})
        deadline = time.monotonic() + self.drain_timeout
        while self.running and time.monotonic() < deadline:
            self._on_timer()
            await asyncio.sleep(TIMER_INTERVAL)
        leftover = [[tid, r.attempt] for tid, r in self.running.items()]
        for r in self.running.values():
            r.job.cancel()
        self.running.clear()
        self._flush()
        # Hand back what is left and wait (briefly) for the leader to take it and our reports.
        self._send({"t": "bye", "running": leftover})
        bye_deadline = time.monotonic() + 3.0
        self._bye_acked = False
        while (self.unacked or not self._bye_acked) and time.monotonic() < bye_deadline:
            self._on_timer()
            await asyncio.sleep(TIMER_INTERVAL)
        log.info("worker %s stopped (%d tasks given back)", self.id, len(leftover))

    # -- connection -------------------------------------------------------------------------

    def _connect(self, url: str) -> None:
        assert self._link is not None
        self._welcomed = False
        self._last_connect = time.monotonic()
        self._link.connect(url)
        self._hello()

    def _hello(self) -> None:
        self._last_hello = time.monotonic()
        self._hello_slots = 0 if self._draining else self._free_slots()
        self._send({
            "t": "hello", "worker_id": self.id, "slots": self._hello_slots,
            "concurrency": self.concurrency,
            "actors": [{"name": a.name, "options": a.options()} for a in self.actors.values()],
            # Finished but unacknowledged tasks too: their leases must stay, for the report we resend.
            "running": [[tid, r.attempt] for tid, r in self.running.items()]
                       + [[o["id"], o["attempt"]] for o, _ in self.unacked.values()],
        })

    def _free_slots(self) -> int:
        return max(0, self.concurrency - len(self.running) - self.busy_threads)

    def _send(self, body: dict[str, Any]) -> None:
        assert self._link is not None
        self._link.send(protocol.encode(body))

    def _on_timer(self) -> None:
        now = time.monotonic()
        silent = now - self._last_heard
        if silent > defaults.WORKER_FENCE_AFTER and self.running:
            self._fence()
        if silent > defaults.SILENCE_BEFORE_FAILOVER and now - self._last_connect > defaults.SILENCE_BEFORE_FAILOVER:
            # No leader answers: try the next coordinator (the leader may be dead).
            self._endpoint = (self._endpoint + 1) % len(self.coordinators)
            self._connect(self.coordinators[self._endpoint])
            return
        if self._hello_again and not self._welcomed and now - self._last_hello > 0.5:
            # No leader was elected when we last asked. Only then: a hello repeated while its
            # welcome is on the way would make the leader recount slots a `run` already took.
            self._hello_again = False
            self._hello()
        if self._welcomed and now - self._last_beat >= defaults.HEARTBEAT_INTERVAL:
            self._last_beat = now
            self._send({"t": "heartbeat"})
        stale = [o for o, sent in self.unacked.values() if now - sent > RESEND_AFTER]
        if stale and self._welcomed:
            self._send_done(stale, 0)
            for o in stale:
                self.unacked[o["id"]] = (o, now)

    def _fence(self) -> None:
        """No leader for too long: our leases are about to be granted elsewhere. Stop and stay silent."""
        log.warning("worker %s heard no leader for %.0f s: cancelling %d running tasks (fenced)",
                    self.id, defaults.WORKER_FENCE_AFTER, len(self.running))
        for r in self.running.values():
            r.job.cancel()
        self.running.clear()
        # A hello sent before this may still be queued at the leader, listing those tasks: this
        # later one tells it they are gone, so it requeues them instead of waiting on us forever.
        self._hello()

    # -- frames from the coordinator --------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        try:
            # The leader sends a `run` batch that may exceed one client frame; it is trusted that far.
            msg = protocol.decode(frame, 4 * defaults.MAX_FRAME_BYTES)
        except ProtocolError as exc:
            log.warning("dropped a bad frame from the coordinator: %s", exc.message)
            return
        kind = msg["t"]
        if kind in ("welcome", "hb", "run", "ack", "cancel"):  # only a leader sends these
            self._last_heard = time.monotonic()
        if kind == "run":
            for task in msg.get("tasks", []):
                self._start(task)
        elif kind == "ack":
            for task_id in msg.get("ids", []):
                self.unacked.pop(task_id, None)
            if msg.get("bye") is True:
                self._bye_acked = True
        elif kind == "cancel":
            running = self.running.get(msg.get("id", ""))
            if running is not None:
                running.job.cancel()
        elif kind == "welcome":
            self._welcomed = True
            freed = self._free_slots() - self._hello_slots  # slots freed while the hello travelled
            if freed > 0 and not self._draining:
                self._send({"t": "credit", "n": freed})
            if self.unacked:
                self._send_done([o for o, _ in self.unacked.values()], 0)
            if self._draining:
                self._send({"t": "drain"})
            log.info("worker %s connected to leader %s", self.id, self._link.url if self._link else "")
        elif kind == "redirect" and isinstance(msg.get("leader"), str):
            log.info("redirected to the leader at %s", msg["leader"])
            self._connect(msg["leader"])
        elif kind == "error":
            code = msg.get("code")
            if code == protocol.ErrorCode.NOT_HELLO:
                self._hello()
            elif code == protocol.ErrorCode.NO_LEADER:
                self._hello_again = True  # the timer asks again in 0.5 s
            else:
                log.error("coordinator error: %s: %s", code, msg.get("message"))

    # -- running tasks ----------------------------------------------------------------------

    def _start(self, task: dict[str, Any]) -> None:
        task_id, attempt = task.get("id"), task.get("attempt")
        if not isinstance(task_id, str) or not isinstance(attempt, int):
            return
        existing = self.running.get(task_id)
        if existing is not None:
            # Leased again (our old lease expired while the handler kept running): the running
            # handler reports under the new attempt, and the slot this run took is offered back.
            existing.attempt = max(existing.attempt, attempt)
            self._send({"t": "credit", "n": 1})
            return
        actor = self.actors.get(task.get("actor", ""))
        if actor is None:  # the coordinator only sends actors we announced; be safe anyway
            message = f"actor {task.get('actor')!r} is not registered by this worker"
            self._report(outcome_error(task_id, attempt, "UnknownActor", message, "", retryable=False), 1)
            return
        assert self._loop is not None
        job = self._loop.create_task(self._execute(actor, task))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        self.running[task_id] = Running(attempt, job)

    async def _execute(self, actor: Actor[Any, Any], task: dict[str, Any]) -> None:
        task_id = task["id"]
        overran = False

        def on_overrun(thread: asyncio.Future[Any]) -> None:
            nonlocal overran
            overran = True
            self.busy_threads += 1
            thread.add_done_callback(lambda _: self._thread_freed())

        try:
            outcome = await run_handler(actor, task, self._executor, on_overrun, self._children)
        except asyncio.CancelledError:
            running = self.running.pop(task_id, None)
            if running is not None:  # cancelled at the leader's request: report it
                error = outcome_error(task_id, running.attempt, "cancelled", "cancelled while running", "")
                self._report(error, 0 if self._draining or overran else 1)
            return  # fenced or shutting down: report nothing, the lease decides
        running = self.running.pop(task_id, None)
        if running is None:
            return  # fenced meanwhile: the leader may have given the task to another worker
        outcome["attempt"] = running.attempt
        self._report(outcome, 0 if self._draining or overran else 1)

    def _thread_freed(self) -> None:
        self.busy_threads -= 1
        if not self._draining and self._welcomed:
            self._send({"t": "credit", "n": 1})

    def _report(self, outcome: dict[str, Any], credit: int) -> None:
        """Queue an outcome; all outcomes of one loop pass leave in one ``done`` frame."""
        self.unacked[outcome["id"]] = (outcome, time.monotonic())
        self._outbox.append(outcome)
        self._outbox_credit += credit
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._welcomed:
            # Between leaders: outcomes wait in `unacked` (sent again on welcome), and the next
            # hello counts the freed slots.
            self._outbox, self._outbox_credit = [], 0
            return
        if self._outbox or self._outbox_credit:
            self._send_done(self._outbox, self._outbox_credit)
            self._outbox = []
            self._outbox_credit = 0

    def _send_done(self, outcomes: list[dict[str, Any]], credit: int) -> None:
        frame = protocol.encode({"t": "done", "outcomes": outcomes, "credit": credit})
        if len(frame) <= defaults.MAX_FRAME_BYTES or len(outcomes) <= 1:
            assert self._link is not None
            self._link.send(frame)
            return
        for i, outcome in enumerate(outcomes):  # too big together: one frame each
            self._send({"t": "done", "outcomes": [outcome], "credit": credit if i == 0 else 0})
