"""What the state machine replicates, and the one way a task changes state.

`TaskStore` holds every replicated structure: the tasks, the queue, heap and counter of each state,
leases, limits, schedules. `_move` is the only place a task's state changes: it checks the move
against transitions.MOVES and keeps the per-state counters; `_enqueue`, `_delay`, `_lease` and
`_terminate` also keep the structures of the state they enter. `_take_next` picks the task a free
slot gets. The commands that drive all this are in machine.py, the read-only queries in views.py.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from .. import defaults
from ..protocol import RunTask
from .cron import CronTable
from .lanes import ActorQueue, lane_of
from .limits import INFINITY, Cap, FlowState, Rate, caps_from_wire, rates_from_wire
from .model import NO_ARGS, NO_KWARGS, Effect, Finished, HistoryEvent, Lease, Leased, Task, TaskError, TaskState
from .tallies import Tallies
from .transitions import MOVES, IllegalMove

DEFAULT_OPTIONS: dict[str, Any] = {
    "missed": "run",
    "retries": defaults.RETRIES,
    "timeout": defaults.TASK_TIMEOUT,
    "result_ttl": defaults.RESULT_TTL,
    "max_worker_losses": defaults.MAX_WORKER_LOSSES,
}

# A heap is compacted when its dead entries (of tasks that left the state or time it was pushed
# for) outnumber its live ones and this: each entry is then copied at most once per entry that
# died since the last compaction (amortised O(1)), memory is at most twice the live entries, and
# small heaps are left alone. The counts that decide it are replicated state, so every replica
# compacts at the same batch, and the heaps stay equal (their digest says so).
COMPACT_MIN = 64


class TaskStore:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        # Per actor with QUEUED tasks, the heaps of (-priority, order, id) of them, one per lane.
        # Entries of tasks that left the queue another way (cancel, purge) stay behind and are
        # skipped when they surface, until they outnumber the live ones (COMPACT_MIN); an actor's
        # queue goes when it has no QUEUED task left (so one-off actor names leave nothing).
        self.queues: dict[str, ActorQueue] = {}
        # actor -> number of QUEUED tasks (no zeros): the keys are the actors with queued work,
        # kept by `_move`, so the leader's look after each commit (views.ready_actors) walks
        # those, not every actor ever seen.
        self.queued_count: dict[str, int] = {}
        self.delay_heap: list[tuple[float, int, str]] = []  # (eta, order, id) of DELAYED tasks (and stale ones)
        self.delayed_count: dict[str, int] = {}  # actor -> number of DELAYED tasks (no zeros)
        self.delayed_total = 0  # DELAYED tasks: the live entries of delay_heap (one each)
        self.flow = FlowState()  # rate windows and running counts (RUNNING tasks), per actor and key value
        # actor -> leader time before which no queued task of it may start (inf: until a lease
        # ends or work arrives), so that an idle dispatch loop does not spin on blocked work
        self.blocked_until: dict[str, float] = {}
        self.overrides: dict[str, dict[str, Any]] = {}  # operators' limits, winning until reset
        self.paused: dict[str, None] = {}  # actors whose queued tasks do not start
        self.cron = CronTable()
        self.tallies = Tallies()  # per actor: what the log did (the metrics' counters)
        # "rule\x1factor" -> {rule, actor, since, value, text} of each alert firing (coordinator/alerting.py)
        self.alerts: dict[str, dict[str, Any]] = {}
        # (expires_at, id) of finished tasks. Not compacted: an entry dies only when it is popped
        # (a finished task with one leaves `tasks` only here; dead letters, which go otherwise,
        # have none), so it holds no dead entries.
        self.expiry: list[tuple[float, str]] = []
        self.leases: dict[str, dict[str, None]] = {}  # worker -> ordered set of task ids it runs
        self.dlq: dict[str, float] = {}  # task id -> when it died, oldest first
        self.start_deadlines: list[tuple[float, str]] = []  # (start_by, id) of tasks that may expire
        # Tasks whose start_deadlines entry can still expire them (QUEUED or DELAYED, never leased):
        # its live entries (one each).
        self.deadlines_live = 0
        self.idempotency: dict[str, str] = {}  # "actor\0key" -> the task id it stands for
        self.actors: dict[str, dict[str, Any]] = {}  # registered options per actor
        self.registered_by: dict[str, float] = {}  # actor -> start time of the worker whose options are in force
        self.nodes: dict[str, str] = {}  # raft address -> client URL of each coordinator node
        # Operation id -> what it did (n, ids), of the latest MAX_OPS operators' changes that carry
        # one: a resent `dlq_purge --all` must not purge letters that died since the first.
        self.ops: dict[str, tuple[int, list[str]]] = {}
        self.order = 0
        self.now = 0.0  # the newest leader timestamp applied
        self.term = 0  # the highest term of any batch applied
        self.batch_term = 0  # the term of the batch being applied
        self.applied = 0  # batches applied
        self.digest = ""  # hex chain hash of every batch applied, to compare replicas
        # Set while a `checkpoint` command's batch applies: (this batch, the leader's mark, its digest)
        self.checkpoint: tuple[int, int, str] | None = None
        # Not state: while the replication layer asks for them (task history, history/), what
        # happened to tasks in the batch being applied, as (task id, event, leader time, attempt,
        # worker, detail); None when nobody listens (then nothing is recorded).
        self.journal: list[HistoryEvent] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        """From a snapshot: a field this version added and the snapshot lacks starts as new, or
        is counted from what the snapshot holds. The heaps are not rebuilt here. (Replicas of
        different versions may still decide differently from the same log: docs/reliability.md,
        "Upgrades".)"""
        self.__init__()  # type: ignore[misc]
        self.__dict__.update(state)
        if "tallies" not in state:  # written before the counters existed: they start at 0
            self.tallies = Tallies()
        if "delayed_total" not in state:  # written before the heaps were compacted
            self.delayed_total = sum(self.delayed_count.values())
            self.deadlines_live = sum(1 for t in self.tasks.values() if self._holds_deadline(t))
            for actor in [a for a in self.queues if a not in self.queued_count]:
                del self.queues[actor]
            for actor in [a for a in self.blocked_until if a not in self.queued_count]:
                del self.blocked_until[actor]
        sample = next(iter(self.tasks.values()), None)
        if sample is not None and not hasattr(sample, "trace"):  # written before tasks carried one
            for task in self.tasks.values():
                task.trace = None

    # -- compaction ---------------------------------------------------------------------------

    def _holds_deadline(self, task: Task) -> bool:
        """Whether `task`'s entry in start_deadlines may still expire it."""
        return bool(task.start_by) and task.attempt == 0 and task.state in (TaskState.QUEUED, TaskState.DELAYED)

    def _live_delay(self, entry: tuple[float, int, str]) -> bool:
        task = self.tasks.get(entry[2])
        return task is not None and task.state == TaskState.DELAYED and task.eta == entry[0]

    def _live_deadline(self, entry: tuple[float, str]) -> bool:
        task = self.tasks.get(entry[1])
        return task is not None and task.start_by == entry[0] and self._holds_deadline(task)

    def _compact(self) -> None:
        """Rebuild a heap whose dead entries outnumber its live ones (COMPACT_MIN); called after
        each batch. A task holds one live entry in each heap of a state it is in, so the dead are
        the rest. The filter keeps one entry per task (an id used again after its task was
        forgotten could match an old entry too)."""
        if len(self.delay_heap) - self.delayed_total > max(self.delayed_total, COMPACT_MIN):
            self.delay_heap = _rebuilt(self.delay_heap, self._live_delay, 2)
        if len(self.start_deadlines) - self.deadlines_live > max(self.deadlines_live, COMPACT_MIN):
            self.start_deadlines = _rebuilt(self.start_deadlines, self._live_deadline, 1)

    # -- what happened, for the history -------------------------------------------------------

    def _note(self, task: Task, event: str, worker: str = "", detail: Any = None) -> None:
        """Record an event of `task` in the batch's journal, when one is kept (history/events.py
        lists the events and their details)."""
        if self.journal is not None:
            self.journal.append((task.id, event, self.now, task.attempt, worker, detail))

    # -- moves between states ---------------------------------------------------------------

    def _move(self, task: Task, state: str) -> None:
        """The one place a task's state changes: refuse a move MOVES lacks (before changing
        anything), and keep the per-state counters. RUNNING is counted by `flow`, per lease."""
        old = task.state
        if state not in MOVES[old]:
            raise IllegalMove(task.id, old, state)
        actor = task.actor
        if self._holds_deadline(task) and state not in (TaskState.QUEUED, TaskState.DELAYED):
            self.deadlines_live -= 1  # leased (attempt 0 -> 1) or ended: its deadline is dead
        if old == TaskState.QUEUED:
            left = _uncount(self.queued_count, actor)
            queue = self.queues.get(actor)
            if not left:  # what its queue still holds is stale: the actor leaves no entry behind
                self.queues.pop(actor, None)
                self.blocked_until.pop(actor, None)
            elif state != TaskState.RUNNING and queue is not None \
                    and queue.size - left > max(left, COMPACT_MIN):  # (a lease took its entry)
                queue.compact(self._is_queued)
        elif old == TaskState.DELAYED:
            _uncount(self.delayed_count, actor)
            self.delayed_total -= 1
        if state == TaskState.QUEUED:
            self.queued_count[actor] = self.queued_count.get(actor, 0) + 1
        elif state == TaskState.DELAYED:
            self.delayed_count[actor] = self.delayed_count.get(actor, 0) + 1
            self.delayed_total += 1
        task.state = state

    def _enqueue(self, task: Task, keep_order: bool = False) -> None:
        self._move(task, TaskState.QUEUED)
        if not keep_order:
            self.order += 1
            task.order = self.order
        queue = self.queues.get(task.actor)
        if queue is None:
            queue = self.queues[task.actor] = ActorQueue()
        queue.push(lane_of(task.keys), (-task.priority, task.order, task.id))
        self.blocked_until.pop(task.actor, None)  # it may be permitted where the others were not

    def _delay(self, task: Task, eta: float) -> None:
        self._move(task, TaskState.DELAYED)
        task.eta = eta
        self.order += 1
        heapq.heappush(self.delay_heap, (eta, self.order, task.id))

    def _lease(self, task: Task, worker: str, effects: list[Effect]) -> None:
        self._move(task, TaskState.RUNNING)
        task.attempt += 1
        task.lease = Lease(worker, task.attempt, self.term, self.now)
        task.started_at = self.now
        task.leased_in = self.applied
        rates, caps = self.limits(task.actor, task.keys)
        task.counted = self.flow.start(task.actor, task.keys, rates, caps, self.now)
        tally = self.tallies.of(task.actor)
        tally.started += 1
        if task.keys:
            self.tallies.count_keys(task.keys, "started")
        tally.waited(self.now - max(task.submitted_at, task.eta))  # since it was due (a requeue: earlier)
        self.leases.setdefault(worker, {})[task.id] = None
        effects.append(Leased(worker, self.run_task(task)))
        self._note(task, "leased", worker)

    def run_task(self, task: Task, granting: int | None = None) -> RunTask:
        """What a worker is sent to run a leased task (again, when the leader reconciles); with
        `granting`, the `run` of the lease a leader in that term grants it next (a `grant`)."""
        term = task.lease.term if task.lease is not None else self.term
        attempt = task.attempt
        if granting is not None:
            term, attempt = granting, attempt + 1
        run = RunTask(task.id, task.actor, task.args, task.kwargs, attempt, self.option(task, "timeout"), term)
        if task.trace:
            run.trace, run.queued_at = task.trace, max(task.submitted_at, task.eta)
        return run

    def _release(self, task: Task) -> None:
        """End a RUNNING task's lease (its state moves next): its concurrency units come free."""
        assert task.lease is not None
        self.flow.release(task.counted)
        task.counted = ()
        self.blocked_until.pop(task.actor, None)  # a concurrency unit came free
        held = self.leases.get(task.lease.worker)
        if held is not None:
            held.pop(task.id, None)
            if not held:
                del self.leases[task.lease.worker]
        task.lease = None

    def _terminate(self, task: Task, state: str, effects: list[Effect], result: Any = None,
                   error: TaskError | None = None) -> None:
        self._move(task, state)
        task.result = result
        task.error = error
        task.finished_at = self.now
        effects.append(Finished(task.id, task.summary()))
        self._note(task, _ENDED[state], "", result if error is None else error)
        if state == TaskState.FAILED:
            self.dlq[task.id] = self.now  # kept by the DLQ's bounds, not by result_ttl
            return
        task.args, task.kwargs, task.keys = NO_ARGS, NO_KWARGS, NO_KWARGS  # only a dead letter runs again
        ttl = self.option(task, "result_ttl")
        if ttl <= 0:
            self._forget(task)
            return
        task.expires_at = self.now + ttl
        heapq.heappush(self.expiry, (task.expires_at, task.id))

    def _expire(self, task: Task, effects: list[Effect]) -> None:
        """Not started before its `expires` time: it never runs."""
        error = TaskError("expired", "not started before its expiry time")
        self._terminate(task, TaskState.EXPIRED, effects, error=error)

    def _forget(self, task: Task) -> None:
        """Drop a finished task's record; its id and idempotency key may then be used again."""
        del self.tasks[task.id]
        if task.idempotency_key and self.idempotency.get(task.idempotency_key) == task.id:
            del self.idempotency[task.idempotency_key]

    # -- options and limits -----------------------------------------------------------------

    def option(self, task: Task, name: str) -> Any:
        return self.actors.get(task.actor, DEFAULT_OPTIONS).get(name, DEFAULT_OPTIONS[name])

    def limits(self, actor: str, keys: dict[str, Any] | None = None) -> tuple[list[Rate], list[Cap]]:
        """The limits a task of `actor` with `keys` meets: an operator's override of each list, else
        what its workers registered; a keyed rate may have its own figures for one key value."""
        registered = self.actors.get(actor) or {}
        override = self.overrides.get(actor) or {}
        rates = rates_from_wire(override.get("rate_limits", registered.get("rate_limits")))
        caps = caps_from_wire(override.get("concurrency", registered.get("concurrency")))
        if "rate" in override:
            rates = [r for r in rates if r.key] + [Rate(int(override["rate"][0]), float(override["rate"][1]))]
        if "cap" in override:
            caps = [c for c in caps if c.key] + [Cap(int(override["cap"]))]
        key_rates = override.get("key_rates")
        if key_rates and keys:
            for i, rate in enumerate(rates):
                own = key_rates.get(keys.get(rate.key)) if rate.key else None
                if own is not None:
                    rates[i] = Rate(int(own[0]), float(own[1]), rate.key)
        return rates, caps

    def unlimited(self, actor: str) -> bool:
        """Whether `actor`'s tasks may start on a lease the leader grants before it commits (`grant`):
        no rate or concurrency limit, no weighted lane, not paused; a start promises nothing more."""
        if actor in self.paused:
            return False
        registered, override = self.actors.get(actor) or {}, self.overrides.get(actor) or {}
        if registered.get("weights") or override.get("weights"):
            return False
        rates, caps = self.limits(actor)
        return not rates and not caps

    # -- choosing the next task -------------------------------------------------------------

    def _take_next(self, actors: list[str]) -> Task | None:
        """Take the next task for a slot serving `actors` off its queue (it is still QUEUED: the
        caller leases it): permitted by its limits, then by priority, then round-robin between
        lanes (lanes.py); across actors, higher priority, then older."""
        best: tuple[tuple[int, int, str], str, str] | None = None  # (entry, actor, lane)
        for actor in actors:
            found = self._candidate(actor)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], actor, found[1])
        if best is None:
            return None
        entry, actor, lane = best
        self.queues[actor].take(lane, self._weight(actor, self.tasks[entry[2]].keys))
        return self.tasks[entry[2]]

    def _candidate(self, actor: str) -> tuple[tuple[int, int, str], str] | None:
        queue = self.queues.get(actor)
        if queue is None or not self.queued_count.get(actor) or self.blocked_until.get(actor, 0.0) > self.now \
                or actor in self.paused:
            return None
        found: tuple[tuple[int, int, str], str] | None = None
        wait = INFINITY
        for lane, head in queue.heads(self._is_queued):
            if found is not None and head[0] >= found[0][0]:
                continue  # not a higher priority than the lane already chosen
            task = self.tasks[head[2]]
            rates, caps = self.limits(actor, task.keys)
            until = self.flow.blocked_until(actor, task.keys, rates, caps, self.now) if rates or caps else 0.0
            if until:
                wait = min(wait, until)
                if until != INFINITY:  # a rate held it back (a concurrency cap waits for a release)
                    self.tallies.of(actor).rate_limited += 1
                continue
            found = (head, lane)
            if not queue.prioritised:
                break  # all of priority 0: the first permitted lane in the round is the one
        if found is None:
            self.blocked_until[actor] = wait  # nothing can start before then (inf: before a release)
        return found

    def _weight(self, actor: str, keys: dict[str, Any]) -> int:
        """Tasks per round-robin turn of the lane of `keys`: the weight of its first weighted value."""
        weights = {**dict((self.actors.get(actor) or {}).get("weights", [])),
                   **dict((self.overrides.get(actor) or {}).get("weights", []))}
        for name in sorted(keys):
            if keys[name] in weights:
                return int(weights[keys[name]])
        return 1

    def _is_queued(self, entry: tuple[int, int, str]) -> bool:
        task = self.tasks.get(entry[2])
        return task is not None and task.state == TaskState.QUEUED and task.order == entry[1]


# The history's name for each end: a task that ends failed goes to the dead-letter queue.
_ENDED = {TaskState.SUCCEEDED: "succeeded", TaskState.FAILED: "dead", TaskState.CANCELLED: "cancelled",
          TaskState.EXPIRED: "expired"}


def _uncount(counts: dict[str, int], actor: str) -> int:
    """One task fewer of `actor`; how many are left."""
    left = counts[actor] - 1
    if left:
        counts[actor] = left
    else:
        del counts[actor]  # no zeros: the keys are the actors with such tasks
    return left


def _rebuilt(heap: list[Any], live: Callable[[Any], bool], id_at: int) -> list[Any]:
    """The live entries of `heap`, one per task id (the first in list order), as a new heap."""
    seen: set[str] = set()
    kept = []
    for entry in heap:
        if entry[id_at] not in seen and live(entry):
            seen.add(entry[id_at])
            kept.append(entry)
    heapq.heapify(kept)
    return kept
