"""Dispatch: which workers are offered, and what the leader does once a DISPATCH commits.

The Dispatcher runs with the real Proposer, a real StateMachine behind a fake replication (the
test commits each proposed batch) and a fake router that records the frames sent to each worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, cast

from qrt import defaults
from qrt.coordinator.dispatch import Dispatcher
from qrt.coordinator.proposer import Proposer
from qrt.coordinator.roster import WorkerConn, WorkerTable
from qrt.coordinator.router import Router
from qrt.protocol import CancelRun, Envelope, Run, RunTask, decode, parse_for_worker
from qrt.state import TaskState
from qrt.state import commands as C
from qrt.state.model import Effect

from .fake_replication import FakeReplication, Proposal, readable, settle

ACTORS: dict[str, dict[str, Any]] = {"mail": {"timeout": 30.0}, "image": {"timeout": 120.0}}


class FakeRouter:
    """What the Dispatcher uses of the Router: `max_frame`, and `send` (False for an unreachable peer)."""

    def __init__(self, max_frame: int = defaults.MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self.sent: list[tuple[bytes, bytes]] = []
        self.unreachable: set[bytes] = set()

    def send(self, identity: bytes, frame: bytes) -> bool:
        if identity in self.unreachable:
            return False
        self.sent.append((identity, frame))
        return True

    def runs(self) -> list[tuple[bytes, list[RunTask]]]:
        """Each frame sent, read as a worker reads it: must be a valid `run`."""
        out = []
        for identity, frame in self.sent:
            message = parse_for_worker(decode(frame))
            assert isinstance(message, Run), message
            out.append((identity, message.tasks))
        return out


@dataclass
class Leader:
    repl: FakeReplication
    dispatcher: Dispatcher
    router: FakeRouter
    workers: WorkerTable
    batches: list[list[Effect]] = field(default_factory=list)

    def submit(self, *ids: str, args: list[Any] | None = None) -> None:
        """Tasks already committed: `m*` ids are mail tasks, the others image tasks."""
        self.repl.seed(C.Submit([Envelope(i, "mail" if i.startswith("m") else "image", args or [], {}) for i in ids]))

    def leases_of(self, worker: str) -> list[tuple[str, int]]:
        return sorted((tid, self.repl.machine.tasks[tid].attempt) for tid in self.repl.machine.leases.get(worker, {}))

    async def dispatch(self) -> Proposal:
        """Poke, let the pass propose its DISPATCH, commit it and let its callback run."""
        self.dispatcher.poke()
        await settle()
        (proposal,) = self.repl.pending
        assert [type(c) for c in proposal.commands] == [C.Dispatch]
        self.repl.commit(proposal)
        await settle()
        return proposal

    def pending_commands(self) -> list[C.Command]:
        return [c for p in self.repl.pending for c in readable(p.commands)]


def make_leader(router: FakeRouter | None = None) -> Leader:
    repl = FakeReplication()
    repl.seed(C.RegisterActors(ACTORS))
    router = router or FakeRouter()
    workers = WorkerTable()
    batches: list[list[Effect]] = []
    # Any number of entries in flight: the leader's bookkeeping must hold for every interleaving of
    # proposals and commits, of which one entry at a time (the default) is a subset.
    proposer = Proposer(repl.as_replication(), asyncio.get_running_loop(), batches.append, entries_in_flight=None)
    dispatcher = Dispatcher(repl.as_replication(), proposer, cast(Router, router), workers)
    dispatcher.leading = True
    return Leader(repl, dispatcher, router, workers, batches)


def hello(table: WorkerTable, worker: str, slots: int, actors: tuple[str, ...] = ("mail",),
          identity: bytes | None = None) -> WorkerConn:
    return table.hello(worker, identity or worker.encode(), list(actors), slots, slots)


# -- which workers are offered -----------------------------------------------------------------


def test_offerable_puts_the_least_loaded_first_most_free_slots_then_longest_idle() -> None:
    table = WorkerTable()
    hello(table, "busy", 1)
    hello(table, "recent", 2).last_run = 200.0
    hello(table, "idle", 2).last_run = 100.0
    hello(table, "free", 3).last_run = 300.0
    assert [w.id for w in table.offerable()] == ["free", "idle", "recent", "busy"]


def test_offerable_skips_draining_disconnected_and_full_workers() -> None:
    table = WorkerTable()
    hello(table, "draining", 5).draining = True
    hello(table, "unreachable", 5).connected = False
    hello(table, "full", 0)
    table.ghost("ghost")  # known only from its leases, after an election
    hello(table, "ready", 1)
    assert [w.id for w in table.offerable()] == ["ready"]


def test_reserve_offers_each_workers_slots_in_the_given_order_and_zeroes_its_credit() -> None:
    table = WorkerTable()
    both = hello(table, "both", 2, ("mail", "image"))
    mail = hello(table, "mail-only", 3)
    command = WorkerTable.reserve(table.offerable())
    assert command == C.Dispatch([C.Offer("mail-only", ["mail"], 3), C.Offer("both", ["image", "mail"], 2)])
    assert (both.credit, mail.credit) == (0, 0)
    assert table.offerable() == []  # reserved until the dispatch commits


# -- the Dispatcher --------------------------------------------------------------------------


async def test_offer_proposes_nothing_unless_poked_while_leading() -> None:
    leader = make_leader()
    leader.submit("m1")
    w1 = hello(leader.workers, "w1", 2)
    leader.dispatcher.offer()
    await settle()
    assert (leader.repl.proposed, w1.credit) == ([], 2)  # leading, not poked

    leader.dispatcher.leading = False
    leader.dispatcher.poke()
    await settle()
    assert (leader.repl.proposed, w1.credit) == ([], 2)  # poked, not leading

    leader.dispatcher.leading = True
    leader.dispatcher.poke()
    await settle()
    assert [p.commands for p in leader.repl.proposed] == [[C.Dispatch([C.Offer("w1", ["mail"], 2)])]]
    assert w1.credit == 0
    leader.dispatcher.offer()  # the poke was used up
    await settle()
    assert len(leader.repl.proposed) == 1


async def test_committed_dispatch_sends_each_worker_the_tasks_leased_to_it_as_one_run() -> None:
    leader = make_leader()
    leader.submit("m1", "m2", "m3", "i1")
    hello(leader.workers, "w1", 2, identity=b"route-1")
    hello(leader.workers, "w2", 2, ("image", "mail"), identity=b"route-2")
    await leader.dispatch()
    runs = leader.router.runs()
    assert sorted(identity for identity, _ in runs) == [b"route-1", b"route-2"]  # one frame each
    sent = {identity: sorted((t.id, t.attempt) for t in tasks) for identity, tasks in runs}
    assert sent == {b"route-1": leader.leases_of("w1"), b"route-2": leader.leases_of("w2")}
    assert sorted(t.id for _, tasks in runs for t in tasks) == ["i1", "m1", "m2", "m3"]
    for _, tasks in runs:
        for task in tasks:
            assert (task.term, task.timeout) == (leader.repl.term, ACTORS[task.actor]["timeout"])


async def test_slots_a_committed_dispatch_did_not_fill_are_given_back_as_credit() -> None:
    leader = make_leader()
    leader.submit("m1")
    busy = hello(leader.workers, "busy", 3)
    idle = hello(leader.workers, "idle", 2, ("image",))
    before = time.monotonic()
    await leader.dispatch()
    assert (busy.credit, idle.credit) == (2, 2)
    assert busy.last_run >= before  # it goes after equally free workers next time
    assert idle.last_run == 0.0


async def test_a_dispatch_that_fails_to_commit_gives_the_slots_back_and_offers_them_again() -> None:
    leader = make_leader()
    leader.submit("m1")
    w1 = hello(leader.workers, "w1", 2)
    leader.dispatcher.poke()
    await settle()
    leader.repl.fail(leader.repl.pending[0], "leader_changed")
    await settle()
    assert leader.router.sent == []
    assert leader.pending_commands() == [C.Dispatch([C.Offer("w1", ["mail"], 2)])]
    assert w1.credit == 0  # reserved again, for the new dispatch


async def test_a_worker_whose_run_cannot_be_sent_is_cut_off_and_its_leases_requeued() -> None:
    leader = make_leader()
    leader.submit("m1", "m2", "m3")
    gone = hello(leader.workers, "gone", 3, identity=b"gone")
    here = hello(leader.workers, "here", 2, identity=b"here")
    leader.router.unreachable.add(b"gone")
    await leader.dispatch()
    unsent = leader.leases_of("gone")
    assert len(unsent) == 2  # sanity: the worker was granted tasks
    assert (gone.connected, gone.credit) == (False, 0)
    assert here.credit == 1
    (lost,) = leader.pending_commands()
    assert isinstance(lost, C.Lost)
    assert (lost.worker, sorted(lost.leases or []), lost.counts) == ("gone", unsent, False)

    leader.repl.commit(leader.repl.pending[0])
    await settle()
    assert [leader.repl.machine.tasks[tid].state for tid, _ in unsent] == [TaskState.QUEUED] * 2
    # The requeue offers the tasks again, to the reachable worker only.
    assert leader.pending_commands() == [C.Dispatch([C.Offer("here", ["mail"], 1)])]


async def test_a_worker_that_said_hello_again_meanwhile_is_sent_nothing_and_its_grants_are_requeued() -> None:
    leader = make_leader()
    leader.submit("m1", "m2")
    hello(leader.workers, "w1", 2, identity=b"before")
    leader.dispatcher.poke()
    await settle()
    (dispatch,) = leader.repl.pending
    again = hello(leader.workers, "w1", 4, identity=b"after")  # reconnected: its slots counted afresh
    leader.repl.commit(dispatch)
    await settle()
    granted = leader.leases_of("w1")
    assert [tid for tid, _ in granted] == ["m1", "m2"]
    assert leader.router.sent == []
    assert again.credit == 4  # not 4 plus the slots the old connection offered
    assert leader.pending_commands() == [C.Lost("w1", granted, False)]

    leader.repl.commit(leader.repl.pending[0])
    await settle()
    assert leader.pending_commands() == [C.Dispatch([C.Offer("w1", ["mail"], 4)])]


async def test_tasks_too_large_for_one_frame_are_sent_one_per_frame() -> None:
    leader = make_leader(FakeRouter(max_frame=1000))
    leader.submit("m1", "m2", args=["x" * 600])
    hello(leader.workers, "w1", 2)
    await leader.dispatch()
    runs = leader.router.runs()
    assert sorted((identity, [t.id for t in tasks]) for identity, tasks in runs) == [(b"w1", ["m1"]), (b"w1", ["m2"])]
    assert all(len(frame) <= 1000 for _, frame in leader.router.sent)


def test_a_lease_holder_the_leader_did_not_know_gets_a_timer() -> None:
    # Leases committed after the election (a deposed leader's leftover) or held by a worker that
    # left had no owner to deliver them and no timer to expire them: they stayed running forever.
    table = WorkerTable()
    table.hello("w1", b"w1", ["a"], 1, 1)
    assert table.adopt(["w1", "orphan"]) == ["orphan"]
    ghost = table.by_id["orphan"]
    assert not ghost.connected and ghost.credit == 0
    assert ghost in table.silent_since(ghost.last_seen + 0.001)  # its lease timer runs
    assert table.adopt(["orphan"]) == []  # adopted once: its timer is not restarted


def test_the_timer_arms_again_under_uvloop_when_work_is_already_due() -> None:
    # uvloop's call_at returns a plain Handle, without `when()`, for a delay under half a
    # millisecond, as when the loop's clock moves on between reading it and arming (a busy
    # machine): arming again after the next commit raised AttributeError (seen in a chaos run),
    # and that commit's check for waiting work never ran.
    import uvloop

    class LateClock:
        """The running loop, read 0.8 ms before it arms: as if the clock moved on in between."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop

        def time(self) -> float:
            return self.loop.time() - 0.0008

        def __getattr__(self, name: str) -> Any:
            return getattr(self.loop, name)

    async def scenario() -> None:
        leader = make_leader()
        leader.repl.seed(C.Submit([Envelope("m1", "mail", [], {}, delay=60.0)]))
        leader.dispatcher._loop = cast(asyncio.AbstractEventLoop, LateClock(asyncio.get_running_loop()))
        leader.repl.machine.delay_heap[0] = (0.0, *leader.repl.machine.delay_heap[0][1:])  # due long ago
        leader.dispatcher.committed()
        leader.dispatcher.committed()

    uvloop.run(scenario())


