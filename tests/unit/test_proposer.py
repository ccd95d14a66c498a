"""Proposer: group commit, and each command's effects to whoever added it (matched by reference).

A fake replication stands in for Raft: the test decides when a proposed batch commits (applied to a
real StateMachine) or fails, and the Proposer hands the outcome to the test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import pytest

from qrt import defaults
from qrt.clock import Clock
from qrt.coordinator.proposer import OnEffects, Proposer
from qrt.protocol import Envelope
from qrt.state import commands as C
from qrt.state.model import Accepted, Count, Effect, Finished

from .fake_replication import FakeReplication, readable, settle

Answer = tuple[list[Effect] | None, str | None]


class Answers:
    """What each named command's callback was given, call by call."""

    def __init__(self) -> None:
        self.calls: dict[str, list[Answer]] = defaultdict(list)

    def to(self, name: str) -> OnEffects:
        def on_effects(effects: list[Effect] | None, error: str | None) -> None:
            self.calls[name].append((effects, error))
        return on_effects


def make(entries_in_flight: int | None = None, clock: Clock | None = None) \
        -> tuple[FakeReplication, Proposer, list[list[Effect]]]:
    """A Proposer on the running loop; the list holds what `on_batch` saw, one item per call. Any
    number of entries in flight unless asked: most tests here are about what one entry does."""
    repl = FakeReplication()
    batches: list[list[Effect]] = []
    proposer = Proposer(repl.as_replication(), asyncio.get_running_loop(), batches.append, clock,
                        entries_in_flight=entries_in_flight)
    return repl, proposer, batches


def submit(*ids: str) -> C.Submit:
    return C.Submit([Envelope(task_id, "a", [], {}) for task_id in ids])


async def test_commands_added_in_one_pass_of_the_loop_are_proposed_as_one_batch() -> None:
    repl, proposer, _ = make()
    answers = Answers()
    proposer.add(submit("t1"), answers.to("t1"))
    proposer.add(C.Cancel("t1"), answers.to("cancel"))
    proposer.add(submit("t2"), answers.to("t2"))
    assert repl.proposed == []  # proposed when the pass ends, not one entry per command
    await settle()
    assert len(repl.proposed) == 1
    term, _, commands, refs = C.unpack_batch(repl.proposed[0].payload)
    assert term == repl.term
    assert commands == [submit("t1"), C.Cancel("t1"), submit("t2")]
    assert len(set(refs)) == 3

    proposer.add(submit("t3"), answers.to("t3"))  # a later pass makes an entry of its own
    await settle()
    assert [p.commands for p in repl.proposed[1:]] == [[submit("t3")]]


async def test_while_an_entry_is_in_flight_what_gathers_goes_into_the_next_one() -> None:
    repl, proposer, _ = make(entries_in_flight=defaults.ENTRIES_IN_FLIGHT)  # as the coordinator runs it
    assert defaults.ENTRIES_IN_FLIGHT == 1
    answers = Answers()
    proposer.add(submit("t1"), answers.to("t1"))
    await settle()
    proposer.add(submit("t2"), answers.to("t2"))  # two later passes, while t1's entry is in flight
    await settle()
    proposer.add(C.Cancel("t2"), answers.to("cancel"))
    await settle()
    assert [readable(p.commands) for p in repl.proposed] == [[submit("t1")]]
    repl.commit(repl.proposed[0])
    await settle()  # its commit lets the next entry go: both passes' commands in one
    assert [readable(p.commands) for p in repl.proposed[1:]] == [[submit("t2"), C.Cancel("t2")]]
    assert answers.calls["t1"][0][1] is None and "t2" not in answers.calls
    repl.commit(repl.proposed[1])
    await settle()
    assert [error for name in ("t2", "cancel") for _, error in answers.calls[name]] == [None, None]


