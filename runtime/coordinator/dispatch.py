"""The leader's dispatch: free slots offered, leases committed, `run` sent; requeues and timers.

`Dispatcher.poke()` is the one way to ask for a dispatch: whoever learns that work or a slot may
have come free pokes, and `offer()` (at the end of every pass over the socket, and after timers)
fills every free slot. For actors without limits it grants the next committed tasks itself and
sends their `run` at once, proposing the leases as a GRANT (state/grants.py: the choice a dispatch
would make, checked again by the state machine); the other free slots go in one DISPATCH command,
in which the state machine chooses the tasks (priority, limits, fairness) at commit, so every
replica agrees on who runs what. This module decides which workers to offer, least loaded first
(`WorkerTable.offerable`, which `qrt.testing.VirtualCluster` shares).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from .. import anatomy, defaults, tracing
from ..protocol import Ack, CancelRun, Envelope, Run, RunTask
from ..replication import Replication
from ..state import commands as C
from ..state import grants, views
from ..state.machine import StateMachine
from ..state.model import Effect, Leased, Refused, Task
from .proposer import OnEffects, Proposer
from .roster import WorkerConn, WorkerTable
from .router import Router

log = logging.getLogger("qrt.coordinator")

# Result expiry needs a command to apply; without other traffic, propose a tick at most this often.
EXPIRY_TICK_INTERVAL = 1.0


class Dispatcher:
    def __init__(self, replication: Replication, proposer: Proposer, router: Router, workers: WorkerTable) -> None:
        self.replication = replication
        self.proposer = proposer
        self.router = router
        self.workers = workers
        self._leading = False
        self.pending = grants.Pending()  # grants proposed, not yet applied
        # Plain tasks whose submit is in flight, per actor, oldest first (arrived, answered)
        self._fresh_by_actor: dict[str, dict[str, Envelope]] = {}
        self._loop = asyncio.get_running_loop()
        self._poked = False
        self._pass_scheduled = False
        self._work_check_scheduled = False
        self._last_tick = 0.0
        # Wakes the leader when the next thing is due, at loop time `_timer_at`. (A Handle: uvloop's
        # call_at returns one without `when()` for a delay under half a millisecond.)
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0

    @property
    def leading(self) -> bool:
        return self._leading

    @leading.setter
    def leading(self, leading: bool) -> None:
        """Took or left office: the grants of an earlier office are answered to their own `Pending`."""
        self._leading = leading
        self.pending = grants.Pending()
        self._fresh_by_actor.clear()

    def poke(self) -> None:
        """Work or a free slot may be waiting: offer every free slot in this pass, or the next."""
        self._poked = True
        if not self._pass_scheduled:
            self._pass_scheduled = True
            self._loop.call_soon(self._pass)

    def _pass(self) -> None:
        self._pass_scheduled = False
        self.offer()
        self.proposer.flush()

    def offer(self) -> None:
        """If poked, propose a DISPATCH of every free slot (the caller flushes the proposer)."""
        if not (self._poked and self.leading):
            return
        self._poked = False
        offered = self.workers.offerable()
        if offered:
            offered = self._grant_ahead(offered)
        if not offered:
            return
        command = self.workers.reserve(offered)

        def leased(effects: list[Effect] | None, error: str | None) -> None:
            if effects is None and self.leading:
                self.poke()  # not proposed (a full queue?): offer again
            runs: dict[str, list[RunTask]] = defaultdict(list)
            for effect in effects or []:
                if isinstance(effect, Leased):
                    runs[effect.worker].append(effect.task)
            for conn, offer in zip(offered, command.offers, strict=True):
                self._deliver(conn, offer.slots, runs.get(conn.id, []))
        self.proposer.add(command, leased)

    def _grant_ahead(self, offered: list[WorkerConn]) -> list[WorkerConn]:
        """Grant free slots the next tasks of unlimited actors and send their `run` now, one task
        per worker per turn (least loaded first), as a dispatch spreads them; the workers with slots
        left, to offer in a dispatch."""
        term = self.proposer.office_term
        if term is None:
            return offered
        picked: dict[str, list[RunTask]] = {}
        with self.replication.reading() as machine:
            now = self.proposer.clock()
            turn = [conn for conn in offered if self._may_grant(machine, conn)]
            while turn:
                still = []
                for conn in turn:
                    task = grants.pick(machine, conn.actors, self.pending, now, self.proposer.unsettled_tasks) \
                        or self._fresh(machine, conn, now)
                    if task is None:
                        continue
                    self.pending.add(task)
                    conn.credit -= 1
                    picked.setdefault(conn.id, []).append(machine.run_task(task, granting=term))
                    if conn.credit:
                        still.append(conn)
                turn = still
        for conn in offered:
            runs = picked.get(conn.id)
            if runs:
                self._propose_grant(conn, runs)
        return [conn for conn in offered if conn.credit > 0]

    def arrived(self, envelopes: list[Envelope]) -> None:
        """A submit of `envelopes` was proposed: its plain tasks may be granted before it commits."""
        for env in envelopes:
            if grants.plain(env):
                self._fresh_by_actor.setdefault(env.actor, {}).setdefault(env.id, env)

    def answered(self, envelopes: list[Envelope]) -> None:
        """Their submit committed (or failed): the tasks are in the queues, or nowhere."""
        for env in envelopes:
            fresh = self._fresh_by_actor.get(env.actor)
            if fresh is not None and fresh.get(env.id) is env:
                del fresh[env.id]
                if not fresh:
                    del self._fresh_by_actor[env.actor]

    def _fresh(self, machine: StateMachine, conn: WorkerConn, now: float) -> Task | None:
        """The oldest plain task whose submit is in flight (state/grants.py) of the first of `conn`'s
        actors that has one and may be granted ahead, taken out of those waiting; None: none."""
        unsettled = self.proposer.unsettled_actors
        for actor in conn.actors:
            fresh = self._fresh_by_actor.get(actor)
            if not fresh or actor in unsettled or not machine.unlimited(actor):
                continue
            while fresh:
                env = fresh.pop(next(iter(fresh)))
                task = grants.fresh(machine, env, now)
                if task is not None and task.id not in self.pending.taken:
                    if not fresh:
                        del self._fresh_by_actor[actor]
                    return task
            del self._fresh_by_actor[actor]
        return None

    def _may_grant(self, machine: StateMachine, conn: WorkerConn) -> bool:
        """Whether every actor of `conn` with queued work may be granted ahead: unlimited, and no
        command in flight that could limit, pause or empty it, or lease its tasks by a dispatch.
        (Else the slot goes in a dispatch, which orders that actor's tasks with the others.)"""
        unsettled = self.proposer.unsettled_actors
        return all(machine.unlimited(actor) and actor not in unsettled
                   for actor in conn.actors if machine.queued_count.get(actor))

    def _propose_grant(self, conn: WorkerConn, runs: list[RunTask]) -> None:
        """Send `runs` and propose their leases; a run that could not be sent is not granted."""
        pending = self.pending
        unsent = set(self._send_runs(conn, runs, requeue=False))
        for run in runs:
            if run.id in unsent:
                conn.runs_sent.pop(run.id, None)
                pending.settle(run.id)
        granted = [run for run in runs if run.id not in unsent]
        if not granted:
            return
        for run in granted:
            conn.granting[run.id] = run.attempt

        def applied(effects: list[Effect] | None, error: str | None) -> None:
            for run in granted:
                pending.settle(run.id)
                conn.granting.pop(run.id, None)
            if effects is None:  # deposed, or the entry failed: the next leader may still commit it
                refused = [run.id for run in granted] if self.leading else []
            else:
                refused = [e.id for e in effects if isinstance(e, Refused)]
            self._void_granted(conn, granted, refused)
            if self.leading:
                self.poke()
        self.proposer.add(C.Grant(conn.id, [(run.id, run.attempt) for run in granted]), applied)
        conn.last_run = time.monotonic()

    def _void_granted(self, conn: WorkerConn, granted: list[RunTask], refused: list[str]) -> None:
        """Stop the runs of grants that did not stand (their worker reports them cancelled, which
        frees their slots), and give up those committed to a worker that said hello again since
        without listing them, as `_deliver` does."""
        for task_id in refused:
            conn.runs_sent.pop(task_id, None)
            self.router.send(conn.identity, CancelRun(task_id).encode())
        current = self.workers.by_id.get(conn.id)
        if current is not conn or not conn.connected:
            listed = current.listed if current is not None and current is not conn else set()
            voided = [(run.id, run.attempt) for run in granted if run.id not in refused and run.id not in listed]
            if voided:
                self.requeue(conn.id, voided)

    def _deliver(self, conn: WorkerConn, slots: int, granted: list[RunTask]) -> None:
        """Send what a committed dispatch granted `conn`, and give back the slots it did not fill."""
        conn.reserved = max(0, conn.reserved - slots)
        current = self.workers.by_id.get(conn.id)
        if current is not conn or not conn.connected:
            # The worker said hello again (or left) meanwhile: its new hello counted its slots
            # afresh, so these leases were granted against slots it no longer offers. Or it became
            # unreachable: its coming hello must not find leases it never heard of. Unless the new
            # hello found them committed and sent them itself (WorkerDesk._hello): those stay.
            taken_over = current.runs_sent if current is not None and current is not conn else {}
            voided = [(t.id, t.attempt) for t in granted if t.id not in taken_over]
            if voided:
                self.requeue(conn.id, voided)
            return
        self.workers.settle(conn, slots, len(granted), time.monotonic())
        if granted:
            self._send_runs(conn, granted)

    def _send_runs(self, conn: WorkerConn, tasks: list[RunTask], requeue: bool = True) -> list[str]:
        """Send `tasks`' runs to `conn`; the ids of those that could not be sent (requeued unless
        not `requeue`: a grant not yet proposed is simply not proposed)."""
        tracing.queue_spans(tasks, conn.id)
        acks = conn.take_acks()
        frame = Run(tasks, acks).encode()
        if anatomy.ON:
            for task in tasks:
                anatomy.mark("run_sent", task.id)
        if len(frame) <= self.router.max_frame or len(tasks) == 1:
            batches = [(frame, tasks)]
        else:  # large arguments: one task per frame keeps each within what a worker accepts
            batches = [(Run([task], acks if i == 0 else []).encode(), [task]) for i, task in enumerate(tasks)]
        unsent = [task for frame, batch in batches if not self.router.send(conn.identity, frame) for task in batch]
        now = time.monotonic()
        for task in tasks:
            conn.runs_sent[task.id] = now
        if unsent:
            if requeue:  # the worker's heartbeats would keep these leases alive although it never got them
                self.requeue(conn.id, [(t.id, t.attempt) for t in unsent])
            # Its connection is gone (killed, or reconnecting): offer it nothing more. Else the next
            # tasks go to it first (it looks idle), bounce and are requeued, one commit each, until
            # its free slots are used up (measured: 16 bounces for two killed workers). Its other
            # leases keep their timer; if it lives, its next message gets `not_hello` and its hello
            # makes it a worker again.
            conn.connected = False
            conn.credit = 0
            log.info("worker %s is unreachable: no more tasks until it says hello again", conn.id)
        return [task.id for task in unsent]

    def acknowledge(self, conn: WorkerConn, ids: list[str]) -> None:
        """Say `conn`'s outcomes `ids` are committed: in its next `run`, if one leaves within
        ACK_HOLD and it reads acks there, else in an `ack` of their own. One frame less per task:
        a send is the leader's dearest step (it wakes ZeroMQ's I/O thread, on a core the leader
        needs), and with one slot the `run` of the next task follows within about a commit."""
        if not conn.acks_in_run or not ids:  # an empty `done` is answered at once, as the protocol says
            self.router.send(conn.identity, Ack(conn.take_acks() + ids).encode())
            return
        conn.acks_due += ids
        if conn.ack_flush is None:
            conn.ack_flush = self._loop.call_later(defaults.ACK_HOLD, self._flush_acks, conn)

    def stop_holding_acks(self, conn: WorkerConn) -> None:
        """`conn` said bye: it reads nothing after the answer, so every ack must go before that,
        those held now and those of outcomes still committing."""
        conn.acks_in_run = False
        self._flush_acks(conn)

    def _flush_acks(self, conn: WorkerConn) -> None:
        acks = conn.take_acks()
        if acks:
            self.router.send(conn.identity, Ack(acks).encode())

    def resend(self, conn: WorkerConn, tasks: list[RunTask]) -> None:
        """Send again the `run` of leases a worker says it lacks (the first was lost on its way)."""
        if tasks:
            log.warning("worker %s lacks %d of its leases: their runs are sent again", conn.id, len(tasks))
            self._send_runs(conn, tasks)

    def requeue(self, worker: str, leases: list[tuple[str, int]] | None, counts: bool = False,
                then: OnEffects | None = None) -> None:
        """Void `worker`'s `leases` (None: all), so their tasks go back to the queue; then dispatch."""
        def requeued(effects: list[Effect] | None, error: str | None) -> None:
            if then is not None:
                then(effects, error)
            if effects:
                self.poke()
        self.proposer.add(C.Lost(worker, leases, counts), requeued)

    # -- after each commit, and on timers ---------------------------------------------------

    def committed(self) -> None:
        """A batch committed: re-arm the timer, and look for work a free slot could take."""
        self._arm_timer()
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
        if not self.leading or self._poked:
            return
        # Read without the replication lock, as the dispatch path does: dict lookups and list(dict)
        # are atomic under the GIL, and waiting for a batch being applied would only delay this.
        ready = views.ready_actors(self.replication.machine, self.proposer.clock())
        if not ready:
            return  # the common case: one look at the counters, whatever the number of workers
        # Else a scan of set checks (an actor no connected worker serves keeps `ready` non-empty).
        if any(not ready.isdisjoint(conn.actors) for conn in self.workers.offerable()):
            self.poke()

    def _arm_timer(self) -> None:
        """Wake exactly when the next delayed task, rate window or cron time is due, rather than
        at the next housekeeping pass (up to 100 ms late: measured, 1-5 % of a rate limit lost)."""
        with self.replication.reading() as machine:
            due = views.next_due(machine)
        if due is None or not self.leading:
            return
        when = self._loop.time() + max(0.0, due - self.proposer.clock()) + 0.001  # never a hair early
        if self._timer is not None and not self._timer.cancelled() and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(when, self._on_timer), when

    def _on_timer(self) -> None:
        self._timer = None
        if self.leading:
            self.wake_for_time()
            self.offer()
            self.proposer.flush()
            self._arm_timer()

    def wake_for_time(self) -> None:
        """Delayed tasks and result expiry move only when a command applies: propose one when due."""
        now = self.proposer.clock()
        with self.replication.reading() as machine:  # pysyncobj's thread may be changing it
            due, expiry = views.next_due(machine), views.next_expiry(machine)
        if due is not None and due <= now:
            self.poke()
            if not self.workers.offerable():
                self.proposer.add(C.Tick(), None)
        elif expiry is not None and expiry <= now and now - self._last_tick >= EXPIRY_TICK_INTERVAL:
            self._last_tick = now
            self.proposer.add(C.Tick(), None)
