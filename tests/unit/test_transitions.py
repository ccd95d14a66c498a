"""The transition table: every state change goes through it, an illegal one is refused, and the
per-state counters stay exact through every legal one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qrt.protocol import Envelope
from qrt.state import TaskState, views
from qrt.state import commands as C
from qrt.state.model import Accepted, Count, Effect, Internal, Task
from qrt.state.store import TaskStore
from qrt.state.transitions import MOVES, IllegalMove

from .statehelp import Driver

STATES = [TaskState.NEW, TaskState.QUEUED, TaskState.DELAYED, TaskState.RUNNING, *sorted(TaskState.TERMINAL)]


def scanned_counts(d: Driver) -> tuple[dict[str, int], dict[str, int]]:
    """QUEUED and DELAYED tasks per actor, counted the slow way."""
    queued: dict[str, int] = {}
    delayed: dict[str, int] = {}
    for task in d.machine.tasks.values():
        if task.state == TaskState.QUEUED:
            queued[task.actor] = queued.get(task.actor, 0) + 1
        elif task.state == TaskState.DELAYED:
            delayed[task.actor] = delayed.get(task.actor, 0) + 1
    return queued, delayed


def assert_counts_exact(d: Driver) -> None:
    assert (d.machine.queued_count, d.machine.delayed_count) == scanned_counts(d)
    for actor, row in views.depth(d.machine).items():
        assert row["running"] == sum(t.actor == actor and t.state == TaskState.RUNNING
                                     for t in d.machine.tasks.values())


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[tuple[str, str]]]:
    """Every (from, to) move the machine makes while the test runs."""
    made: set[tuple[str, str]] = set()
    original = TaskStore._move

    def recording(self: TaskStore, task: Task, state: str) -> None:
        before = task.state
        original(self, task, state)
        made.add((before, state))

    monkeypatch.setattr(TaskStore, "_move", recording)
    yield made


def test_the_table_names_every_state_and_only_a_dead_letter_leaves_a_final_state() -> None:
    assert sorted(MOVES) == sorted(STATES)
    assert all(to in MOVES for targets in MOVES.values() for to in targets)
    assert {s: set(MOVES[s]) for s in TaskState.TERMINAL} == {
        TaskState.SUCCEEDED: set(), TaskState.CANCELLED: set(), TaskState.EXPIRED: set(),
        TaskState.FAILED: {TaskState.QUEUED},
    }
    assert not any(TaskState.NEW in targets for targets in MOVES.values())


def test_an_illegal_move_is_refused_before_it_changes_anything() -> None:
    d = Driver()
    d.submit("t1")
    task = d.machine.tasks["t1"]
    with pytest.raises(IllegalMove, match="'queued' to 'succeeded'"):
        d.machine._move(task, TaskState.SUCCEEDED)
    assert task.state == TaskState.QUEUED and d.machine.queued_count == {"a": 1}
    assert_counts_exact(d)


def test_a_command_whose_move_is_illegal_yields_internal_and_the_batch_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = Driver()
    d.submit("t1")
    # As if a handler had a bug: cancelling a queued task is not a legal move any more.
    monkeypatch.setitem(MOVES, TaskState.QUEUED, {TaskState.RUNNING: "leased", TaskState.EXPIRED: "expired"})
    cancelled, submitted = d.apply(C.Cancel("t1"), C.Submit([Envelope("t2", "a", [], {})]))
    [failed] = cancelled
    assert isinstance(failed, Internal) and failed.command == "cancel"
    assert "cannot move from 'queued' to 'cancelled'" in failed.message
    assert submitted == [Accepted(["t2"])]
    assert d.state("t1") == d.state("t2") == TaskState.QUEUED  # the failed cancel changed nothing
    assert_counts_exact(d)
    assert sorted(r.id for r in d.dispatch(n=5)) == ["t1", "t2"]
    assert_counts_exact(d)


def test_counters_stay_exact_through_every_move_of_the_table(moves: set[tuple[str, str]]) -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"retries": 1, "result_ttl": 60}, "b": {"retries": 0}}))

    def step(*commands: C.Command) -> list[list[Effect]]:
        effects = d.apply(*commands)
        assert not [e for fx in [d.time_effects, *effects] for e in fx if isinstance(e, Internal)]
        assert_counts_exact(d)
        return effects

    def submit(task_id: str, actor: str = "a", delay: float = 0.0, expires_in: float | None = None,
               expires_at: float | None = None) -> None:
        step(C.Submit([Envelope(task_id, actor, [], {}, delay=delay, expires_in=expires_in, expires_at=expires_at)]))

    submit("ok")  # NEW -> QUEUED
    submit("later", delay=5.0)  # NEW -> DELAYED
    submit("too-late", expires_at=d.now - 1)  # NEW -> EXPIRED
    submit("cancel-me")
    submit("cancel-me-later", delay=5.0)
    submit("expire-queued", actor="c", expires_in=1.0)
    submit("expire-delayed", delay=10.0, expires_in=1.0)
    step(C.Cancel("cancel-me"), C.Cancel("cancel-me-later"))  # QUEUED, DELAYED -> CANCELLED
    d.now += 2
    step(C.Tick())  # QUEUED, DELAYED -> EXPIRED
    d.now += 5
    step(C.Tick())  # DELAYED -> QUEUED
    [run_ok, run_later] = d.dispatch(n=2)  # QUEUED -> RUNNING
    d.finish(run_ok)  # RUNNING -> SUCCEEDED
    assert_counts_exact(d)
    d.finish(run_later, ok=False)  # RUNNING -> DELAYED (a retry)
    assert_counts_exact(d)
    d.now += 60
    step(C.Tick())
    [retry] = d.dispatch()
    step(C.Lost("w1"))  # RUNNING -> QUEUED
    [retry] = d.dispatch()
    step(C.Cancel("later"))
    d.finish(retry, ok=False)  # RUNNING -> CANCELLED (a cancel asked while it ran)
    assert_counts_exact(d)
    submit("doomed", actor="b")
    [doomed] = d.dispatch(actors=["b"])
    d.finish(doomed, ok=False)  # RUNNING -> FAILED
    assert_counts_exact(d)
    [replayed] = step(C.DlqReplay(["doomed"]))  # FAILED -> QUEUED
    assert replayed == [Count(1, ["doomed"])]
    submit("purged", actor="b", delay=3.0)
    step(C.PurgeQueue("b"))
    assert moves == {(old, new) for old, targets in MOVES.items() for new in targets}