async def test_an_entry_that_fails_lets_the_held_commands_go_too() -> None:
    repl, proposer, _ = make(entries_in_flight=1)
    answers = Answers()
    proposer.add(submit("t1"), answers.to("t1"))
    await settle()
    proposer.add(submit("t2"), answers.to("t2"))
    await settle()
    repl.fail(repl.proposed[0], "queue_full")
    await settle()
    assert answers.calls["t1"] == [(None, "queue_full")]
    assert [readable(p.commands) for p in repl.proposed[1:]] == [[submit("t2")]]


async def test_an_entry_in_flight_past_the_hold_limit_holds_nothing_back() -> None:
    clock = SteppableClock()
    repl, proposer, _ = make(entries_in_flight=1, clock=clock)
    proposer.add(submit("t1"), None)
    await settle()
    proposer.add(submit("t2"), None)
    await settle()
    assert len(repl.proposed) == 1
    clock.mono += defaults.ENTRY_HOLD_LIMIT  # pysyncobj slow to answer: a snapshot, a follower catching up
    proposer.flush()  # the coordinator's next pass, or its housekeeping
    assert [readable(p.commands) for p in repl.proposed] == [[submit("t1")], [submit("t2")]]


async def test_more_commands_than_one_entry_holds_are_split_into_batches_in_order() -> None:
    repl, proposer, _ = make()
    answers = Answers()
    n = defaults.MAX_COMMANDS_PER_ENTRY
    ids = [f"t{i}" for i in range(n + 1)]
    for task_id in ids:
        proposer.add(submit(task_id), answers.to(task_id))
    await settle()
    assert [len(p.commands) for p in repl.proposed] == [n, 1]
    proposed = [c for p in repl.proposed for c in readable(p.commands)]
    assert proposed == [submit(task_id) for task_id in ids]
    repl.commit_pending()
    await settle()
    assert {task_id: answers.calls[task_id] for task_id in ids} == {
        task_id: [([Accepted([task_id])], None)] for task_id in ids}


async def test_each_callback_gets_its_own_commands_effects_when_the_batch_applies_in_another_order() -> None:
    repl, proposer, _ = make()
    answers = Answers()
    proposer.add(submit("a"), answers.to("a"))
    proposer.add(submit("b", "c"), answers.to("b+c"))
    proposer.add(C.Cancel("unknown"), answers.to("cancel"))
    await settle()
    (proposal,) = repl.proposed
    term, stamp, commands, refs = C.unpack_batch(proposal.payload)
    # The same commands under the same refs, in reverse: effects must follow refs, not positions.
    reversed_batch = C.pack_batch(term, stamp, readable(commands)[::-1], refs[::-1])
    repl.commit(proposal, reversed_batch)
    await settle()
    assert answers.calls == {
        "a": [([Accepted(["a"])], None)],
        "b+c": [([Accepted(["b", "c"])], None)],
        "cancel": [([Count(0)], None)],
    }


async def test_effects_of_time_passing_reach_on_batch_but_no_commands_callback() -> None:
    repl, proposer, batches = make()
    answers = Answers()
    past = time.time() - 60
    # A task that had to start within a second, a minute ago: the next batch's time expires it.
    stale = C.Submit([Envelope("stale", "a", [], {}, expires_at=past + 1)])
    repl.machine.apply_batch(C.pack_batch(repl.term, past, [stale]))
    proposer.add(C.Cancel("unknown"), answers.to("cancel"))
    await settle()
    applied = repl.commit(repl.proposed[0])
    await settle()
    assert [type(e) for e in applied.time] == [Finished]  # the batch did carry an effect of time
    assert answers.calls == {"cancel": [([Count(0)], None)]}
    assert batches == [[*applied.time, Count(0)]]


