"""Issue #11, item 4: replicated state is bounded by live tasks, not by the actors and tasks ever seen.

An actor's entries go when its counts reach zero; the delay, deadline and actor-queue heaps are
compacted when their dead entries outnumber the live ones, at the same batch on every replica.
"""

from __future__ import annotations

import pickle
import tracemalloc
from typing import Any

import pytest

from bench.bounded_state import BATCH, Workload, heap_entries, per_actor_entries, post_commit_seconds
from qrt.protocol import Envelope
from qrt.state import StateMachine, TaskState, store
from qrt.state import commands as C
from qrt.state.digest import state_digest
from qrt.state.lanes import ActorQueue
from qrt.state.model import Leased
from tests.unit.statehelp import Driver

_rebuilt, compact = store._rebuilt, ActorQueue.compact
ACTORS = 10_000
# What a compacted heap may keep beyond its live entries (store.SLACK: tiny heaps are left alone).
SLACK = 64
TASKS = 30_000


def test_one_off_actors_and_expiring_tasks_leave_state_and_cost_at_baseline() -> None:
    tracemalloc.start()
    try:
        w = Workload()
        w.expiring_tasks(3 * BATCH)
        w.let_results_expire()
        entries, heaps, cost = per_actor_entries(w.machine), heap_entries(w.machine), post_commit_seconds(w.machine)
        traced = tracemalloc.get_traced_memory()[0]
        w.one_off_actors(ACTORS)
        w.expiring_tasks(TASKS)
        w.let_results_expire()
        m = w.machine
        assert not m.tasks
        assert per_actor_entries(m) == entries  # STEADY's registration alone
        after = heap_entries(m)
        assert after["expiry"] == heaps["expiry"] == 0
        for name in ("delay_heap", "start_deadlines", "actor_queue_entries"):
            assert after[name] <= max(heaps[name], 2 * SLACK), (name, after, heaps)
        # A median of microseconds: a generous factor, since other tests share the machine.
        assert post_commit_seconds(m) < 5 * cost + 20e-6
        # Before: 20k queues and ~100k heap entries stayed (~30 MB traced at these sizes).
        assert tracemalloc.get_traced_memory()[0] - traced < 8 << 20
    finally:
        tracemalloc.stop()


def test_an_actor_whose_tasks_are_gone_has_no_entries() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"limited": {"concurrency": [[1, None]]}}))
    d.apply(C.Submit([Envelope(f"t{i}", "limited", [], {}) for i in range(3)]
                     + [Envelope("later", "oneoff", [], {}, delay=60.0)]))
    (run,) = d.dispatch(actors=["limited"], n=2)  # one starts; the other two are blocked by the cap
    assert d.machine.blocked_until
    d.apply(C.Cancel("t1"), C.Cancel("t2"), C.Cancel("later"))
    assert not d.machine.blocked_until  # nothing queued is blocked: the entry went with its tasks
    d.finish(run)
    m = d.machine
    assert (m.queues, m.queued_count, m.delayed_count, m.blocked_until, m.flow.running) == ({}, {}, {}, {}, {})
    assert list(m.actors) == ["limited"]  # what a worker registered stays


def test_delay_heap_is_compacted_when_its_tasks_are_cancelled() -> None:
    d = Driver()
    d.apply(C.Submit([Envelope(f"t{i}", "a", [], {}, delay=3600.0) for i in range(1000)]))
    d.apply(*(C.Cancel(f"t{i}") for i in range(990)))
    assert len(d.machine.delay_heap) <= max(2 * 10, SLACK)
    assert d.machine.delayed_total == 10
    d.now += 3600.0
    d.apply(C.Tick())
    assert [d.state(f"t{i}") for i in range(990, 1000)] == [TaskState.QUEUED] * 10


def test_deadline_heap_is_compacted_when_its_tasks_start_or_end() -> None:
    d = Driver()
    d.apply(C.Submit([Envelope(f"t{i}", "a", [], {}, expires_in=86400.0) for i in range(1000)]))
    d.apply(*(C.Cancel(f"t{i}") for i in range(500)))
    for run in d.dispatch(n=490):
        d.finish(run)
    assert len(d.machine.start_deadlines) <= max(2 * 10, SLACK)
    d.now += 86400.0
    d.apply(C.Tick())
    assert {d.state(f"t{i}") for i in range(990, 1000)} == {TaskState.EXPIRED}


