"""The coordinator node: a ROUTER socket, leader discovery, and turning frames into commands.

A thin shell around the state machine: frames are validated by `protocol`, turned into commands
that the `Proposer` group-commits through Raft, and the effects of committed commands are turned
back into frames. Only the leader proposes and dispatches; a follower answers ``redirect``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from typing import Any

import zmq

from .. import defaults, protocol
from ..errors import ProtocolError
from ..protocol import ErrorCode
from ..replication import Replication
from ..state import TaskState
from ..state import commands as C
from ..state.cron import CronExpr
from ..state.model import Accepted, CancelRunning, Count, Effect, Finished, Leased, Requeued, Retrying
from .proposer import Proposer
from .status import cluster_status
from .waiters import WaitRoom
from .workers import WorkerConn, WorkerTable

log = logging.getLogger("qrt.coordinator")

# How often the leader checks lease timers, due delayed tasks and expired waits.
HOUSEKEEPING_INTERVAL = 0.1
# Below this many queued frames the socket is drained in one go; bounds one pass of the loop.
MAX_FRAMES_PER_PASS = 5000


class Coordinator:
    def __init__(self, listen: str, replication: Replication, max_frame: int = defaults.MAX_FRAME_BYTES) -> None:
        self.listen = listen
        self.replication = replication
        self.max_frame = max_frame
        self.workers = WorkerTable()
        self.waiters = WaitRoom()
        self.leading = False
        self._wants_dispatch = False
        self._work_check_scheduled = False
        self._last_tick = 0.0
        self._loop = asyncio.get_running_loop()
        self.proposer = Proposer(replication, self._loop, before_flush=self._before_flush,
                                 on_effects=self._on_effects)
        self._timer: asyncio.TimerHandle | None = None  # wakes the leader when the next thing is due
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # ZeroMQ drops frames to unknown peers silently otherwise
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting worker keeps its identity
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_frame)  # beyond this ZeroMQ drops the peer outright
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        try:
            self.sock.bind(listen)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            self._ctx.term()
            raise OSError(f"cannot listen on {listen} ({exc})") from None
        self._fd = int(self.sock.getsockopt(zmq.FD))
        self._drain_scheduled = False
        self._handlers: dict[type, Any] = {
            protocol.Submit: self._on_submit, protocol.Wait: self._on_wait, protocol.Cancel: self._on_cancel,
            protocol.Status: self._on_status, protocol.DlqList: self._on_dlq_list,
            protocol.DlqShow: self._on_dlq_show, protocol.DlqReplay: self._on_dlq_change,
            protocol.DlqPurge: self._on_dlq_change, protocol.Hello: self._on_hello,
            protocol.Heartbeat: self._on_heartbeat, protocol.Done: self._on_done,
            protocol.Credit: self._on_credit, protocol.Drain: self._on_drain, protocol.Bye: self._on_bye,
            protocol.LimitsShow: self._on_limits_show, protocol.LimitsSet: self._on_operator,
            protocol.LimitsReset: self._on_operator, protocol.QueuePause: self._on_operator,
            protocol.QueuePurge: self._on_operator, protocol.CronAdd: self._on_operator,
            protocol.CronRemove: self._on_operator, protocol.CronList: self._on_cron_list,
        }

    # -- life cycle -------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; the socket's readiness drives everything else."""
        self._loop.add_reader(self._fd, self._schedule_drain)
        self._schedule_drain()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._housekeeping(stop))
                tg.create_task(self._register_self(stop))
                await stop.wait()
        finally:
            self._loop.remove_reader(self._fd)
            self.sock.close(linger=0)
            self._ctx.term()

    def on_raft_state_changed(self) -> None:
        """Called (thread-safely) when this node's Raft role changes."""
        leading = self.replication.is_leader()
        if leading == self.leading:
            return
        self.leading = leading
        self.workers.clear()
        if leading:
            # Every lease timer restarts now: workers get a full grace period to say hello again.
            with self.replication.reading() as machine:
                for worker_id in list(machine.leases):
                    self.workers.ghost(worker_id)
            self._wants_dispatch = True
            log.info("this node (%s) now leads, term %d", self.listen, self.replication.term)
        else:
            self.proposer.fail_all("not_leader")
            for waiter in self.waiters.clear():
                self._send(waiter.identity, self._redirect(waiter.rid))
            log.info("this node (%s) no longer leads", self.listen)

    # -- the socket -------------------------------------------------------------------------

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Read every queued frame, handle each, then propose them all as one Raft entry."""
        self._drain_scheduled = False
        for _ in range(MAX_FRAMES_PER_PASS):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            if len(frames) == 2:
                self._handle(frames[0], frames[1])
        else:
            self._schedule_drain()  # more is waiting: come back after others had a turn
        self.proposer.flush()
        # The socket's FD is edge-triggered: a send may have consumed the edge of a new arrival.
        if int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._schedule_drain()

    def _send(self, identity: bytes, frame: bytes) -> bool:
        sent = True
        try:
            self.sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer is gone; EAGAIN: its queue is full
            log.debug("could not send to %r: %s", identity, exc)
            sent = False
        # A send can consume the edge of the FD's readiness for a frame that just arrived (sends
        # from commit callbacks happen outside _drain): look again, or that frame waits (measured:
        # pauses up to 1 s, until the next unrelated arrival).
        self._schedule_drain()
        return sent

    def _handle(self, identity: bytes, frame: bytes) -> None:
        raw: dict[str, Any] = {}
        try:
            raw = protocol.decode(frame, self.max_frame)
            message = protocol.parse(raw)
        except ProtocolError as exc:
            self._send(identity, protocol.error(exc.code, exc.message, exc.rid))
            return
        if not self.leading and not (isinstance(message, protocol.Status) and message.local):
            self._send(identity, self._redirect(getattr(message, "rid", None)))
            return
        try:
            self._handlers[type(message)](identity, message)
        except Exception:
            log.exception("handling %s failed", raw.get("t"))
            self._send(identity, protocol.error(ErrorCode.INTERNAL,
                                                f"the coordinator failed to handle {raw.get('t')!r}",
                                                protocol.request_id(raw)))

    def _redirect(self, rid: int | None) -> bytes:
        leader = self.replication.leader_address()
        url = self.replication.machine.nodes.get(leader) if leader else None
        if url is None or url == self.listen:
            return protocol.error(ErrorCode.NO_LEADER, "no leader is elected right now; retry shortly", rid)
        body: dict[str, Any] = {"t": "redirect", "leader": url}
        if rid is not None:
            body["rid"] = rid
        return protocol.encode(body)

    def _reply(self, identity: bytes, kind: str, rid: int, **fields: Any) -> None:
        self._send(identity, protocol.encode({"t": kind, "rid": rid, **fields}))

    def _committed(self, identity: bytes, rid: int, then: Any) -> Any:
        """An on_effects callback: run `then(effects)`, or tell the client the command did not commit."""
        def on_effects(effects: list[Effect] | None, error: str | None) -> None:
            if effects is None:
                self._send(identity, protocol.error(ErrorCode.UNAVAILABLE,
                                                    f"not committed ({error}); retry", rid))
            else:
                then(effects)
        return on_effects

    # -- clients ----------------------------------------------------------------------------

    def _on_submit(self, identity: bytes, msg: protocol.Submit) -> None:
        def accepted(effects: list[Effect]) -> None:
            for effect in effects:
                if isinstance(effect, Accepted):
                    self._reply(identity, "accepted", msg.rid, ids=effect.ids)
        self.proposer.add(C.submit(msg.tasks), self._committed(identity, msg.rid, accepted))
        self._wants_dispatch = True

    def _on_wait(self, identity: bytes, msg: protocol.Wait) -> None:
        with self.replication.reading() as machine:
            task = machine.tasks.get(msg.id)
            summary = task.summary() if task is not None and task.state in TaskState.TERMINAL else None
        if task is None:
            self._reply(identity, "result", msg.rid, id=msg.id, state="not_found")
        elif summary is not None:
            self._reply(identity, "result", msg.rid, **summary)
        else:
            self.waiters.add(msg.id, identity, msg.rid, time.monotonic() + msg.timeout)

    def _on_cancel(self, identity: bytes, msg: protocol.Cancel) -> None:
        def cancelled(effects: list[Effect]) -> None:
            for effect in effects:
                if isinstance(effect, Count):
                    self._reply(identity, "ok", msg.rid, n=effect.n)
        self.proposer.add(C.cancel(msg.id), self._committed(identity, msg.rid, cancelled))

    def _on_status(self, identity: bytes, msg: protocol.Status) -> None:
        status = cluster_status(self.listen, self.leading, self.replication, self.workers)
        self._reply(identity, "ok", msg.rid, **status)

    def _on_dlq_list(self, identity: bytes, msg: protocol.DlqList) -> None:
        with self.replication.reading() as machine:
            ids = list(machine.dlq)[-msg.limit:] if msg.limit else []
            entries = [machine.tasks[i].summary(with_arguments=True) for i in reversed(ids)]
            total = len(machine.dlq)
        # Keep the reply well within a frame: large arguments are left to `dlq_show`.
        budget, truncated = self.max_frame // 2, False
        for entry in entries:
            size = len(protocol.encode(dict(entry)))
            if size > budget // 8:
                entry["args"], entry["kwargs"], truncated = ["…"], {}, True
                if "error" in entry:
                    entry["error"] = {**entry["error"], "traceback": entry["error"]["traceback"][-2000:]}
                size = len(protocol.encode(dict(entry)))
            budget -= size
            if budget < 0:
                truncated = True
                entries = entries[:entries.index(entry)]
                break
        self._reply(identity, "ok", msg.rid, total=total, entries=entries, arguments_truncated=truncated)

    def _on_dlq_show(self, identity: bytes, msg: protocol.DlqShow) -> None:
        with self.replication.reading() as machine:
            task = machine.tasks.get(msg.id) if msg.id in machine.dlq else None
            summary = None if task is None else task.summary(with_arguments=True)
        if summary is None:
            self._send(identity, protocol.error(ErrorCode.NOT_FOUND, f"no dead letter with id {msg.id!r}", msg.rid))
        else:
            self._reply(identity, "ok", msg.rid, entry=summary)

    def _on_dlq_change(self, identity: bytes, msg: protocol.DlqReplay | protocol.DlqPurge) -> None:
        replay = isinstance(msg, protocol.DlqReplay)
        def counted(effects: list[Effect]) -> None:
            for effect in effects:
                if isinstance(effect, Count):
                    self._reply(identity, "ok", msg.rid, n=effect.n, ids=effect.ids)
        command = C.dlq_replay(msg.ids) if replay else C.dlq_purge(msg.ids)
        self.proposer.add(command, self._committed(identity, msg.rid, counted))
        self._wants_dispatch |= replay

    def _on_cron_list(self, identity: bytes, msg: protocol.CronList) -> None:
        with self.replication.reading() as machine:
            entries = [entry.view() for entry in machine.cron.entries.values()]
        self._reply(identity, "ok", msg.rid, entries=entries)

    def _on_limits_show(self, identity: bytes, msg: protocol.LimitsShow) -> None:
        with self.replication.reading() as machine:
            view = machine.limits_view()
        self._reply(identity, "ok", msg.rid, actors=view)

    def _on_operator(self, identity: bytes, msg: protocol.OperatorMessage) -> None:
        """Operators' commands: each one replicated command, answered with how much it changed."""
        if isinstance(msg, protocol.LimitsSet):
            command = C.operator_limits(msg.actor, msg.rate, msg.key, msg.concurrency, msg.weight)
        elif isinstance(msg, protocol.LimitsReset):
            command = C.reset_limits(msg.actor)
        elif isinstance(msg, protocol.QueuePause):
            command = C.pause(msg.actor, msg.paused)
        elif isinstance(msg, protocol.CronAdd):
            try:
                CronExpr.parse(msg.expr, msg.tz)
            except ValueError as exc:
                self._send(identity, protocol.error(ErrorCode.BAD_FIELD, str(exc), msg.rid))
                return
            command = C.cron_add(msg.name, msg.actor, msg.expr, msg.tz, msg.args, msg.kwargs)
        elif isinstance(msg, protocol.CronRemove):
            command = C.cron_remove(msg.name)
        else:
            command = C.purge_queue(msg.actor)

        def counted(effects: list[Effect]) -> None:
            n = sum(e.n for e in effects if isinstance(e, Count))
            self._reply(identity, "ok", msg.rid, n=n)
        self.proposer.add(command, self._committed(identity, msg.rid, counted))
        self._wants_dispatch = True  # looser limits or a resumed queue may let work start

    # -- workers ----------------------------------------------------------------------------

    def _on_hello(self, identity: bytes, msg: protocol.Hello) -> None:
        for spec in msg.actors:
            try:
                if "cron" in spec.options:
                    CronExpr.parse(spec.options["cron"], spec.options.get("tz", "UTC"))
            except ValueError as exc:
                self._send(identity, protocol.error(ErrorCode.BAD_FIELD, f"actor {spec.name!r}: {exc}"))
                return
        if identity != msg.worker_id.encode():
            self._send(identity, protocol.error(
                ErrorCode.BAD_FIELD, "field 'worker_id' must equal the socket's ZeroMQ routing id"))
            return
        previous = self.workers.by_id.get(msg.worker_id)
        # A lease granted since this worker's previous hello may be a `run` still on its way to it:
        # the worker cannot list it yet, so only older unlisted leases count as vanished.
        since = previous.since if previous is not None and previous.connected else math.inf  # batches
        conn = self.workers.hello(msg.worker_id, identity, [a.name for a in msg.actors], msg.slots, msg.concurrency)
        self.proposer.add(C.register_actors({a.name: a.options for a in msg.actors}), _ignore)
        still_running = set(msg.running)
        with self.replication.reading() as machine:
            conn.since = machine.applied
            vanished = [(tid, attempt) for tid, attempt in machine.leases_of(msg.worker_id)
                        if (tid, attempt) not in still_running and machine.tasks[tid].leased_in <= since]
        if vanished:  # granted by an earlier leader, but the worker never got them (or fenced itself)
            self.proposer.add(C.lost(msg.worker_id, vanished, counts=False), self._after_requeue)
        self._wants_dispatch = True
        log.info("worker %s joined: %d free slots, actors %s", msg.worker_id, msg.slots,
                 ", ".join(a.name for a in msg.actors))
        self._send(identity, protocol.encode({
            "t": "welcome", "worker_id": msg.worker_id, "heartbeat_interval": defaults.HEARTBEAT_INTERVAL,
            "lease_timeout": defaults.LEASE_TIMEOUT}))

    def _known_worker(self, identity: bytes) -> WorkerConn | None:
        conn = self.workers.seen(identity.decode(errors="replace"))
        if conn is None or not conn.connected:
            # This leader has not heard its hello (it was elected since): ask for one.
            self._send(identity, protocol.error(ErrorCode.NOT_HELLO, "say hello first: this leader does not know you"))
            return None
        return conn

    def _on_heartbeat(self, identity: bytes, msg: protocol.Heartbeat) -> None:
        if self._known_worker(identity) is not None:
            self._send(identity, protocol.encode({"t": "hb"}))

    def _on_done(self, identity: bytes, msg: protocol.Done) -> None:
        conn = self._known_worker(identity)
        if conn is None:
            return
        if not conn.draining:
            conn.credit += msg.credit
        ids = [o.id for o in msg.outcomes]

        def finished(effects: list[Effect] | None, error: str | None) -> None:
            if effects is not None:  # else no ack: the worker sends the outcomes again
                self._send(identity, protocol.encode({"t": "ack", "ids": ids}))
        self.proposer.add(C.finish(conn.id, msg.outcomes), finished)
        self._wants_dispatch = True

    def _on_credit(self, identity: bytes, msg: protocol.Credit) -> None:
        conn = self._known_worker(identity)
        if conn is not None and not conn.draining:
            conn.credit += msg.n
            self._wants_dispatch = True

    def _on_drain(self, identity: bytes, msg: protocol.Drain) -> None:
        conn = self._known_worker(identity)
        if conn is not None:
            conn.draining = True
            conn.credit = 0
            log.info("worker %s is draining", conn.id)

    def _on_bye(self, identity: bytes, msg: protocol.Bye) -> None:
        conn = self._known_worker(identity)
        if conn is None:
            return
        self.workers.remove(conn.id)
        farewell = protocol.encode({"t": "ack", "ids": [tid for tid, _ in msg.running], "bye": True})
        log.info("worker %s left, giving back %d running tasks", conn.id, len(msg.running))

        def given_back(effects: list[Effect] | None, error: str | None) -> None:
            if effects is not None:  # else no ack: the worker says bye again, or its leases expire
                self._send(identity, farewell)
            self._after_requeue(effects, error)
        # All its leases, not only those it lists: a `run` may have crossed its `bye` (its earlier
        # `done` reports are ahead of this in the log, so finished tasks stay finished).
        self.proposer.add(C.lost(conn.id, None, counts=False), given_back)

    # -- dispatch and effects ---------------------------------------------------------------

    def _before_flush(self) -> None:
        if self.leading and self._wants_dispatch:
            self._wants_dispatch = False
            self._offer_free_slots()

    def _offer_free_slots(self) -> None:
        """Offer every free slot; the state machine picks the tasks, so every replica agrees."""
        offered = self.workers.with_credit()
        if not offered:
            return
        offers = [(conn.id, conn.actors, conn.credit) for conn in offered]
        for conn in offered:
            conn.credit = 0  # reserved until the dispatch commits

        def leased(effects: list[Effect] | None, error: str | None) -> None:
            if effects is None and self.leading:
                self._wants_dispatch = True  # not proposed (a full queue?): the next flush tries again
            runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for effect in effects or []:
                if isinstance(effect, Leased):
                    runs[effect.worker].append(effect.task)
            for conn, (worker_id, _, slots) in zip(offered, offers, strict=True):
                granted = runs.get(worker_id, [])
                if self.workers.by_id.get(worker_id) is not conn or not conn.connected:
                    # The worker said hello again (or left) meanwhile: its new hello counted its slots
                    # afresh, so these leases were granted against slots it no longer offers. Or it
                    # became unreachable: its coming hello must not find leases it never heard of.
                    if granted:
                        self.proposer.add(C.lost(worker_id, [(t["id"], t["attempt"]) for t in granted],
                                                 counts=False), self._after_requeue)
                    continue
                if not conn.draining:
                    conn.credit += slots - len(granted)
                if granted:
                    conn.last_run = time.monotonic()
                    self._send_runs(conn, granted)
        self.proposer.add(C.dispatch(offers), leased)

    def _send_runs(self, conn: WorkerConn, tasks: list[dict[str, Any]]) -> None:
        frame = protocol.encode({"t": "run", "tasks": tasks})
        if len(frame) <= self.max_frame or len(tasks) == 1:
            batches = [(frame, tasks)]
        else:  # large arguments: one task per frame keeps each within what a worker accepts
            batches = [(protocol.encode({"t": "run", "tasks": [task]}), [task]) for task in tasks]
        unsent = [task for frame, batch in batches if not self._send(conn.identity, frame) for task in batch]
        if unsent:  # the worker's heartbeats would keep these leases alive although it never got them
            self.proposer.add(C.lost(conn.id, [(t["id"], t["attempt"]) for t in unsent], counts=False),
                              self._after_requeue)
            # Its connection is gone (killed, or reconnecting): offer it nothing more. Else the next
            # tasks go to it first (it looks idle), bounce and are requeued, one commit each, until
            # its free slots are used up (measured: 16 bounces for two killed workers). Its other
            # leases keep their timer; if it lives, its next message gets `not_hello` and its hello
            # makes it a worker again.
            conn.connected = False
            conn.credit = 0
            log.info("worker %s is unreachable: no more tasks until it says hello again", conn.id)

    def _after_requeue(self, effects: list[Effect] | None, error: str | None) -> None:
        if effects:
            self._wants_dispatch = True
            self.proposer.flush()

    def _arm_timer(self) -> None:
        """Wake exactly when the next delayed task, rate window or cron time is due, rather than
        at the next housekeeping pass (up to 100 ms late: measured, 1-5 % of a rate limit lost)."""
        with self.replication.reading() as machine:
            due = machine.next_due()
        if due is None or not self.leading:
            return
        when = self._loop.time() + max(0.0, due - time.time()) + 0.001  # never a hair early
        if self._timer is not None and not self._timer.cancelled() and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.leading:
            self._wake_for_time()
            self.proposer.flush()
            self._arm_timer()

    def _on_effects(self, effects: list[Effect]) -> None:
        self._arm_timer()
        for effect in effects:
            if isinstance(effect, Finished):
                for waiter in self.waiters.finished(effect.id):
                    self._reply(waiter.identity, "result", waiter.rid, **effect.summary)
                log.debug("task %s %s", effect.id, effect.summary["state"])
            elif isinstance(effect, CancelRunning):
                conn = self.workers.by_id.get(effect.worker)
                if conn is not None:
                    self._send(conn.identity, protocol.encode({"t": "cancel", "id": effect.id}))
            elif isinstance(effect, Retrying):
                log.info("task %s attempt %d failed (%s: %s); retry in %.1f s", effect.id, effect.attempt,
                         effect.error.type, effect.error.message, effect.delay)
            elif isinstance(effect, Requeued):
                log.info("task %s back in the queue (worker %s gone)", effect.id, effect.worker)
        if not self._work_check_scheduled:  # after this batch's callbacks have given slots back
            self._work_check_scheduled = True
            self._loop.call_soon(self._dispatch_if_work_waits)

    def _dispatch_if_work_waits(self) -> None:
        """Dispatch when a free slot could take a committed task. Work can become ready while a
        dispatch in flight holds every free slot: on 3 nodes a submit may commit after the dispatch
        that reserved them (its client saw the previous result as soon as it was applied), and a
        requeue or a finished task freeing a concurrency slot may too. Without this the task waits
        for the next unrelated event (measured: forever, for a client waiting on that task alone)."""
        self._work_check_scheduled = False
        if not self.leading or self._wants_dispatch:
            return
        now = time.time()
        # Read without the replication lock, as the dispatch path does: dict lookups and list(dict)
        # are atomic under the GIL, and waiting for a batch being applied would only delay this.
        machine = self.replication.machine
        ready = {actor for actor in list(machine.queued) if machine.has_ready([actor], now)}
        if not ready:
            return  # the common case: one look at the counters, whatever the number of workers
        # Else a scan of set checks (an actor no connected worker serves keeps `ready` non-empty).
        if any(conn.credit > 0 and conn.connected and not conn.draining and not ready.isdisjoint(conn.actors)
               for conn in self.workers.by_id.values()):
            self._wants_dispatch = True
            self._schedule_drain()

    # -- timers -----------------------------------------------------------------------------

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if not self.leading:
                continue
            try:
                self._expire_silent_workers()
                self._expire_waits()
                self._wake_for_time()
                self.proposer.flush()
            except Exception:  # a bug here must not stop the leader's timers for good
                log.exception("housekeeping failed; trying again next pass")

    def _expire_silent_workers(self) -> None:
        deadline = time.monotonic() - defaults.LEASE_TIMEOUT
        for conn in self.workers.silent_since(deadline):
            self.workers.remove(conn.id)
            log.warning("worker %s silent for %.0f s: its leases expire", conn.id, defaults.LEASE_TIMEOUT)
            self.proposer.add(C.lost(conn.id), self._after_requeue)

    def _expire_waits(self) -> None:
        for task_id, waiter in self.waiters.expired(time.monotonic()):
            self._reply(waiter.identity, "result", waiter.rid, id=task_id, state="pending")

    def _wake_for_time(self) -> None:
        """Delayed tasks and result expiry move only when a command applies: propose one when due."""
        now = time.time()
        with self.replication.reading() as machine:  # pysyncobj's thread may be changing it
            due, expiry = machine.next_due(), machine.next_expiry()
        if due is not None and due <= now:
            self._wants_dispatch = True
            if not self.workers.with_credit():
                self.proposer.add(C.tick(), _ignore)
        elif expiry is not None and expiry <= now and now - self._last_tick >= 1.0:
            self._last_tick = now
            self.proposer.add(C.tick(), _ignore)

    async def _register_self(self, stop: asyncio.Event) -> None:
        """Replicate this node's client URL so that followers can redirect to it."""
        me = self.replication.self_address
        while not stop.is_set():
            if self.replication.machine.nodes.get(me) == self.listen:
                await asyncio.sleep(1.0)
                continue
            if self.leading:
                self.proposer.add(C.register_node(me, self.listen), _ignore)  # its batch's effects are seen
            elif self.replication.leader_address() is not None:
                # Any node may propose this one command (pysyncobj forwards it to the leader); it
                # carries the machine's own time so a follower's clock cannot move time.
                payload = C.pack_batch(self.replication.term, self.replication.machine.now,
                                       [C.register_node(me, self.listen)])
                self.replication.propose(payload, lambda res, err: None)
            await asyncio.sleep(0.2)


def _ignore(effects: list[Effect] | None, error: str | None) -> None:
    """For commands whose outcome nobody waits for (registrations, ticks)."""