async def test_a_command_added_without_callback_commits_with_the_others(caplog: pytest.LogCaptureFixture) -> None:
    repl, proposer, batches = make()
    answers = Answers()
    proposer.add(submit("nobody-waits"), None)
    proposer.add(submit("awaited"), answers.to("awaited"))
    await settle()
    repl.commit_pending()
    await settle()
    assert answers.calls == {"awaited": [([Accepted(["awaited"])], None)]}
    assert batches == [[Accepted(["nobody-waits"]), Accepted(["awaited"])]]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_batch_that_fails_to_commit_answers_each_of_its_commands_with_the_reason() -> None:
    repl, proposer, batches = make()
    answers = Answers()
    proposer.add(submit("a"), answers.to("a"))
    proposer.add(C.Cancel("a"), answers.to("cancel"))
    await settle()
    repl.fail(repl.proposed[0], "leader_changed")
    await settle()
    assert answers.calls == {"a": [(None, "leader_changed")], "cancel": [(None, "leader_changed")]}
    assert batches == []
    assert repl.machine.tasks == {}


async def test_fail_all_answers_every_gathered_and_in_flight_command_once() -> None:
    repl, proposer, _ = make()
    answers = Answers()
    proposer.add(submit("in-flight"), answers.to("in-flight"))
    await settle()
    assert len(repl.proposed) == 1
    proposer.add(submit("gathered"), answers.to("gathered"))  # its pass has not ended: not proposed yet
    proposer.add(C.Tick(), None)  # nobody to answer for this one
    proposer.fail_all("not_leader")
    expected = {"in-flight": [(None, "not_leader")], "gathered": [(None, "not_leader")]}
    assert answers.calls == expected
    await settle()
    assert len(repl.proposed) == 1  # the gathered command is dropped, not proposed by a non-leader
    proposer.fail_all("not_leader")
    assert answers.calls == expected


async def test_a_commit_that_arrives_after_fail_all_calls_nothing() -> None:
    repl, proposer, batches = make()
    answers = Answers()
    proposer.add(submit("a"), answers.to("a"))
    await settle()
    proposer.fail_all("not_leader")
    repl.commit(repl.proposed[0])  # it did commit, under the next leader's watch
    await settle()
    assert answers.calls == {"a": [(None, "not_leader")]}
    assert batches == []  # this node answers nobody for it: its waiters were sent elsewhere


async def test_a_batch_is_stamped_with_the_leaders_wall_clock() -> None:
    repl, proposer, _ = make()
    before = time.time()
    proposer.add(C.Tick(), None)
    await settle()
    after = time.time()
    _, stamp, _, _ = C.unpack_batch(repl.proposed[0].payload)
    assert before <= stamp <= after


async def test_a_batch_is_never_stamped_behind_replicated_time() -> None:
    repl, proposer, _ = make()
    ahead = time.time() + 3600  # a previous leader's clock ran an hour ahead
    repl.machine.apply_batch(C.pack_batch(repl.term, ahead, [C.Tick()]))
    proposer.add(C.Tick(), None)
    await settle()
    _, stamp, _, _ = C.unpack_batch(repl.proposed[0].payload)
    assert ahead <= stamp < ahead + 1.0


class SteppableClock:
    """A wall clock the test steps, and a monotonic clock it advances."""

    def __init__(self) -> None:
        self.wall_time, self.mono = 2_000_000_000.0, 100.0

    def wall(self) -> float:
        return self.wall_time

    def monotonic(self) -> float:
        return self.mono


async def test_leader_time_follows_the_monotonic_clock_whatever_the_wall_clock_does() -> None:
    repl = FakeReplication()
    clock = SteppableClock()
    proposer = Proposer(repl.as_replication(), asyncio.get_running_loop(), lambda effects: None, clock)
    proposer.take_office()
    start = proposer.clock()
    assert start == clock.wall_time  # taking office reads the wall clock
    clock.mono += 2.0
    clock.wall_time -= 60.0  # stepped back: leader time neither freezes nor goes back
    assert proposer.clock() == start + 2.0
    clock.mono += 1.0
    clock.wall_time += 3600.0  # stepped forward: no jump either
    assert proposer.clock() == start + 3.0
    assert proposer.skew() == clock.wall_time - (start + 3.0)
    repl.machine.apply_batch(C.pack_batch(repl.term, start + 100.0, [C.Tick()]))
    assert proposer.clock() == start + 100.0  # never behind replicated time (a faster previous leader)
    proposer.take_office()  # a new term: the wall clock is read again
    assert proposer.clock() == clock.wall_time