def test_actor_queue_is_compacted_when_its_queued_tasks_are_cancelled() -> None:
    d = Driver()
    d.apply(C.Submit([Envelope(f"t{i}", "a", [], {}, keys={"tenant": i % 7}) for i in range(1000)]))
    d.apply(*(C.Cancel(f"t{i}") for i in range(1000) if i % 100))
    queue = d.machine.queues["a"]
    assert sum(len(h) for h in queue.lanes.values()) == queue.size <= max(2 * 10, SLACK)
    ran = [r.id for r in d.dispatch(n=20)]
    assert sorted(ran, key=lambda t: int(t[1:])) == [f"t{i}" for i in range(0, 1000, 100)]


def test_an_old_deadline_does_not_expire_a_new_task_with_the_same_id() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"result_ttl": 0}}))
    d.apply(C.Submit([Envelope("t", "a", [], {}, expires_in=10.0)]))
    d.finish(d.dispatch()[0])  # forgotten at once (result_ttl 0): its id may be used again
    d.apply(C.Submit([Envelope("t", "a", [], {}, delay=30.0, expires_in=60.0)]))
    d.now += 20.0  # the first task's deadline is due; the second's is not
    d.apply(C.Tick())
    assert d.state("t") == TaskState.DELAYED


def test_compaction_keeps_replicas_equal_and_old_snapshots_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica restored from a snapshot (here: one written before these fields existed) compacts
    at the same batches as one that applied the whole log, and their state digests stay equal."""
    rebuilt: list[str] = []

    def counted_heap(*args: Any) -> Any:
        rebuilt.append("heap")
        return _rebuilt(*args)

    def counted_queue(*args: Any) -> None:
        rebuilt.append("queue")
        compact(*args)

    monkeypatch.setattr(store, "_rebuilt", counted_heap)
    monkeypatch.setattr(ActorQueue, "compact", counted_queue)
    d = Driver()
    d.apply(C.Submit([Envelope(f"t{i}", "a", [], {}, keys={"tenant": i % 3}, priority=i % 2,
                               delay=100.0 if i % 4 == 0 else 0.0, expires_in=500.0) for i in range(400)]))
    old = pickle.loads(pickle.dumps(d.machine))
    for name in ("delayed_total", "deadlines_live"):
        del old.__dict__[name]
    for queue in old.queues.values():
        del queue.__dict__["size"]
    replica: StateMachine = pickle.loads(pickle.dumps(old))
    assert state_digest(replica) == state_digest(d.machine)
    for step in range(400):
        cmds: list[C.Command] = [C.Cancel(f"t{step}")]
        if step % 7 == 0:
            cmds.append(C.Dispatch([C.Offer("w1", ["a"], 1)]))
        payload = C.pack_batch(1, d.now + step, cmds)
        d.machine.apply_batch(payload)
        replica.apply_batch(payload)
        assert state_digest(replica) == state_digest(d.machine), step
    assert len(d.machine.start_deadlines) <= SLACK and len(d.machine.delay_heap) <= SLACK
    assert rebuilt.count("heap") >= 4 and rebuilt.count("queue") >= 2  # on both replicas


def test_a_snapshot_written_before_trace_contexts_loads_and_runs_its_tasks() -> None:
    """Tasks pickle as their slots by name: in a snapshot written before `Task.trace` existed, a
    task has none (as here, where the slot is unset before pickling)."""
    d = Driver()
    d.apply(C.Submit([Envelope(f"t{i}", "a", [], {}) for i in range(3)]))
    for task in d.machine.tasks.values():
        del task.trace
    restored: StateMachine = pickle.loads(pickle.dumps(d.machine))
    assert all(task.trace is None for task in restored.tasks.values())
    payload = C.pack_batch(1, d.now, [C.Dispatch([C.Offer("w1", ["a"], 3)])])
    leased = [e.task for e in restored.apply_batch(payload).all_effects() if isinstance(e, Leased)]
    assert [run.trace for run in leased] == [None] * 3
