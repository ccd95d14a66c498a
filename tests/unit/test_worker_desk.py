"""The leader's account of a worker's free slots through hello, credit and done: never a slot lost,
never one counted twice (a real WorkerDesk, Dispatcher and Proposer; a fake replication)."""

from __future__ import annotations

from typing import cast

import pytest

from qrt import defaults
from qrt import protocol as P
from qrt.coordinator.router import Router
from qrt.coordinator.workers import WorkerDesk
from qrt.protocol import Outcome
from qrt.state import commands as C

from .fake_coordinator import wait_for
from .fake_replication import settle
from .test_dispatch import Leader, make_leader

W = "w1"


def desk_of(leader: Leader) -> WorkerDesk:
    return WorkerDesk(leader.repl.as_replication(), leader.dispatcher.proposer, cast(Router, leader.router),
                      leader.workers, leader.dispatcher)


def hello(desk: WorkerDesk, slots: int, running: list[tuple[str, int]]) -> None:
    desk.handle(W.encode(), P.Hello(W, [P.ActorSpec("mail", {})], slots, 4, running))


def ok(task_id: str) -> Outcome:
    return Outcome(task_id, 1, True, None)


async def four_running(leader: Leader, desk: WorkerDesk) -> None:
    leader.submit("m1", "m2", "m3", "m4")
    hello(desk, 4, [])
    await settle()
    for proposal in list(leader.repl.pending):  # register_actors, then the dispatch
        leader.repl.commit(proposal)
        await settle()
    assert len(leader.leases_of(W)) == 4 and leader.workers.by_id[W].credit == 0


async def test_slots_freed_while_a_hello_travelled_are_counted_though_their_outcomes_follow() -> None:
    # The worker reconnects while running four tasks; two finish before the welcome, so it sends
    # `credit 2` and then resends their outcomes with credit 0. A clamp on `credit` by the leases
    # still held lost those two slots for good (seen: 2 of 4 free after a paused leader).
    leader = make_leader()
    desk = desk_of(leader)
    await four_running(leader, desk)
    hello(desk, 0, leader.leases_of(W))
    desk.handle(W.encode(), P.Credit(2))
    desk.handle(W.encode(), P.Done([ok("m1"), ok("m2")], 0))
    assert leader.workers.by_id[W].credit == 2


async def test_outcomes_in_two_dones_before_either_commits_free_both_slots() -> None:
    leader = make_leader()
    desk = desk_of(leader)
    await four_running(leader, desk)
    for pending in list(leader.repl.pending):
        leader.repl.commit(pending)
    desk.handle(W.encode(), P.Done([ok("m1")], 1))
    desk.handle(W.encode(), P.Done([ok("m2")], 1))  # m1's finish not committed yet
    assert leader.workers.by_id[W].credit == 2


async def test_a_slot_reported_free_twice_is_counted_once() -> None:
    # A `run` from a deposed leader reached the worker after its hello: started, cancelled (no
    # lease here) and reported with credit 1, for a slot its hello had already counted free.
    leader = make_leader()
    desk = desk_of(leader)
    hello(desk, 4, [])
    desk.handle(W.encode(), P.Done([Outcome("stale", 1, False, None, "cancelled", "", "", None, True)], 1))
    assert leader.workers.by_id[W].credit == 4
    assert not [c for p in leader.repl.pending for c in p.commands if isinstance(c, C.Dispatch)]


async def test_a_lease_listed_in_the_hello_has_no_deadline_before_the_first_heartbeat() -> None:
    # Every hello makes a new connection whose heartbeats have not listed anything yet: for the
    # second before the first one, the deadline of workers that do not list what they run hit a
    # sync handler overrunning its timeout, listed in the hello: cancelled, its slot given back and
    # its task run again beside it.
    leader = make_leader()
    desk = desk_of(leader)
    await four_running(leader, desk)
    for task_id, _ in leader.leases_of(W):
        lease = leader.repl.machine.tasks[task_id].lease
        assert lease is not None
        lease.started_at -= 1000  # far past its timeout and the grace
    hello(desk, 0, leader.leases_of(W))
    sent = len(leader.router.sent)
    desk.expire_overdue()
    assert leader.router.sent[sent:] == [] and leader.workers.by_id[W].credit == 0
    assert not [c for p in leader.repl.pending for c in p.commands if isinstance(c, C.Lost)]


