"""Hypothesis drives the state machine through random interleavings and checks DESIGN.md's invariants."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qrt.protocol import Outcome, RunTask
from qrt.state import StateMachine, TaskState, grants, views
from qrt.state import commands as C
from qrt.state.digest import state_digest
from qrt.state.model import Leased, Refused
from tests.unit.replica_process import RemoteReplica
from tests.unit.statehelp import queues_of

WORKERS = ["w1", "w2", "w3"]
ACTORS = ["a", "b", "c"]  # "c" has a global rate limit and concurrency limits, one per tenant
RATE_N, RATE_PERIOD = 4, 10.0
TENANTS = ["t1", "t2", "t3"]
SLOTS = 3  # free slots of each worker when it holds nothing


class _Replica:
    """One replica process for the whole module (started on first use), reset for each example."""

    def __init__(self) -> None:
        self.replica: RemoteReplica | None = None

    def get(self) -> RemoteReplica:
        if self.replica is None:
            self.replica = RemoteReplica()
        return self.replica


REPLICA = _Replica()


@pytest.fixture(scope="module", autouse=True)
def _stop_replica() -> Iterator[None]:
    yield
    if REPLICA.replica is not None:
        REPLICA.replica.close()


class QueueRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.machine = StateMachine()
        self.replica = REPLICA.get()
        self.replica.reset()
        self.now = 1000.0
        self.accepted: set[str] = set()
        self.purged: set[str] = set()
        self.expired: set[str] = set()  # finished tasks whose result TTL ran out
        self.slots = {w: SLOTS for w in WORKERS}  # free slots each worker offered
        self.running: dict[str, tuple[str, RunTask]] = {}  # task id -> (worker, run entry): what workers hold
        self.next_id = 0
        self.caps = (3, 2)  # (cluster-wide, per tenant) concurrency of "c" in force
        self.starts: list[float] = []  # leader times of the starts of "c"
        self.apply(C.RegisterActors({
            "a": {"retries": 1, "result_ttl": 30}, "b": {"retries": 0},
            "c": {"retries": 1, "rate_limits": [[RATE_N, RATE_PERIOD, None]],
                  "concurrency": [[self.caps[0], None], [self.caps[1], "tenant"]]},
        }))
        # A cron entry on actor "b" (seconds 0, 7, ... 56); its fires are tasks "cron:every7:<time>".
        self.apply(C.CronAdd("every7", "b", "*/7 * * * * *", "UTC", [], {}))
        self.cron_since = self.now
        self.fired: set[int] = set()

    def apply(self, *cmds: C.Command) -> list[list[Any]]:
        payload = C.pack_batch(1, self.now, list(cmds))
        self.replica.apply_batch(payload)
        applied = self.machine.apply_batch(payload)
        for task_id in self.machine.tasks:
            if task_id.startswith("cron:every7:"):
                self.fired.add(int(task_id.rsplit(":", 1)[1]))
        return applied.effects()

    # -- rules ------------------------------------------------------------------------------

    @rule(actor=st.sampled_from(ACTORS), delay=st.sampled_from([0.0, 0.0, 5.0]), n=st.integers(1, 3),
          priority=st.integers(0, 2), tenant=st.sampled_from(TENANTS))
    def submit(self, actor: str, delay: float, n: int, priority: int, tenant: str) -> None:
        from qrt.protocol import Envelope
        envs = []
        for _ in range(n):
            self.next_id += 1
            keys = {"tenant": tenant} if actor in ("a", "c") else {}
            envs.append(Envelope(f"t{self.next_id}", actor, [], {}, keys=keys, delay=delay, priority=priority))
        self.apply(C.Submit(envs))
        self.accepted.update(e.id for e in envs)

    @rule(key=st.sampled_from(["k1", "k2"]), expires=st.sampled_from([None, 1.0, 50.0]))
    def submit_with_options(self, key: str, expires: float | None) -> None:
        from qrt.protocol import Envelope
        self.next_id += 1
        env = Envelope(f"t{self.next_id}", "a", [], {}, idempotency_key=key, expires_in=expires)
        [effects] = self.apply(C.Submit([env]))
        [accepted] = effects
        task_id = accepted.ids[0]
        self.accepted.add(task_id)
        assert task_id == env.id or self.machine.idempotency[f"a\0{key}"] == task_id

    @rule(task_index=st.integers(0, 50))
    def resubmit(self, task_index: int) -> None:
        from qrt.protocol import Envelope
        task_id = f"t{task_index}"
        if task_id in self.accepted:
            before = self.machine.tasks.get(task_id)
            state = None if before is None else before.state
            self.apply(C.Submit([Envelope(task_id, "a", [], {})]))
            if before is None:  # its record had expired: the id is free again, this is a new task
                self.expired.discard(task_id)
                self.purged.discard(task_id)
            after = self.machine.tasks.get(task_id)
            assert (None if after is None else after.state) == state or state is None

    @rule(caps=st.sampled_from([(3, 2), (2, 1), (5, 5)]))
    def operator_changes_limits(self, caps: tuple[int, int]) -> None:
        self.apply(C.SetLimits("c", concurrency=[[caps[0], None], [caps[1], "tenant"]]))
        self.caps = caps

    @rule(worker=st.sampled_from(WORKERS), actors=st.sampled_from([["a"], ["b"], ["c"], ["a", "b", "c"]]))
    def dispatch(self, worker: str, actors: list[str]) -> None:
        n = self.slots[worker]
        effects = self.apply(C.Dispatch([C.Offer(worker, actors, n)]))[0]
        leased = [e for e in effects if isinstance(e, Leased)]
        assert len(leased) <= n, "leased more tasks than free slots"
        for e in leased:
            assert e.worker == worker and e.task.actor in actors
            task = self.machine.tasks[e.task.id]
            assert task.eta <= self.now, "leased a task that was not due"
            self.running[e.task.id] = (worker, e.task)
            if e.task.actor == "c":
                self.starts.append(self.now)
                running_c = [t for t in self.machine.tasks.values()
                             if t.actor == "c" and t.state == TaskState.RUNNING]
                assert len(running_c) <= self.caps[0], "cluster-wide concurrency exceeded"
                tenant = self.machine.tasks[e.task.id].keys["tenant"]
                assert sum(t.keys["tenant"] == tenant for t in running_c) <= self.caps[1], "per-tenant cap exceeded"
        self.slots[worker] -= len(leased)

    @rule(worker=st.sampled_from(WORKERS), actors=st.sampled_from([["a"], ["b"], ["a", "b"]]))
    def grant_ahead(self, worker: str, actors: list[str]) -> None:
        """A leader's grants ahead of commit (state/grants.py) are the tasks a dispatch of the same
        slots would lease, in the same order, and they stand."""
        n = self.slots[worker]
        pending = grants.Pending()
        picked = []
        for _ in range(n):
            task = grants.pick(self.machine, actors, pending, self.now)
            if task is None:
                break
            pending.add(task)
            picked.append(task.id)
        probe = copy.deepcopy(self.machine)
        payload = C.pack_batch(1, self.now, [C.Dispatch([C.Offer(worker, actors, len(picked))])])
        dispatched = [e.task.id for e in probe.apply_batch(payload).effects()[0] if isinstance(e, Leased)]
        assert picked == dispatched
        if not picked:
            return
        attempts = [self.machine.tasks[tid].attempt + 1 for tid in picked]
        [effects] = self.apply(C.Grant(worker, list(zip(picked, attempts, strict=True))))
        assert not any(isinstance(e, Refused) for e in effects)
        leased = [e for e in effects if isinstance(e, Leased)]
        assert [e.task.id for e in leased] == picked and [e.task.attempt for e in leased] == attempts
        for e in leased:
            self.running[e.task.id] = (worker, e.task)
        self.slots[worker] -= len(leased)
        assert queues_of(self.machine) == queues_of(probe), "a grant left the queues other than a dispatch leaves them"

    @rule(task_index=st.integers(0, 50), attempt=st.integers(0, 3), worker=st.sampled_from(WORKERS))
    def grant_that_cannot_stand(self, task_index: int, attempt: int, worker: str) -> None:
        """A grant of a task that is not queued at the attempt before, or of a limited actor, is
        refused and changes nothing."""
        task = self.machine.tasks.get(f"t{task_index}")
        if task is not None and task.state == TaskState.QUEUED and task.attempt + 1 == attempt \
                and self.machine.unlimited(task.actor):
            return  # it would stand: grant_ahead's case
        unchanged = copy.deepcopy(self.machine)
        unchanged.apply_batch(C.pack_batch(1, self.now, [C.Tick()]))  # a batch that does nothing
        [effects] = self.apply(C.Grant(worker, [(f"t{task_index}", attempt)]))
        assert effects == [Refused(worker, f"t{task_index}")]
        unchanged.digest = self.machine.digest  # (the log digests differ: another batch)
        assert state_digest(self.machine) == state_digest(unchanged)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), ok=st.booleans(), retryable=st.booleans())
    def finish(self, data: st.DataObject, ok: bool, retryable: bool) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.running)))
        worker, run = self.running.pop(task_id)
        outcome = Outcome(task_id, run.attempt, ok, 1 if ok else None, "" if ok else "E", "m", "", None, retryable)
        self.apply(C.Finish(worker, [outcome]))
        self.slots[worker] += 1

    @rule(worker=st.sampled_from(WORKERS))
    def worker_dies(self, worker: str) -> None:
        self.apply(C.Lost(worker))
        for task_id in [t for t, (w, _) in self.running.items() if w == worker]:
            del self.running[task_id]
        self.slots[worker] = SLOTS

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def stale_report(self, data: st.DataObject) -> None:
        """A report for an attempt that is not the current lease changes nothing."""
        task_id = data.draw(st.sampled_from(sorted(self.running)))
        worker, run = self.running[task_id]
        before = self.machine.tasks[task_id].state
        self.apply(C.Finish(worker, [Outcome(task_id, run.attempt - 1, True, 0)]))
        assert self.machine.tasks[task_id].state == before

    @rule(task_index=st.integers(0, 50))
    def cancel(self, task_index: int) -> None:
        self.apply(C.Cancel(f"t{task_index}"))

    @rule(seconds=st.sampled_from([0.5, 3.0, 20.0, 400.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        before = {tid for tid, t in self.machine.tasks.items() if t.state in TaskState.TERMINAL}
        self.apply(C.Tick())
        self.expired |= {tid for tid in before if tid not in self.machine.tasks}

    @rule()
    def replay_all(self) -> None:
        self.apply(C.DlqReplay(None))

    @rule()
    def purge_all(self) -> None:
        self.purged |= set(self.machine.dlq)
        self.apply(C.DlqPurge(None))

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def no_accepted_task_disappears(self) -> None:
        for task_id in self.accepted - self.purged - self.expired:
            assert task_id in self.machine.tasks, f"accepted task {task_id} vanished"

    @invariant()
    def only_finished_tasks_leave(self) -> None:
        for task_id in self.expired:
            assert task_id not in self.running

    @invariant()
    def leases_match_running_tasks(self) -> None:
        leased = {tid for held in self.machine.leases.values() for tid in held}
        running = {tid for tid, t in self.machine.tasks.items() if t.state == TaskState.RUNNING}
        assert leased == running
        for worker, held in self.machine.leases.items():
            assert len(held) <= SLOTS, f"{worker} holds more tasks than its slots"

    @invariant()
    def status_counts_are_exact(self) -> None:
        scanned: dict[str, dict[str, int]] = {}
        for task in self.machine.tasks.values():
            if task.state in (TaskState.QUEUED, TaskState.DELAYED, TaskState.RUNNING):
                row = scanned.setdefault(task.actor, {"queued": 0, "delayed": 0, "running": 0})
                row[task.state] += 1
        assert views.depth(self.machine) == scanned

    @invariant()
    def queue_counts_are_exact(self) -> None:
        for actor in ACTORS:
            queued = sum(1 for t in self.machine.tasks.values() if t.actor == actor and t.state == TaskState.QUEUED)
            assert self.machine.queued_count.get(actor, 0) == queued

    @invariant()
    def dead_letters_are_failed_tasks(self) -> None:
        for task_id in self.machine.dlq:
            assert self.machine.tasks[task_id].state == TaskState.FAILED
        for task in self.machine.tasks.values():
            if task.state == TaskState.FAILED:
                assert task.id in self.machine.dlq

    @invariant()
    def exhausted_retries_end_in_the_dlq(self) -> None:
        for task in self.machine.tasks.values():
            retries = self.machine.actors[task.actor]["retries"]
            assert task.failures <= retries

    @invariant()
    def idempotency_keys_point_at_kept_tasks(self) -> None:
        for key, task_id in self.machine.idempotency.items():
            assert self.machine.tasks[task_id].idempotency_key == key

    @invariant()
    def expired_tasks_never_ran(self) -> None:
        for task in self.machine.tasks.values():
            if task.state == TaskState.EXPIRED:
                assert task.attempt == 0

    @invariant()
    def rate_limit_never_exceeded(self) -> None:
        for i, start in enumerate(self.starts):
            inside = [s for s in self.starts[i:] if s <= start + RATE_PERIOD]
            assert len(inside) <= RATE_N, f"{len(inside)} starts within {RATE_PERIOD} s"

    @invariant()
    def a_stalled_actor_really_cannot_start_anything(self) -> None:
        """has_ready() says False only when a dispatch could not lease anything (no lost wake-ups)."""
        if not views.has_ready(self.machine, ["c"], self.now) and self.machine.queued_count.get("c"):
            probe = copy.deepcopy(self.machine)
            payload = C.pack_batch(1, self.now, [C.Dispatch([C.Offer("probe", ["c"], 1)])])
            assert not any(isinstance(e, Leased) for e in probe.apply_batch(payload).effects()[0])

    @invariant()
    def cron_fires_each_scheduled_time_once_or_counts_it_missed(self) -> None:
        if not hasattr(self, "fired"):
            return  # the entry is being set up
        entry = self.machine.cron.entries["every7"]
        # "*/7" in the seconds field: seconds 0, 7, ..., 56 of every minute
        scheduled = [t for t in range(int(self.cron_since) + 1, int(self.now) + 1) if t % 60 % 7 == 0]
        assert all(t in scheduled for t in self.fired), "fired at a time that is not scheduled"
        assert len(self.fired) + entry.missed == len(scheduled), (self.fired, entry.missed, scheduled)
        assert entry.next_fire > self.now and entry.next_fire % 60 % 7 == 0

    @invariant()
    def replicas_agree(self) -> None:
        """The replica in another process, with another hash seed, holds the same state."""
        assert self.replica.digests() == (state_digest(self.machine), self.machine.digest)


QueueRules.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestQueueRules = QueueRules.TestCase