# -- grants ahead of commit (state/grants.py) --------------------------------------------------


def granting_leader() -> Leader:
    leader = make_leader()
    leader.dispatcher.proposer.take_office()
    return leader


def cancels(router: FakeRouter) -> list[tuple[bytes, str]]:
    out = []
    for identity, frame in router.sent:
        message = parse_for_worker(decode(frame))
        if isinstance(message, CancelRun):
            out.append((identity, message.id))
    return out


async def test_an_unlimited_actors_task_is_sent_before_its_lease_commits_and_once() -> None:
    leader = granting_leader()
    leader.submit("m1", "m2")
    w1 = hello(leader.workers, "w1", 1)
    leader.dispatcher.poke()
    await settle()
    assert [(identity, [t.id for t in tasks]) for identity, tasks in leader.router.runs()] == [(b"w1", ["m1"])]
    assert leader.pending_commands() == [C.Grant("w1", [("m1", 1)])]  # proposed, not committed
    assert (w1.credit, w1.granting) == (0, {"m1": 1})
    leader.repl.commit(leader.repl.pending[0])
    await settle()
    assert leader.leases_of("w1") == [("m1", 1)]
    assert len(leader.router.sent) == 1 and w1.granting == {}
    assert leader.pending_commands() == []  # its one slot is busy: nothing more offered