async def test_on_batch_sees_every_effect_of_each_committed_batch_once() -> None:
    repl, proposer, batches = make()
    proposer.add(submit("a"), None)
    proposer.add(C.Cancel("unknown"), None)
    await settle()
    proposer.add(submit("b"), None)
    await settle()
    proposer.add(submit("never"), None)
    await settle()
    first, second, failed = repl.proposed
    applied_second = repl.commit(second)  # commits may be reported in any order
    applied_first = repl.commit(first)
    repl.fail(failed, "leader_changed")
    await settle()
    assert batches == [applied_second.all_effects(), applied_first.all_effects()]
    assert batches == [[Accepted(["b"])], [Accepted(["a"]), Count(0)]]


async def test_a_callback_that_raises_does_not_keep_the_others_from_their_effects(
        caplog: pytest.LogCaptureFixture) -> None:
    repl, proposer, _ = make()
    answers = Answers()

    def broken(effects: list[Effect] | None, error: str | None) -> None:
        raise RuntimeError("a bug in whoever waits")

    proposer.add(submit("a"), broken)
    proposer.add(submit("b"), answers.to("b"))
    await settle()
    repl.commit_pending()
    await settle()
    assert answers.calls == {"b": [([Accepted(["b"])], None)]}
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_a_command_that_cannot_be_packed_fails_alone_and_the_others_commit() -> None:
    # A value msgpack cannot pack (nested past its limit) in one command made the whole batch fail
    # without a callback: other clients' submits, acks and a dispatch's reserved credit were lost.
    replication, proposer, _ = make()
    answers = Answers()
    proposer.add(submit("t1"), answers.to("before"))
    proposer.add(C.Submit([Envelope("deep", "a", nested(2000), {})]), answers.to("deep"))
    proposer.add(submit("t2"), answers.to("after"))
    await settle()
    [proposal] = replication.pending
    assert [c.tasks[0].id for c in proposal.commands if isinstance(c, C.Submit)] == ["t1", "t2"]
    replication.commit(proposal)
    await settle()
    [(effects, error)] = answers.calls["deep"]
    assert effects is None and error is not None and error.startswith("unpackable")
    assert answers.calls["before"][0][0] == [Accepted(["t1"])]
    assert answers.calls["after"][0][0] == [Accepted(["t2"])]


async def test_batches_carry_the_term_the_node_took_office_in_even_after_it_is_deposed() -> None:
    # A leader paused under load resumes, reads the new term from pysyncobj, and proposes from its
    # stale view: stamped with the new term, its dispatch passed for the new leader's.
    repl, proposer, _ = make()
    proposer.take_office()
    repl.term = 4  # deposed while paused: pysyncobj now knows a later term
    proposer.add(C.Tick(), None)
    await settle()
    assert C.unpack_batch(repl.proposed[0].payload)[0] == 3


async def test_a_leader_deposed_and_elected_again_unnoticed_takes_office_anew() -> None:
    # The loop missed the step down (a stall longer than an election): without a new office its
    # batches kept the old term, and every replica refused its dispatches for as long as it led.
    from qrt.coordinator.server import Coordinator

    repl = FakeReplication(term=3)
    repl.is_leader = lambda: True  # type: ignore[attr-defined]
    repl.leader_address = lambda: None  # type: ignore[attr-defined]
    coordinator = Coordinator("tcp://127.0.0.1:*", repl.as_replication())
    try:
        coordinator.on_raft_state_changed()
        assert coordinator.proposer.office_term == 3
        repl.term = 5  # deposed in term 4, elected again in term 5: the loop saw neither
        coordinator.on_raft_state_changed()
        assert coordinator.proposer.office_term == 5
    finally:
        coordinator.router.close()
