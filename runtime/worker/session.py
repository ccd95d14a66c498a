"""A worker process's session with the coordinator: hello, credit, run, done, heartbeat, drain, bye.

It announces its actors and free slots, runs what it is sent (never more than its free slots),
reports outcomes until the leader acknowledges them (so a failover neither loses nor doubles a
report: a repeated report of a finished lease is ignored by the state machine), heartbeats once a
second, follows the leader (`transport.LeaderLink`), and fences itself when no leader has answered
for a while. It reads top to bottom: the life cycle, the timer, what arrives, what it runs, what it
reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import anatomy, defaults, tracing
from ..actor import Actor
from ..curve import PeerKeys, fingerprint
from ..errors import ProtocolError
from ..protocol import (
    Ack,
    ActorSpec,
    Bye,
    CancelRun,
    Credit,
    Done,
    Drain,
    Error,
    ErrorCode,
    Hb,
    Heartbeat,
    Hello,
    Outcome,
    Redirect,
    Run,
    RunTask,
    Welcome,
    WorkerMessage,
    parse_for_worker,
)
from ..state.tallies import Tally
from ..transport import LeaderLink
from . import outcomes
from .isolation import ChildPool
from .runner import run_handler

log = logging.getLogger("qrt.worker")

# How often the session looks at its clocks (heartbeat, resends, silence, fencing): a tenth of the
# heartbeat interval, so each of them is late by at most that.
TIMER_INTERVAL = 0.1
# A leaving worker waits this long for the leader to take back its tasks and acknowledge its last
# reports; then it goes anyway (what was not taken back expires as a lease would).
BYE_WAIT = 3.0


class Standing(enum.Enum):
    """The session's standing with the leader (one at a time), and how it moves.

    GREETING   `hello` sent to the node the link is connected to; no `welcome` yet. Outcomes wait in
               `unacked` (all resent on welcome); no heartbeat, `done` or `credit` (the slots freed
               meanwhile are offered on welcome).
               welcome -> WELCOMED;  error no_leader -> NO_LEADER;  error not_hello -> GREETING (hello again)
    NO_LEADER  that node knows no leader yet: hello again HELLO_RETRY later -> GREETING.
    WELCOMED   the leader knows this worker: heartbeats, `done`, `credit`.
               error not_hello (a new leader, or it expired us) -> GREETING;  error no_leader -> NO_LEADER
    Any of those three -> GREETING on every (re)connection (a redirect, or failover after silence:
    hello to the new node) and on fencing (a hello that no longer lists the cancelled tasks).
    LEAVING    `bye` sent: no heartbeat, no task taken (a `run` that crossed the bye is the leader's
               to requeue). ack with bye -> LEFT. If the leader changes meanwhile (a redirect,
               `not_hello`, silence), the worker says hello again (no free slots; it lists only
               its unacknowledged outcomes, so the new leader gives back the rest without counting
               a loss), and on welcome resends those outcomes and its `bye`.
    LEFT       the leader took back what was handed back; the session ends.
    """

    GREETING = "greeting"
    NO_LEADER = "no_leader"
    WELCOMED = "welcomed"
    LEAVING = "leaving"
    LEFT = "left"


@dataclass(slots=True)
class Running:
    attempt: int  # the newest attempt leased to us: the outcome is reported under it
    job: asyncio.Task[None]
    cancelling: bool = False  # the leader's cancel has reached it


@dataclass(slots=True)
class Report:
    outcome: Outcome
    sent_at: float  # when it last left (or was queued to leave) in a `done`


class Worker:
    def __init__(self, actors: dict[str, Actor[Any, Any]], coordinators: list[str],
                 concurrency: int = defaults.WORKER_CONCURRENCY,
                 drain_timeout: float = defaults.DRAIN_TIMEOUT, keys: PeerKeys | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.actors = actors
        self.coordinators = coordinators
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self.keys = keys  # CURVE keys (curve.peer_keys), or None
        # Without CURVE, also its ZeroMQ routing id (at most 255 bytes): keep it short and ASCII.
        # With CURVE the router names the connection, and the id ends with the key's fingerprint:
        # the leader takes no other from this key (docs/protocol.md §1.1).
        host = socket.gethostname().encode("ascii", "replace").decode()[:60]
        self.id = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if keys is not None:
            self.id += f"@{fingerprint(keys.public)}"
        self.started = time.time()  # its options win over those of workers started before (hello)
        self.standing = Standing.GREETING
        self.draining = False  # since `stop`: no new tasks, whichever leader we talk to
        self.running: dict[str, Running] = {}
        # Slots busy without a task: a cancelled sync handler's thread still running, or a child
        # process warming up in place of one that was stopped (isolation.py).
        self.held_slots = 0
        self.unacked: dict[str, Report] = {}  # task id -> its outcome until the leader acknowledges it
        self._specs = [ActorSpec(a.name, a.options()) for a in actors.values()]
        self._outbox: list[Outcome] = []  # outcomes of this loop pass: they leave in one `done`
        self._outbox_credit = 0
        self._flush_scheduled = False
        self._last_heard = 0.0  # the last frame from a leader (not a redirect, not an error)
        # When we last sent something a leader has since answered (a hello it welcomed, a heartbeat
        # it answered): the leader's lease timer for us restarted no earlier. The fence counts
        # from here, not from the last frame heard (a `run` says nothing of our lease timer), so
        # that it comes before the leader can expire our leases (docs/reliability.md).
        self._fence_from = 0.0
        self._beats: dict[int, float] = {}  # seq -> send time of the heartbeats not yet answered, oldest first
        self._beat_seq = 0
        self._last_beat = 0.0
        self._hello_at = 0.0
        self._hello_slots = 0  # free slots announced in the last hello
        # Slots freed since the last hello while no leader listened: the welcome's `credit`. (Not
        # free slots now less those announced: a `run` that arrived meanwhile took a slot the
        # leader already counted as taken, and would hide one freed.)
        self._freed_unsaid = 0
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="qrt-handler")
        isolated = sorted({a.fn.__module__ for a in actors.values() if a.isolation == "process"})
        self._children = ChildPool(concurrency, isolated)  # for isolation="process": warm before hello
        self._jobs: set[asyncio.Task[None]] = set()
        self.ran: dict[str, Tally] = {}  # actor -> its handlers' run times here (metrics.py)
        self.loop_lag = 0.0  # how late the last timer pass ran (metrics.py)
        self._ticked_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: LeaderLink | None = None
        self._bye: Bye | None = None  # once leaving: what we hand back

    # -- life cycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then drain: finish within the drain timeout, give back the rest."""
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._fence_from = time.monotonic()
        self._link = LeaderLink(self._loop, self.coordinators, self._on_message, self._hello,
                                identity=None if self.keys else self.id.encode(), keys=self.keys)
        try:
            if self._children.modules:
                await self._children.warm()  # before our slots are offered (isolation.py)
            self._link.start()  # connects, then says hello
            while not stop.is_set():
                self._tick()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TIMER_INTERVAL):
                        await stop.wait()
            await self._drain()
            await self._leave()
        finally:
            for job in list(self._jobs):
                job.cancel()
            if self._jobs:
                await asyncio.wait(self._jobs, timeout=1.0)
            await self._children.close()
            self._link.close()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        """Take no more tasks; let the running ones finish, up to the drain timeout."""
        log.info("worker %s draining: %d running, up to %.0f s", self.id, len(self.running), self.drain_timeout)
        self.draining = True
        self._send(Drain())
        deadline = time.monotonic() + self.drain_timeout
        while self.running and time.monotonic() < deadline:
            self._tick()
            await asyncio.sleep(TIMER_INTERVAL)

    async def _leave(self) -> None:
        """Stop what still runs, hand it back with `bye`, and wait (briefly) for the leader to take it."""
        leftover = [(task_id, r.attempt) for task_id, r in self.running.items()]
        for r in self.running.values():
            r.job.cancel()
        self.running.clear()
        self._flush()
        self._bye = Bye(leftover)
        self._say_bye()
        deadline = time.monotonic() + BYE_WAIT
        while (self.unacked or self.standing is not Standing.LEFT) and time.monotonic() < deadline:
            self._tick()
            await asyncio.sleep(TIMER_INTERVAL)
        log.info("worker %s stopped (%d tasks given back)", self.id, len(leftover))

    # -- the timer --------------------------------------------------------------------------

    def _say_bye(self) -> None:
        assert self._bye is not None
        self._send(self._bye)
        self.standing = Standing.LEAVING

    def _tick(self) -> None:
        assert self._link is not None
        if self.standing is Standing.LEFT:
            return
        now = time.monotonic()
        if self._ticked_at:
            self.loop_lag = max(0.0, now - self._ticked_at - TIMER_INTERVAL)
        self._ticked_at = now
        if now - self._fence_from > defaults.WORKER_FENCE_AFTER and self.running:
            self._fence()
        if self._link.tick(self._last_heard):
            return  # no leader answers here: the link moved to the next node, and we said hello there
        if self.standing is Standing.NO_LEADER and now - self._hello_at > defaults.HELLO_RETRY:
            self._hello()
        if self.standing is Standing.WELCOMED:
            if now - self._last_beat >= defaults.HEARTBEAT_INTERVAL:
                self._last_beat = now
                self._beat_seq += 1
                self._beats[self._beat_seq] = now
                # The leader reconciles its leases with what we hold, and its count of our free
                # slots with ours (less those whose credit is still in our outbox).
                free = 0 if self.draining else max(0, self._free_slots() - self._outbox_credit)
                self._send(Heartbeat(self._held(), self._beat_seq, free))
            stale = [report for report in self.unacked.values() if now - report.sent_at > defaults.RESEND_AFTER]
            if stale:
                self._resend(stale)

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

    # -- what arrives -----------------------------------------------------------------------

    def _hello(self) -> None:
        """Introduce ourselves (again) to the node the link is connected to."""
        self.standing = Standing.GREETING
        self._hello_at = time.monotonic()
        self._beats.clear()  # a new connection, maybe to another node: earlier beats go unanswered
        self._hello_slots = 0 if self.draining else self._free_slots()
        self._freed_unsaid = 0
        # Finished but unacknowledged tasks too: their leases must stay, for the report we resend.
        self._send(Hello(self.id, self._specs, self._hello_slots, self.concurrency, self._held(), self.started,
                         acks_in_run=True))

    def _held(self) -> list[tuple[str, int]]:
        """What the leader must keep leased to us: the tasks we run, and those whose report it has
        not acknowledged (their leases must stay, for the report we resend). Each id once."""
        held = {report.outcome.id: report.outcome.attempt for report in self.unacked.values()}
        held.update((task_id, r.attempt) for task_id, r in self.running.items())
        return list(held.items())

    def _on_message(self, raw: dict[str, Any]) -> None:
        try:
            message = parse_for_worker(raw)
        except ProtocolError as exc:
            log.warning("dropped a bad frame from the coordinator: %s", exc.message)
            return
        if isinstance(message, (Welcome, Hb, Run, Ack, CancelRun)):  # only a leader sends these
            self._last_heard = time.monotonic()
        if isinstance(message, Hb) and self._beats:
            self._on_hb(message)
        elif isinstance(message, Welcome):
            self._fence_from = max(self._fence_from, self._hello_at)
        if self.standing is Standing.LEFT:
            return
        match message:
            case Run():
                if message.acks:
                    self._on_ack(Ack(message.acks))
                if self._bye is None:  # else the leader gives its leases back with the bye
                    for task in message.tasks:
                        self._start(task)
            case Ack():
                self._on_ack(message)
            case CancelRun():
                running = self.running.get(message.id)
                if running is not None and not running.cancelling:  # the leader says it again until done
                    running.cancelling = True
                    running.job.cancel()
            case Welcome():
                self._on_welcome()
            case Redirect():
                log.info("redirected to the leader at %s", message.leader)
                assert self._link is not None
                self._link.follow(message.leader)  # then hello there
            case Error():
                self._on_error(message)

    def _on_hb(self, hb: Hb) -> None:
        """The leader's timer for us restarted when it read the heartbeat this answers: no sooner
        than we sent it. (An `hb` without `seq`, from an older coordinator: the oldest unanswered.)"""
        seq = hb.seq if hb.seq in self._beats else next(iter(self._beats)) if hb.seq is None else None
        if seq is None:
            return  # an answer to a heartbeat sent on an earlier connection
        self._fence_from = max(self._fence_from, self._beats[seq])
        for older in [s for s in self._beats if s <= seq]:
            del self._beats[older]

    def _on_welcome(self) -> None:
        self._last_beat = time.monotonic()  # the hello told what we hold: the first heartbeat can wait
        if self._bye is not None:  # a new leader while leaving: what it must know, then bye again
            if self.unacked:
                self._resend(list(self.unacked.values()))
            self._say_bye()
            return
        self.standing = Standing.WELCOMED
        freed, self._freed_unsaid = self._freed_unsaid, 0  # slots freed while the hello travelled
        if freed > 0 and not self.draining:
            self._send(Credit(freed))
        if self.unacked:
            self._resend(list(self.unacked.values()))
        if self.draining:
            self._send(Drain())  # a hello clears the leader's drain flag
        log.info("worker %s connected to leader %s", self.id, self._link.url if self._link else "")

    def _on_ack(self, ack: Ack) -> None:
        for task_id in ack.ids:
            self.unacked.pop(task_id, None)
        if ack.bye and self.standing is Standing.LEAVING:
            self.standing = Standing.LEFT

    def _on_error(self, error: Error) -> None:
        if error.code == ErrorCode.NOT_HELLO:
            self._hello()
        elif error.code == ErrorCode.NO_LEADER:
            self.standing = Standing.NO_LEADER  # the timer says hello again HELLO_RETRY after the last one
        else:
            log.error("coordinator error: %s: %s", error.code, error.message)

    # -- what it runs -----------------------------------------------------------------------

    def _start(self, task: RunTask) -> None:
        existing = self.running.get(task.id)
        reported = self.unacked.get(task.id)
        if (existing is not None and existing.attempt >= task.attempt) or \
                (reported is not None and reported.outcome.attempt >= task.attempt):
            return  # sent again by a leader reconciling its leases: we have it already
        if existing is not None:
            # Leased again (our old lease expired while the handler kept running): the running
            # handler reports under the new attempt, and the slot this run took is offered back.
            existing.attempt = max(existing.attempt, task.attempt)
            self._send(Credit(1))
            return
        actor = self.actors.get(task.actor)
        if actor is None:  # the coordinator only sends actors we announced; be safe anyway
            self._report(outcomes.unknown_actor(task.id, task.attempt, task.actor), 1)
            return
        assert self._loop is not None
        job = self._loop.create_task(self._execute(actor, task))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        self.running[task.id] = Running(task.attempt, job)

    async def _execute(self, actor: Actor[Any, Any], task: RunTask) -> None:
        thread: asyncio.Future[Any] | None = None  # a sync handler's thread, still running when cancelled
        held = False  # its slot stays busy after it (a child warming in place of its own)

        def on_overrun(future: asyncio.Future[Any]) -> None:
            nonlocal thread
            thread = future

        def hold_slot(future: asyncio.Future[Any]) -> None:
            nonlocal held
            held = True
            self._hold_slot(future)

        started = time.monotonic()
        span = tracing.run_started(task, self.id) if task.trace else None
        if anatomy.ON:
            anatomy.mark("started", task.id)
        try:
            outcome = await run_handler(actor, task, self._executor, on_overrun, self._children, hold_slot)
            if anatomy.ON:
                anatomy.mark("ended", task.id)
        except asyncio.CancelledError:
            tracing.run_ended(span, None)
            if thread is not None and task.id in self.running:
                # The leader's cancel, and the thread cannot be stopped: the lease (its slot, its
                # limit units) stays until the thread returns, or another run could start beside it.
                with contextlib.suppress(asyncio.CancelledError):  # fenced or shutting down meanwhile
                    await asyncio.shield(thread)
            running = self.running.pop(task.id, None)
            if thread is not None and not thread.done():
                hold_slot(thread)  # its slot stays busy until the thread returns
            if running is not None:  # cancelled at the leader's request: report it
                self._report(outcomes.cancelled(task.id, running.attempt), 0 if self.draining or held else 1)
            return  # fenced or shutting down: report nothing, the lease decides
        tracing.run_ended(span, outcome)
        tally = self.ran.get(actor.name) or self.ran.setdefault(actor.name, Tally())
        tally.ran(time.monotonic() - started)
        running = self.running.pop(task.id, None)
        if running is None:
            return  # fenced meanwhile: the leader may have given the task to another worker
        outcome.attempt = running.attempt
        self._report(outcome, 0 if self.draining or held else 1)

    def _hold_slot(self, future: asyncio.Future[Any]) -> None:
        """Keep a slot busy until `future` is done, then offer it (the report of its task did not)."""
        self.held_slots += 1
        future.add_done_callback(lambda _: self._slot_freed())

    def _slot_freed(self) -> None:
        self.held_slots -= 1
        if self.draining:
            return
        if self.standing is Standing.WELCOMED:
            self._send(Credit(1))
        else:
            self._freed_unsaid += 1

    def _free_slots(self) -> int:
        return max(0, self.concurrency - len(self.running) - self.held_slots)

    # -- what it reports --------------------------------------------------------------------

    def _report(self, outcome: Outcome, credit: int) -> None:
        """Queue an outcome; all outcomes of one loop pass leave in one ``done`` frame."""
        self.unacked[outcome.id] = Report(outcome, time.monotonic())
        self._outbox.append(outcome)
        self._outbox_credit += credit
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, credit = self._outbox, self._outbox_credit
        self._outbox, self._outbox_credit = [], 0
        # Not welcomed (between leaders, or leaving): the outcomes wait in `unacked` (sent again on
        # welcome), and the next hello, or the welcome, counts the freed slots.
        if self.standing is Standing.WELCOMED:
            if outbox or credit:
                self._send_done(outbox, credit)
        else:
            self._freed_unsaid += credit

    def _resend(self, reports: list[Report]) -> None:
        """Send unacknowledged outcomes again, with credit 0 (the first `done` carried it)."""
        self._send_done([report.outcome for report in reports], 0)
        now = time.monotonic()
        for report in reports:
            report.sent_at = now

    def _send_done(self, batch: list[Outcome], credit: int) -> None:
        if anatomy.ON:
            for outcome in batch:
                anatomy.mark("done_sent", outcome.id)
        frame = Done(batch, credit).encode()
        if len(frame) <= defaults.MAX_FRAME_BYTES or len(batch) <= 1:
            assert self._link is not None
            self._link.send(frame)
            return
        for i, outcome in enumerate(batch):  # too big together: one frame each
            self._send(Done([outcome], credit if i == 0 else 0))

    def _send(self, message: WorkerMessage) -> None:
        assert self._link is not None
        self._link.send(message.encode())