async def test_a_grant_that_does_not_stand_cancels_its_run() -> None:
    leader = granting_leader()
    leader.submit("m1")
    w1 = hello(leader.workers, "w1", 1)
    leader.dispatcher.poke()
    await settle()
    leader.repl.seed(C.Cancel("m1"))  # a deposed leader's leftover, ahead of the grant in the log
    leader.repl.commit(leader.repl.pending[0])
    await settle()
    assert cancels(leader.router) == [(b"w1", "m1")]
    assert leader.leases_of("w1") == [] and w1.granting == {}
    assert w1.credit == 0  # the worker's report of the cancelled run gives its slot back


async def test_a_task_whose_submit_is_in_flight_is_granted_with_it() -> None:
    leader = granting_leader()
    hello(leader.workers, "w1", 1)
    envelope = Envelope("m1", "mail", [], {})
    leader.dispatcher.proposer.add(C.Submit([envelope]), None)
    leader.dispatcher.arrived([envelope])
    leader.dispatcher.poke()
    await settle()
    assert [t.id for _, tasks in leader.router.runs() for t in tasks] == ["m1"]  # before either commits
    assert leader.pending_commands() == [C.Submit([envelope]), C.Grant("w1", [("m1", 1)])]
    leader.repl.commit_pending()
    await settle()
    assert leader.leases_of("w1") == [("m1", 1)]


async def test_limited_actors_and_actors_with_a_change_in_flight_wait_for_the_commit() -> None:
    leader = granting_leader()
    leader.repl.seed(C.RegisterActors({"image": {"concurrency": [[5, None]]}}))
    leader.submit("i1", "m1")
    hello(leader.workers, "w1", 1, ("image",))
    leader.dispatcher.proposer.add(C.Pause("mail", False), None)
    hello(leader.workers, "w2", 1, ("mail",))
    leader.dispatcher.poke()
    await settle()
    assert leader.router.sent == []
    assert C.Dispatch([C.Offer("w1", ["image"], 1), C.Offer("w2", ["mail"], 1)]) in leader.pending_commands()


async def test_a_worker_whose_granted_run_cannot_be_sent_is_cut_off_and_nothing_is_granted() -> None:
    leader = granting_leader()
    leader.submit("m1", "m2")
    gone = hello(leader.workers, "gone", 1, identity=b"gone")
    leader.router.unreachable.add(b"gone")
    leader.dispatcher.poke()
    await settle()
    assert (gone.connected, gone.credit) == (False, 0)
    assert leader.pending_commands() == []  # no grant proposed for a run that never left
    assert leader.dispatcher.pending.taken == {}