async def test_a_lease_a_new_hello_sent_again_is_not_voided_by_its_dispatch() -> None:
    # The dispatch applied, its callback still queued on the loop; the worker's new hello found
    # the lease (granted since its previous hello, not listed) and sent its `run` again. The
    # callback then voided the lease as granted to the replaced connection: the task was
    # requeued and leased elsewhere while the worker ran it.
    leader = make_leader()
    desk = desk_of(leader)
    leader.submit("m1")
    hello(desk, 1, [])
    await settle()
    register, dispatch = leader.repl.pending
    assert [type(c) for c in dispatch.commands] == [C.Dispatch]
    leader.repl.commit(register)
    leader.repl.commit(dispatch)  # applied; its callback waits for the loop
    hello(desk, 1, [])
    await settle()
    assert leader.leases_of(W) == [("m1", 1)] and "m1" in leader.workers.by_id[W].runs_sent
    assert not [c for p in leader.repl.pending for c in p.commands if isinstance(c, C.Lost)]
    assert leader.workers.by_id[W].credit == 0


async def test_a_credit_lost_on_the_way_is_restored_at_the_next_quiet_heartbeat() -> None:
    # A `done` (or `credit`) frame lost with a dropped connection took its slots with it: the
    # leader counted the worker busy for good, and with every worker so, queued tasks waited
    # forever (seen once in CI: 2 idle workers, 0 free, 336 queued). A heartbeat says how many
    # slots the worker has free; when nothing is on its way either way, the leader believes it.
    leader = make_leader()
    desk = desk_of(leader)
    await four_running(leader, desk)
    for pending in list(leader.repl.pending):
        leader.repl.commit(pending)
    desk.handle(W.encode(), P.Done([ok("m1"), ok("m2")], 2))
    await settle()
    leader.repl.commit_pending()  # the finish, and a dispatch that found nothing to run
    await settle()
    assert leader.workers.by_id[W].credit == 2
    leader.workers.by_id[W].credit = 0  # as if the `done` had carried no credit (lost, resent with 0)
    held = [(t, 1) for t in ("m3", "m4")]
    desk.handle(W.encode(), P.Heartbeat(held, 1, free=2))
    assert leader.workers.by_id[W].credit == 2


async def test_a_heartbeat_crossing_a_run_changes_no_credit() -> None:
    # The worker's count misses what is on its way: a `run` it has not read yet (its lease is not
    # in `running`), or a dispatch not yet committed. Then its `free` is not believed.
    leader = make_leader()
    desk = desk_of(leader)
    await four_running(leader, desk)
    desk.handle(W.encode(), P.Heartbeat([], 1, free=4))  # the four runs have not arrived
    assert leader.workers.by_id[W].credit == 0


async def test_leases_a_hello_gives_up_do_not_count_against_the_slots_its_outcomes_free() -> None:
    # The CI wedge, from the leader's own trail: a new leader holds four leases for a worker that
    # never got their `run` (the old leader died first); the worker's hello lists only the tasks
    # it finished for the old leader (acks lost) and says all four slots are free. The hello gives
    # the four leases up (requeue), but before that commits the worker resends its old outcomes
    # (credit 0): counting the leases still being given up as busy slots, the leader took the
    # worker's credit down to 0, and nothing brought it back.
    leader = make_leader()
    desk = desk_of(leader)
    await four_running(leader, desk)  # as the old leader left them: four leases, four runs lost
    leader.workers.clear()
    hello(desk, 4, [("old1", 1), ("old2", 1)])  # its unacknowledged outcomes, of tasks long done
    desk.handle(W.encode(), P.Done([ok("old1"), ok("old2")], 0))  # resent at the welcome
    assert leader.workers.by_id[W].credit == 4
    await settle()
    leader.repl.commit_pending()  # the requeue, the finish (of nothing), a dispatch
    await settle()
    assert leader.leases_of(W) and leader.workers.by_id[W].credit + len(leader.leases_of(W)) == 4


async def test_a_run_granted_ahead_and_listed_before_its_commit_is_neither_cancelled_nor_counted_twice() -> None:
    # A grant's `run` leaves before its lease commits (state/grants.py): the worker may list it in a
    # heartbeat, or report it done, before the leader has applied the lease.
    leader = make_leader()
    leader.dispatcher.proposer.take_office()
    desk = desk_of(leader)
    leader.submit("m1", "m2")
    hello(desk, 0, [])
    await settle()
    leader.repl.commit_pending()  # its actors registered
    leader.router.sent.clear()
    desk.handle(W.encode(), P.Credit(1))
    await settle()
    assert [t.id for _, tasks in leader.router.runs() for t in tasks] == ["m1"]
    assert leader.pending_commands() == [C.Grant(W, [("m1", 1)])]
    leader.router.sent.clear()
    desk.handle(W.encode(), P.Heartbeat([("m1", 1)], 1, free=0))
    assert leader.router.sent == [(W.encode(), P.Hb(1).encode())]  # no cancel of m1
    leader.router.sent.clear()
    desk.handle(W.encode(), P.Done([ok("m1")], 1))  # done before the grant commits
    assert leader.workers.by_id[W].credit == 1  # its slot is free again, once
    await settle()
    assert [t.id for _, tasks in leader.router.runs() for t in tasks] == ["m2"]  # the next, at once
    leader.repl.commit_pending()
    await settle()
    assert leader.repl.machine.tasks["m1"].state == "succeeded" and leader.leases_of(W) == [("m2", 1)]


