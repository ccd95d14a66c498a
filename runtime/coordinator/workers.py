"""Workers' messages, hello to bye, as the leader handles them (its view of them: roster.py)."""

from __future__ import annotations

import logging
import time

from .. import anatomy, defaults
from .. import protocol as P
from ..replication import Replication
from ..state import commands as C
from ..state import views
from ..state.model import Effect
from .dispatch import Dispatcher
from .proposer import Proposer
from .roster import WorkerConn, WorkerTable
from .router import Router

log = logging.getLogger("qrt.coordinator")

# A lease its worker does not list in a heartbeat is sent again once its `run` has had this long
# to arrive (a heartbeat may have crossed it): twice a heartbeat interval.
RESEND_RUN_AFTER = 2 * defaults.HEARTBEAT_INTERVAL

class WorkerDesk:
    """The worker messages: hello, heartbeat, done, credit, drain, bye; and silent workers' leases."""

    def __init__(self, replication: Replication, proposer: Proposer, router: Router, workers: WorkerTable,
                 dispatcher: Dispatcher, ids_are_routing_ids: bool = True) -> None:
        # Without CURVE a worker's id is its routing id (so a reconnect keeps it); with CURVE the
        # router names connections, and the id carries the key's fingerprint instead (server.py).
        self.ids_are_routing_ids = ids_are_routing_ids
        self.replication = replication
        self.proposer = proposer
        self.router = router
        self.workers = workers
        self.dispatcher = dispatcher

    def handle(self, identity: bytes, msg: P.WorkerMessage) -> None:
        if isinstance(msg, P.Hello):
            self._hello(identity, msg)
            return
        conn = self._known(identity)
        if conn is None:
            return
        if isinstance(msg, P.Heartbeat):
            self._send(conn.identity, P.Hb(msg.seq))
            if msg.running is not None:
                conn.lists_running = True
                conn.listed = {tid for tid, _ in msg.running}
                self._reconcile(conn, msg.running)
                if msg.free is not None:
                    self._recount(conn, msg.running, msg.free)
        elif isinstance(msg, P.Done):
            self._done(conn, msg)
        elif isinstance(msg, P.Credit):
            conn.give_credit(msg.n)
            self.dispatcher.poke()
        elif isinstance(msg, P.Drain):
            conn.draining = True
            conn.credit = 0
            log.info("worker %s is draining", conn.id)
        elif isinstance(msg, P.Bye):
            self._bye(conn, msg)

    def _send(self, identity: bytes, message: P.Message) -> None:
        self.router.send(identity, message.encode())

    def _known(self, identity: bytes) -> WorkerConn | None:
        conn = self.workers.on(identity)
        if conn is None or not conn.connected:
            # This leader has not heard its hello (it was elected since): ask for one.
            self._send(identity, P.Error(P.ErrorCode.NOT_HELLO, "say hello first: this leader does not know you"))
            return None
        return conn

    def _hello(self, identity: bytes, msg: P.Hello) -> None:
        if self.ids_are_routing_ids and identity != msg.worker_id.encode():
            self._send(identity, P.Error(P.ErrorCode.BAD_FIELD, "field 'worker_id' must equal the socket's "
                                         "ZeroMQ routing id", field="worker_id"))
            return
        previous = self.workers.by_id.get(msg.worker_id)
        # A lease granted since this worker's previous hello may be a `run` still on its way to it:
        # the worker cannot list it yet, so only older unlisted leases count as vanished.
        since = previous.hello_batch if previous is not None and previous.connected else None
        conn = self.workers.hello(msg.worker_id, identity, [a.name for a in msg.actors], msg.slots, msg.concurrency,
                                  msg.acks_in_run)
        conn.options = {a.name: a.options for a in msg.actors}
        conn.listed = {tid for tid, _ in msg.running}
        self._say_option_changes(msg)
        # A start in the future (a wrong clock, a hostile worker) would pin its options for good.
        self.proposer.add(C.RegisterActors(conn.options, min(msg.started, self.proposer.clock())), None)
        still_running = set(msg.running)
        with self.replication.reading() as machine:
            conn.hello_batch = machine.applied
            unlisted = [(tid, attempt) for tid, attempt in views.leases_of(machine, msg.worker_id)
                        if (tid, attempt) not in still_running]
            vanished = [(tid, attempt) for tid, attempt in unlisted
                        if since is None or machine.tasks[tid].leased_in <= since]
            # Granted since its previous hello: their `run` is on its way, or was lost with the
            # socket the worker just replaced. Sent again after the welcome (a duplicate is ignored).
            on_their_way = views.runs_of(machine, msg.worker_id, [tid for tid, _ in unlisted
                                                                  if (tid, _) not in vanished])
        # The hello counted their slots as free: they are not, once their `run` arrives.
        conn.credit = max(0, conn.credit - len(on_their_way))
        if previous is not None and previous.connected:  # runs still on their way may be resent
            gone = {tid for tid, _ in vanished}
            conn.runs_sent = {tid: at for tid, at in previous.runs_sent.items() if tid not in gone}
        if vanished:  # granted by an earlier leader, but the worker never got them (or fenced itself)
            giving_up = {tid for tid, _ in vanished}
            conn.expiring |= giving_up  # until the requeue commits: they take none of the slots its outcomes free

            def given_up(effects: list[Effect] | None, error: str | None) -> None:
                conn.expiring -= giving_up
            self.dispatcher.requeue(msg.worker_id, vanished, then=given_up)
        self.dispatcher.poke()
        log.info("worker %s joined: %d free slots, actors %s", msg.worker_id, msg.slots,
                 ", ".join(a.name for a in msg.actors))
        self._send(identity, P.Welcome(msg.worker_id, defaults.HEARTBEAT_INTERVAL, defaults.LEASE_TIMEOUT,
                                        self.proposer.clock()))
        self.dispatcher.resend(conn, on_their_way)

    def _say_option_changes(self, msg: P.Hello) -> None:
        """Never a silent change of limits: the options of the worker started last are in force
        (state machine, `_register_actors`); say when a hello changes a limit, or is outvoted."""
        machine = self.replication.machine
        for spec in msg.actors:
            current = machine.actors.get(spec.name)
            if current is None or current == spec.options:
                continue
            if msg.started < machine.registered_by.get(spec.name, 0.0):
                log.warning("worker %s declares other options for %s than a worker started after it: theirs stay "
                            "in force (qrt status shows the conflict)", msg.worker_id, spec.name)
                continue
            for limit in ("rate_limits", "concurrency"):
                if current.get(limit) != spec.options.get(limit):
                    log.warning("worker %s (the latest started) changes %s of %s from %s to %s", msg.worker_id,
                                limit, spec.name, current.get(limit), spec.options.get(limit))

    def _reconcile(self, conn: WorkerConn, listed: list[tuple[str, int]]) -> None:
        """Every lease is delivered, and nothing runs without one (DESIGN.md, "Lease expiry"): what
        the leader leases to this worker and the worker lacks is sent again (a `run` lost in a
        reconnect used to keep its lease for as long as the worker heartbeat), and what the worker
        runs without a lease, or was asked to cancel, is cancelled (again: a `cancel` may have been
        lost; the worker ignores ids it does not run, and a cancel of a task it is cancelling)."""
        now = time.monotonic()
        with self.replication.reading() as machine:
            held = dict(views.leases_of(machine, conn.id))
            has = dict(listed)
            granting = conn.granting  # sent ahead of their commit: held, and never sent again
            held.update(granting)
            # Only runs sent on this connection: a lease granted before (by an earlier leader, or
            # before a hello that did not list it) is being voided, and resending it would run the
            # task twice.
            lacking = [tid for tid, attempt in held.items() if has.get(tid, -1) < attempt and tid not in granting
                       and tid in conn.runs_sent and now - conn.runs_sent[tid] > RESEND_RUN_AFTER]
            runs = views.runs_of(machine, conn.id, lacking)
            # A cancel asked while it ran: its `cancel` may have been lost (a reconnect, a new leader).
            cancelling = [tid for tid, attempt in listed if held.get(tid, -1) == attempt
                          and machine.tasks[tid].cancel_requested]
        for tid in [t for t in conn.runs_sent if t not in held]:
            del conn.runs_sent[tid]
        self.dispatcher.resend(conn, runs)
        acked_soon = set(conn.acks_due)  # their outcomes committed: the worker holds them until its ack
        for tid, attempt in listed:
            if (held.get(tid, -1) < attempt and tid not in acked_soon) or tid in cancelling:
                self._send(conn.identity, P.CancelRun(tid))

    def _recount(self, conn: WorkerConn, listed: list[tuple[str, int]], free: int) -> None:
        """Believe the worker's count of its free slots when nothing is on its way either way: no
        dispatch to it uncommitted, no `run` it has not read (it lists exactly its leases), no
        outcome uncommitted. A miscount otherwise lasts for good: a `done` or `credit` lost with a
        dropped connection, or (before `_done` left them out) leases a hello gave up taken for busy
        slots, left two idle workers with no free slot and 336 tasks queued (CI)."""
        if conn.draining or conn.reserved or conn.reporting or conn.expiring or conn.granting:
            return
        with self.replication.reading() as machine:
            leases = views.leases_of(machine, conn.id)
        if sorted(leases) != sorted(listed):
            return
        counted = max(0, min(free, conn.concurrency - len(leases)))
        if counted != conn.credit:
            log.warning("worker %s has %d free slots, the leader counted %d: corrected (a credit was lost on "
                        "its way, or counted twice)", conn.id, counted, conn.credit)
            conn.credit = counted
            self.dispatcher.poke()

    def _done(self, conn: WorkerConn, msg: P.Done) -> None:
        if anatomy.ON:
            for outcome in msg.outcomes:
                anatomy.mark("done_received", outcome.id)
        conn.reporting.update(o.id for o in msg.outcomes)
        # Held: its committed leases, less those whose outcomes are reported (here or in a `done`
        # not committed yet): the slots they free are in this `credit` or were in an earlier one;
        # and less those being given up (it never ran them).
        held = [tid for tid in list(self.replication.machine.leases.get(conn.id, ()))
                if tid not in conn.reporting and tid not in conn.expiring]
        ahead = [tid for tid in conn.granting if tid not in conn.reporting and tid not in held]  # not yet committed
        conn.give_credit(msg.credit, len(held) + len(ahead))
        for outcome in msg.outcomes:
            conn.runs_sent.pop(outcome.id, None)
        reported = [o.id for o in msg.outcomes]

        def finished(effects: list[Effect] | None, error: str | None) -> None:
            conn.reporting.difference_update(reported)
            if effects is not None:  # else no ack: the worker sends the outcomes again
                self.dispatcher.acknowledge(conn, reported)
        self.proposer.add(C.Finish(conn.id, msg.outcomes), finished)
        self.dispatcher.poke()

    def _bye(self, conn: WorkerConn, msg: P.Bye) -> None:
        self.dispatcher.stop_holding_acks(conn)
        self.workers.remove(conn.id)
        self.workers.departing.add(conn.id)  # not an orphan while its leases are given back
        farewell = P.Ack([tid for tid, _ in msg.running], bye=True).encode()
        identity = conn.identity
        log.info("worker %s left, giving back %d running tasks", conn.id, len(msg.running))

        def given_back(effects: list[Effect] | None, error: str | None) -> None:
            self.workers.departing.discard(conn.id)  # what is left (if this failed) gets a timer
            if effects is not None:  # else no ack: the worker says bye again, or its leases expire
                self.router.send(identity, farewell)
        # All its leases, not only those it lists: a `run` may have crossed its `bye` (its earlier
        # `done` reports are ahead of this in the log, so finished tasks stay finished).
        self.dispatcher.requeue(conn.id, None, then=given_back)

    def cancel_running(self, worker: str, task_id: str) -> None:
        """Tell a worker to stop a task that was cancelled while it ran."""
        conn = self.workers.by_id.get(worker)
        if conn is not None:
            self._send(conn.identity, P.CancelRun(task_id))

    def adopt_orphans(self) -> None:
        """Give every lease holder this leader does not know a timer (housekeeping, each pass)."""
        holders = list(self.replication.machine.leases)  # atomic under the GIL: no lock needed
        for worker_id in self.workers.adopt(holders):
            log.warning("worker %s holds leases this leader did not know of: they expire unless it says hello",
                        worker_id)

    def expire_overdue(self) -> None:
        """The leases of a worker whose heartbeats do not list what it runs (the protocol lets them
        leave `running` out) expire at their timeout plus LEASE_TIMEOUT: a `run` lost on its way to
        such a worker would otherwise keep its task `running` for as long as the worker lives."""
        now = self.proposer.clock()
        for conn in self.workers.by_id.values():
            if conn.lists_running or not conn.connected:
                continue
            with self.replication.reading() as machine:
                overdue = [(tid, attempt) for tid, attempt in
                           views.overdue_leases(machine, conn.id, now, defaults.LEASE_TIMEOUT)
                           if tid not in conn.expiring and tid not in conn.listed]
                held = len(machine.leases.get(conn.id, ()))
            if not overdue:
                continue
            log.warning("worker %s never reported %d tasks past their timeout: their leases expire", conn.id,
                        len(overdue))
            for tid, _ in overdue:
                self._send(conn.identity, P.CancelRun(tid))  # in case it runs them after all
            conn.give_credit(len(overdue), held - len(overdue))
            ids = {tid for tid, _ in overdue}
            conn.expiring |= ids

            def expired(effects: list[Effect] | None, error: str | None, conn: WorkerConn = conn,
                        ids: set[str] = ids) -> None:
                conn.expiring -= ids
            self.dispatcher.requeue(conn.id, overdue, counts=True, then=expired)

    def expire_silent(self) -> None:
        """A worker silent for the lease timeout is gone: its leases expire, counting a loss."""
        for conn in self.workers.silent_since(time.monotonic() - defaults.LEASE_TIMEOUT):
            self.workers.remove(conn.id)
            log.warning("worker %s silent for %.0f s: its leases expire", conn.id, defaults.LEASE_TIMEOUT)
            self.dispatcher.requeue(conn.id, None, counts=True)
