"""The leader's in-memory view of connected workers: free slots, lease timers, draining.

None of this is replicated (DESIGN.md, "Lease expiry is the leader's, in memory"): a new leader
rebuilds it from the leases in the state machine and from workers saying hello again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..state.commands import Dispatch, Offer

# Before any hello: leases granted after this many batches may still be on their way to it.
NEVER = -1


@dataclass(slots=True)
class WorkerConn:
    id: str
    identity: bytes  # ZeroMQ routing id
    actors: list[str] = field(default_factory=list)
    credit: int = 0  # free slots the worker offered and the leader has not filled yet
    concurrency: int = 0
    reserved: int = 0  # slots offered in a dispatch not yet committed (credit taken, not yet settled)
    last_seen: float = field(default_factory=time.monotonic)
    draining: bool = False
    connected: bool = True  # False: known only from its leases (after an election), or a `run` to it failed
    # The batch (StateMachine.applied) at its hello: a lease granted later may be a `run` still on its way.
    hello_batch: int = NEVER
    last_run: float = 0.0  # when it was last sent tasks (monotonic): among equals, the longest idle goes first
    runs_sent: dict[str, float] = field(default_factory=dict)  # task id -> when its `run` last left (monotonic)
    # Whether its heartbeats list what it runs (`running`, optional in the protocol): the leader
    # reconciles with those; the others' leases get a deadline instead (WorkerDesk.expire_overdue).
    lists_running: bool = False
    listed: set[str] = field(default_factory=set)  # what its latest hello or heartbeat said it holds
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # actor -> the options it declares
    # Leases being given up, not yet committed: overdue ones expiring, or those its hello did not
    # list. They hold no slot of the worker's (it does not run them).
    expiring: set[str] = field(default_factory=set)
    reporting: set[str] = field(default_factory=set)  # tasks whose outcome it sent, not yet committed
    # Leases granted to it ahead of their commit (their `run` sent), not yet applied: id -> attempt.
    granting: dict[str, int] = field(default_factory=dict)
    acks_in_run: bool = False  # it reads acks in `run` (its hello said so)
    acks_due: list[str] = field(default_factory=list)  # outcomes committed, their ack held for its next `run`
    ack_flush: asyncio.TimerHandle | None = None  # sends `acks_due` alone when no `run` has taken them

    def take_acks(self) -> list[str]:
        """The acks held for it, which the caller sends; none held after."""
        if self.ack_flush is not None:
            self.ack_flush.cancel()
            self.ack_flush = None
        acks, self.acks_due = self.acks_due, []
        return acks

    def give_credit(self, n: int, held: int | None = None) -> None:
        """`n` slots came free. With `held`, the leases committed to it that stay held (those a
        `done` reports excluded), never more than its concurrency less those: a `run` from a
        deposed leader, started and cancelled, would otherwise count its slot twice. (A bare
        `credit` cannot be clamped so: the outcomes of the slots it frees may still be on their way.)"""
        if not self.draining:
            self.credit = max(0, self.credit + n if held is None else min(self.credit + n, self.concurrency - held))


class WorkerTable:
    def __init__(self) -> None:
        self.by_id: dict[str, WorkerConn] = {}
        # Routing id -> the worker that said hello on that connection. Without CURVE a worker's
        # routing id is its id; with CURVE the router names each connection (an id no peer can
        # claim), and a reconnected worker is unknown until it says hello again.
        self.by_identity: dict[bytes, str] = {}
        self.departing: set[str] = set()  # said bye; their leases are being given back

    def hello(self, worker_id: str, identity: bytes, actors: list[str], slots: int, concurrency: int,
              acks_in_run: bool = False) -> WorkerConn:
        previous = self.by_id.get(worker_id)
        if previous is not None and self.by_identity.get(previous.identity) == worker_id:
            del self.by_identity[previous.identity]  # its old connection speaks for it no more
        conn = WorkerConn(worker_id, identity, sorted(actors), slots, concurrency, acks_in_run=acks_in_run)
        self.by_id[worker_id] = conn
        self.by_identity[identity] = worker_id
        return conn

    def on(self, identity: bytes) -> WorkerConn | None:
        """The worker that said hello on the connection `identity`, marked as heard from now."""
        worker_id = self.by_identity.get(identity)
        return self.seen(worker_id) if worker_id is not None else None

    def ghost(self, worker_id: str) -> None:
        """A worker that holds leases but has not said hello to this leader: its timer starts now."""
        if worker_id not in self.by_id:
            self.by_id[worker_id] = WorkerConn(worker_id, worker_id.encode(), connected=False)

    def adopt(self, lease_holders: list[str]) -> list[str]:
        """Every lease has a worker here whose silence expires it: the holders this leader did not
        know get a timer now (their leases may have been committed after this leader's election, or
        after their worker left). Returns those."""
        orphans = [w for w in lease_holders if w not in self.by_id and w not in self.departing]
        for worker_id in orphans:
            self.ghost(worker_id)
        return orphans

    def seen(self, worker_id: str) -> WorkerConn | None:
        conn = self.by_id.get(worker_id)
        if conn is not None:
            conn.last_seen = time.monotonic()
        return conn

    def seen_all(self) -> None:
        """Count every worker as heard from now (after a stall of this process, see Coordinator)."""
        now = time.monotonic()
        for conn in self.by_id.values():
            conn.last_seen = now

    def silent_since(self, deadline: float) -> list[WorkerConn]:
        return [w for w in self.by_id.values() if w.last_seen < deadline]

    def offerable(self) -> list[WorkerConn]:
        """The workers to offer, least loaded first (most free slots, then longest without a task):
        the state machine fills offers in this order, so light load spreads over every worker
        instead of keeping the first one busy and the others idle."""
        ready = [w for w in self.by_id.values() if w.credit > 0 and w.connected and not w.draining]
        ready.sort(key=lambda w: (-w.credit, w.last_run))
        return ready

    @staticmethod
    def reserve(conns: list[WorkerConn]) -> Dispatch:
        """The DISPATCH command for these workers' free slots, which stay reserved until it commits."""
        command = Dispatch([Offer(w.id, w.actors, w.credit) for w in conns])
        for w in conns:
            w.reserved += w.credit
            w.credit = 0
        return command

    @staticmethod
    def settle(conn: WorkerConn, slots: int, granted: int, now: float) -> None:
        """A dispatch offered `conn` `slots` and granted it `granted` tasks: the rest are free again."""
        if not conn.draining:
            conn.credit += slots - granted
        if granted:
            conn.last_run = now

    def remove(self, worker_id: str) -> None:
        conn = self.by_id.pop(worker_id, None)
        if conn is not None and self.by_identity.get(conn.identity) == worker_id:
            del self.by_identity[conn.identity]

    def clear(self) -> None:
        self.by_id.clear()
        self.by_identity.clear()
        self.departing.clear()
