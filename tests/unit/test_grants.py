"""Grants ahead of commit (state/grants.py): the leader picks what a dispatch would lease, with its
earlier grants still in flight, and applying the grants leaves the queues as the dispatches would."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from qrt.protocol import Envelope
from qrt.state import StateMachine, grants
from qrt.state import commands as C
from qrt.state.model import Leased, Refused

from .statehelp import queues_of

NOW = 1000.0


def _machine(tasks: list[tuple[int, int]]) -> StateMachine:
    machine = StateMachine()
    envs = [Envelope(f"t{i}", "a", [], {}, keys={"tenant": f"k{tenant}"} if tenant else {}, priority=priority)
            for i, (tenant, priority) in enumerate(tasks)]
    machine.apply_batch(C.pack_batch(1, NOW, [C.RegisterActors({"a": {}}), C.Submit(envs)]))
    return machine


def _leased(m: StateMachine, command: C.Command) -> list[str]:
    [effects] = m.apply_batch(C.pack_batch(1, NOW, [command])).effects()
    assert not any(isinstance(e, Refused) for e in effects)
    return [e.task.id for e in effects if isinstance(e, Leased)]


@settings(max_examples=200, deadline=None)
@given(tasks=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0, 0, 0, 1, 2])), max_size=40),
       rounds=st.lists(st.integers(1, 6), min_size=1, max_size=4))
def test_grants_in_flight_pick_what_dispatches_lease(tasks: list[tuple[int, int]], rounds: list[int]) -> None:
    granting = _machine(tasks)
    dispatching = copy.deepcopy(granting)
    pending = grants.Pending()
    picks: list[list[str]] = []
    for n in rounds:  # each round picked while the earlier rounds' grants are still in flight
        picked = []
        for _ in range(n):
            task = grants.pick(granting, ["a"], pending, NOW)
            if task is None:
                break
            pending.add(task)
            picked.append(task.id)
        picks.append(picked)
    for n, picked in zip(rounds, picks, strict=True):
        assert _leased(dispatching, C.Dispatch([C.Offer("w", ["a"], n)])) == picked
        assert _leased(granting, C.Grant("w", [(tid, 1) for tid in picked])) == picked
    assert queues_of(granting) == queues_of(dispatching)


def test_a_grant_refused_when_its_task_left_the_queue_or_its_actor_is_limited() -> None:
    machine = _machine([(0, 0), (0, 0), (0, 0)])
    machine.apply_batch(C.pack_batch(1, NOW, [C.Cancel("t0")]))
    assert machine.unlimited("a")
    [effects] = machine.apply_batch(C.pack_batch(1, NOW, [C.Grant("w", [("t0", 1), ("t1", 2), ("t2", 1)])])).effects()
    assert effects[:2] == [Refused("w", "t0"), Refused("w", "t1")]  # cancelled; not at the attempt before
    assert isinstance(effects[2], Leased)
    machine.apply_batch(C.pack_batch(1, NOW, [C.SetLimits("a", cap=5), C.Submit([Envelope("t3", "a", [], {})])]))
    assert not machine.unlimited("a")
    [effects] = machine.apply_batch(C.pack_batch(1, NOW, [C.Grant("w", [("t3", 1)])])).effects()
    assert effects == [Refused("w", "t3")]


def test_a_deposed_leaders_grant_is_refused() -> None:
    machine = _machine([(0, 0)])
    machine.apply_batch(C.pack_batch(2, NOW, [C.Tick()]))  # a new leader's first batch
    [effects] = machine.apply_batch(C.pack_batch(1, NOW, [C.Grant("w", [("t0", 1)])])).effects()
    assert effects == [Refused("w", "t0")]


def test_a_task_about_to_expire_is_left_to_a_dispatch() -> None:
    machine = StateMachine()
    machine.apply_batch(C.pack_batch(1, NOW, [C.Submit([Envelope("soon", "a", [], {}, expires_in=0.5)])]))
    assert grants.pick(machine, ["a"], grants.Pending(), NOW) is None
