"""The coordinator node: wires the router, the proposer, the dispatcher and the two desks.

A frame is decoded and checked (`protocol`), then a follower answers `redirect`, and the leader
hands it to the client desk or the worker desk, which turn it into commands for the Proposer.
Each pass over the socket ends with one `dispatcher.offer()` and one `proposer.flush()`: all the
pass gathered goes to Raft as one entry. Committed effects come back through the Proposer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .. import curve, defaults, logs
from .. import protocol as P
from ..alerts.rules import AlertConfig
from ..clock import Clock
from ..errors import ProtocolError
from ..history.writer import Recording
from ..replication import Replication
from ..state import commands as C
from ..state.model import CancelRunning, Effect, Requeued, Retrying
from .alerting import ALERT_EVERY, AlertDesk
from .clients import ClientDesk
from .dispatch import Dispatcher
from .proposer import Proposer
from .reader import HistoryDesk
from .roster import WorkerTable
from .router import Router
from .workers import WorkerDesk

log = logging.getLogger("qrt.coordinator")

# How often the leader checks lease timers, due delayed tasks and expired waits.
HOUSEKEEPING_INTERVAL = 0.1
# A housekeeping pass this late means the process was paused or its loop blocked (see _housekeeping).
STALL = 1.0
# How often a node checks that its client URL is replicated (so that followers can redirect to it).
REGISTER_INTERVAL = 0.2



class Coordinator:
    def __init__(self, listen: str, replication: Replication, max_frame: int = defaults.MAX_FRAME_BYTES,
                 clock: Clock | None = None, keys: curve.ServerKeys | None = None,
                 history: Recording | None = None, alerts: AlertConfig | None = None) -> None:
        self.listen = listen
        self.replication = replication
        self.max_frame = max_frame
        self.keys = keys
        self.workers = WorkerTable()
        self.router = Router(listen, max_frame, self._on_frame, self._after_pass, keys)
        self.proposer = Proposer(replication, asyncio.get_running_loop(), self._on_batch, clock)
        self.dispatcher = Dispatcher(replication, self.proposer, self.router, self.workers)
        self.clients = ClientDesk(listen, replication, self.proposer, self.router, self.dispatcher, self.workers)
        self.reader = HistoryDesk(self.router, replication, self.proposer, history)
        self.alerts = AlertDesk(alerts or AlertConfig(), replication, self.proposer, self.workers, history)
        self.clients.alert_rules = self.alerts.view
        self._alerted_at = 0.0
        self.worker_desk = WorkerDesk(replication, self.proposer, self.router, self.workers, self.dispatcher,
                                      ids_are_routing_ids=keys is None)
        self.leader_changes = 0  # times this node took or left office (metrics.py)
        self._checkpoint_at = time.monotonic()  # the last checkpoint proposed, and the batch it followed
        self._checkpoint_batch = 0

    @property
    def leading(self) -> bool:
        return self.dispatcher.leading

    # -- life cycle -------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event, raft_changed: asyncio.Event) -> None:
        """Serve until `stop` is set; `raft_changed` is set whenever this node's Raft role may have changed."""
        self.on_raft_state_changed()  # it may have won an election before we listened
        self.router.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow_raft(stop, raft_changed))
                tg.create_task(self._housekeeping(stop))
                tg.create_task(self._register_self(stop))
                await stop.wait()
        finally:
            self.router.close()

    async def _follow_raft(self, stop: asyncio.Event, raft_changed: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(raft_changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            for fut in (waiter, stopper):
                fut.cancel()
            raft_changed.clear()
            try:
                self.on_raft_state_changed()
            except Exception:  # a bug here must not stop the node: the next change tries again
                log.exception("following a Raft role change failed")

    def on_raft_state_changed(self) -> None:
        leading = self.replication.is_leader()
        # Deposed and elected again before this loop noticed: a new office all the same (else its
        # batches would carry the old term, and every replica would refuse its dispatches).
        reelected = leading and self.leading and self.proposer.office_term != self.replication.term
        if leading == self.leading and not reelected:
            return
        self.dispatcher.leading = leading
        self.leader_changes += 1
        self.workers.clear()
        if leading:
            # Every lease timer restarts now: workers get a full grace period to say hello again.
            with self.replication.reading() as machine:
                for worker_id in list(machine.leases):
                    self.workers.ghost(worker_id)
            self.proposer.take_office()
            self.alerts.office_taken()
            # A first batch in this term at once: from it on, every replica refuses the dispatches
            # a deposed leader may still propose (state machine, `_dispatch`).
            self.proposer.add(C.Tick(), None)
            self.dispatcher.poke()
            log.info("this node (%s) now leads, term %d", self.listen, self.replication.term)
        else:
            self.proposer.fail_all("not_leader")
            self.clients.redirect_waiters(self._redirect)
            log.info("this node (%s) no longer leads", self.listen)

    # -- frames -----------------------------------------------------------------------------

    def _on_frame(self, identity: bytes, frame: bytes, key: str | None = None) -> None:
        try:
            message = P.parse_request(P.decode(frame, self.max_frame))
            if self.keys is not None:
                self._check_role(message, key)
        except ProtocolError as exc:
            self.router.send(identity, P.Error.of(exc).encode())
            return
        except Exception:  # a bug in validation: answer, and keep reading the socket
            log.exception("reading a frame failed")
            self.router.send(identity, P.Error(P.ErrorCode.INTERNAL, "the coordinator failed to read this frame; "
                                               "report it").encode())
            return
        rid = message.rid if isinstance(message, P.Request) else None
        local = isinstance(message, P.HISTORY_REQUESTS)  # any node answers these from its own copy
        if not self.leading and not local and not (isinstance(message, P.Status) and message.local):
            self.router.send(identity, self._redirect(rid))
            return
        try:
            if local:
                self.reader.handle(identity, message)  # type: ignore[arg-type]
            elif isinstance(message, P.Request):
                self.clients.handle(identity, message, len(frame))  # type: ignore[arg-type]
            else:
                self.worker_desk.handle(identity, message)
        except Exception:
            log.exception("handling %s failed", message.TYPE)
            self.router.send(identity, P.Error(P.ErrorCode.INTERNAL, f"the coordinator failed to handle "
                                               f"{message.TYPE!r}", rid).encode())

    def _check_role(self, message: P.ClientRequest | P.WorkerMessage, key: str | None) -> None:
        """With CURVE: a request needs a client key, a worker message a worker key, and a worker's
        id ends with its key's fingerprint (so no other key can say hello in its name, on any
        leader; and no one can take its connection's routing id, which the router chose).
        ProtocolError `forbidden` otherwise."""
        assert self.keys is not None
        roles = self.keys.roles_of(key)
        if isinstance(message, P.Request):
            if curve.CLIENT not in roles:
                raise ProtocolError(P.ErrorCode.FORBIDDEN, f"{message.TYPE!r} needs a client key: this key is not "
                                    "in the coordinator's --curve-clients", message.rid)
            return
        if curve.WORKER not in roles:
            raise ProtocolError(P.ErrorCode.FORBIDDEN, f"{message.TYPE!r} needs a worker key: this key is not in "
                                "the coordinator's --curve-workers")
        if isinstance(message, P.Hello):
            assert key is not None
            suffix = f"@{curve.fingerprint(key)}"
            if not message.worker_id.endswith(suffix):
                log.warning("hello as worker %s refused: its id does not end with its key's fingerprint %s",
                            message.worker_id, suffix)
                raise ProtocolError(P.ErrorCode.FORBIDDEN, f"under CURVE a worker's id ends with '@' and its key's "
                                    f"fingerprint: {suffix!r} for this key (docs/protocol.md §1.1)")

    def _after_pass(self) -> None:
        self.dispatcher.offer()
        self.proposer.flush()

    def _redirect(self, rid: int | None) -> bytes:
        leader = self.replication.reachable_leader()
        url = self.replication.machine.nodes.get(leader) if leader else None
        if url is None or url == self.listen:
            return P.Error(P.ErrorCode.NO_LEADER, "no leader is elected right now; retry shortly", rid).encode()
        return P.Redirect(url, rid).encode()

    def _on_batch(self, effects: list[Effect]) -> None:
        """Every effect of a batch this node committed: answer waiters, stop cancelled tasks."""
        self.clients.on_effects(effects)
        for effect in effects:
            if isinstance(effect, CancelRunning):
                self.worker_desk.cancel_running(effect.worker, effect.id)
            elif isinstance(effect, Retrying):
                log.info("task %s (%s) attempt %d failed (%s: %s); retry in %.1f s", effect.id, effect.actor,
                         effect.attempt, effect.error.type, effect.error.message, effect.delay,
                         extra=logs.about(effect.id, effect.actor, effect.attempt))
            elif isinstance(effect, Requeued):
                log.info("task %s (%s) attempt %d back in the queue (worker %s gone)", effect.id, effect.actor,
                         effect.attempt, effect.worker,
                         extra=logs.about(effect.id, effect.actor, effect.attempt, effect.worker))
        self.dispatcher.committed()

    # -- timers -----------------------------------------------------------------------------

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            now = time.monotonic()
            stalled, last = now - last > STALL, now
            if not self.leading:
                continue
            try:
                if stalled:
                    # This process was paused (GC, VM steal, SIGSTOP) or its loop blocked: the
                    # workers' heartbeats wait unread in the socket. Silence measured across the
                    # stall is ours, not theirs: they get a full lease timeout again.
                    self.workers.seen_all()
                self.worker_desk.adopt_orphans()
                self.worker_desk.expire_silent()
                self.worker_desk.expire_overdue()
                self._checkpoint(now)
                if now - self._alerted_at >= ALERT_EVERY:
                    self._alerted_at = now
                    self.alerts.tick()
                if now - self.proposer.proposed_at >= defaults.LEADER_TIME_EVERY:
                    self.proposer.add(C.Tick(), None)  # followers see leader time advance (Proposer._follow)
                self.clients.expire_waits()
                self.dispatcher.wake_for_time()
                self._after_pass()
            except Exception:  # a bug here must not stop the leader's timers for good
                log.exception("housekeeping failed; trying again next pass")

    def _checkpoint(self, now: float) -> None:
        """Now and then, every replica digests its state at one point of the log and compares the
        leader's digest of the previous one (checkpoints.py); not while nothing changes."""
        if now - self._checkpoint_at < defaults.CHECKPOINT_INTERVAL \
                or self.replication.machine.applied <= self._checkpoint_batch + 1:
            return
        self._checkpoint_at, self._checkpoint_batch = now, self.replication.machine.applied
        self.proposer.add(C.Checkpoint(*self.replication.checkpoints.latest()), None)

    async def _register_self(self, stop: asyncio.Event) -> None:
        """Replicate this node's client URL so that followers can redirect to it."""
        me = self.replication.self_address
        while not stop.is_set():
            if self.replication.machine.nodes.get(me) == self.listen:
                await asyncio.sleep(1.0)
                continue
            if self.leading:
                self.proposer.add(C.RegisterNode(me, self.listen), None)
            elif self.replication.reachable_leader() is not None:
                # Any node may propose this one command (pysyncobj forwards it to the leader); it
                # carries the machine's own time so a follower's clock cannot move time.
                payload = C.pack_batch(self.replication.term, self.replication.machine.now,
                                       [C.RegisterNode(me, self.listen)], [0])
                self.replication.propose(payload, lambda applied, error: None)
            await asyncio.sleep(REGISTER_INTERVAL)