# -- acks in `run` -------------------------------------------------------------------------------

def sent_messages(leader: Leader) -> list[P.ToWorker]:
    return [P.parse_for_worker(P.decode(frame)) for _, frame in leader.router.sent]


async def one_slot_running(acks_in_run: bool) -> tuple[Leader, WorkerDesk]:
    """A leader, and a worker of one slot running m1, granted ahead; m2 and m3 queued."""
    leader = make_leader()
    desk = desk_of(leader)
    leader.dispatcher.proposer.take_office()
    leader.submit("m1", "m2", "m3")
    desk.handle(W.encode(), P.Hello(W, [P.ActorSpec("mail", {})], 1, 1, [], acks_in_run=acks_in_run))
    await settle()
    leader.repl.commit_pending()  # its actors registered, m1 granted
    await settle()
    leader.repl.commit_pending()
    await settle()
    assert leader.leases_of(W) == [("m1", 1)]
    leader.router.sent.clear()
    return leader, desk


async def report_m1(leader: Leader, desk: WorkerDesk, credit: int) -> None:
    """The worker reports m1 done, offering `credit` slots again; its outcome commits."""
    desk.handle(W.encode(), P.Done([ok("m1")], credit))
    await settle()
    leader.repl.commit_pending()
    await settle()


async def test_an_outcomes_ack_rides_in_the_next_run_to_a_worker_that_reads_it_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # With one slot, the next task's `run` leaves as the `done` arrives, and the outcome commits
    # about one commit later: its ack waits for the `run` after that instead of a frame of its own.
    monkeypatch.setattr(defaults, "ACK_HOLD", 60.0)  # however slow this machine, the hold outlasts the test
    leader, desk = await one_slot_running(acks_in_run=True)
    await report_m1(leader, desk, credit=1)  # m2's run leaves, m1's outcome and m2's lease commit
    assert sent_messages(leader) == [P.Run([leader.repl.machine.run_task(leader.repl.machine.tasks["m2"])])]
    leader.router.sent.clear()
    desk.handle(W.encode(), P.Done([ok("m2")], 1))
    await settle()
    [run] = sent_messages(leader)
    assert isinstance(run, P.Run) and [t.id for t in run.tasks] == ["m3"] and run.acks == ["m1"]


async def test_an_ack_no_run_takes_is_sent_alone_within_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "ACK_HOLD", 0.5)  # long enough to see it held on a slow machine
    leader, desk = await one_slot_running(acks_in_run=True)
    await report_m1(leader, desk, credit=0)  # no slot offered again: no `run` follows
    assert sent_messages(leader) == []
    await wait_for(lambda: bool(leader.router.sent), what="the held ack to be sent")
    assert sent_messages(leader) == [P.Ack(["m1"])]


async def test_a_worker_that_does_not_read_acks_in_run_gets_each_at_its_commit() -> None:
    leader, desk = await one_slot_running(acks_in_run=False)
    await report_m1(leader, desk, credit=1)
    messages = sent_messages(leader)
    assert P.Ack(["m1"]) in messages and all(m.acks == [] for m in messages if isinstance(m, P.Run))


@pytest.mark.parametrize("committed_before_the_bye", [True, False])
async def test_acks_for_a_worker_that_says_bye_go_before_the_answer_to_its_bye(committed_before_the_bye: bool) -> None:
    # A worker that has left reads nothing more: an ack held past the answer to its bye never
    # clears its outcome, and it waits out BYE_WAIT (3 s) before it exits (seen: every worker
    # stop in the integration tests took 3 s).
    leader, desk = await one_slot_running(acks_in_run=True)
    desk.handle(W.encode(), P.Done([ok("m1")], 0))
    await settle()
    if committed_before_the_bye:
        leader.repl.commit_pending()  # m1's outcome committed, its ack held
        await settle()
    desk.handle(W.encode(), P.Bye([]))
    await settle()
    leader.repl.commit_pending()
    await settle()
    assert sent_messages(leader) == [P.Ack(["m1"]), P.Ack([], bye=True)]


async def test_an_outcome_whose_ack_is_held_is_not_cancelled_when_a_heartbeat_lists_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker lists an outcome it holds until its ack: with the ack held for a `run`, most of a
    # busy worker's heartbeats list one, and each drew a useless `cancel`.
    monkeypatch.setattr(defaults, "ACK_HOLD", 60.0)  # however slow this machine, the hold outlasts the test
    leader, desk = await one_slot_running(acks_in_run=True)
    await report_m1(leader, desk, credit=0)
    desk.handle(W.encode(), P.Heartbeat([("m1", 1)], 1, free=1))
    assert sent_messages(leader) == [P.Hb(1)]
