"""The leases a leader grants ahead of their commit (a `grant`), chosen as a dispatch would choose.

For an actor without limits (`StateMachine.unlimited`) a start promises nothing but "at least
once", so the leader need not wait for Raft before sending a `run`: it picks the next task itself
from the committed queues and proposes the lease as it sends it. If the entry never commits (the
leader is deposed), the task is still queued on the next leader: a duplicate at worst.

The pick is the one `_take_next` would make once the leader's grants in flight are applied: those
tasks left out (`Pending.taken`), and their lanes at the back of the round in the order they were
picked, as applying those grants puts them. Read under the replication lock; changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import chain

from ..protocol import Envelope
from .lanes import Entry, first, lane_of
from .model import NO_ARGS, NO_KWARGS, Task
from .store import TaskStore

# A task that may expire this soon is left to a dispatch, which expires or leases it at apply time.
EXPIRY_MARGIN = 1.0


@dataclass
class Pending:
    """The leader's grants proposed and not yet applied (in memory, not replicated)."""

    taken: dict[str, tuple[str, str]] = field(default_factory=dict)  # task id -> (actor, lane)
    # actor -> lane -> grants in flight from it; a lane's latest pick is last (the order of the round)
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, task: Task) -> None:
        lane = lane_of(task.keys)
        self.taken[task.id] = (task.actor, lane)
        lanes = self.lanes.setdefault(task.actor, {})
        lanes[lane] = lanes.pop(lane, 0) + 1

    def settle(self, task_id: str) -> None:
        """The grant of `task_id` was applied (or will never be)."""
        place = self.taken.pop(task_id, None)
        if place is None:
            return
        actor, lane = place
        lanes = self.lanes[actor]
        lanes[lane] -= 1
        if not lanes[lane]:
            del lanes[lane]
            if not lanes:
                del self.lanes[actor]


def pick(m: TaskStore, actors: list[str], pending: Pending, now: float,
         unsettled: Collection[str] = ()) -> Task | None:
    """The task a slot serving `actors` gets next, of those it may be granted ahead (not one of
    the `unsettled` tasks, which a command in flight may end); None: none (the slot is offered in a
    dispatch instead). The caller checked that each actor is unlimited."""
    best: tuple[Entry, str] | None = None
    for actor in actors:
        entry = _candidate(m, actor, pending, unsettled)
        if entry is not None and (best is None or entry < best[0]):
            best = (entry, actor)
    if best is None:
        return None
    task = m.tasks[best[0][2]]
    if task.start_by and task.start_by <= now + EXPIRY_MARGIN:
        return None
    return task


def plain(env: Envelope) -> bool:
    """Whether a submit of `env` surely queues it, last in its actor's only lane (see `fresh`)."""
    return not (env.delay or env.eta or env.expires_in or env.expires_at or env.idempotency_key or env.keys
                or env.priority)


def fresh(m: TaskStore, env: Envelope, now: float) -> Task | None:
    """The task a plain envelope's submit in flight will create, unless its id is taken."""
    if env.id in m.tasks:
        return None  # a retried submit: the task stands as it is
    task = Task(env.id, env.actor, env.args or NO_ARGS, env.kwargs or NO_KWARGS, NO_KWARGS, 0, 0, now)
    task.trace = env.trace
    return task


def _candidate(m: TaskStore, actor: str, pending: Pending, unsettled: Collection[str]) -> Entry | None:
    """As `TaskStore._candidate` for an unlimited actor: the first lane of the round with a task
    (of those with the best priority, when the queue holds priorities)."""
    queue = m.queues.get(actor)
    if queue is None or not m.queued_count.get(actor):
        return None
    taken = pending.taken

    def free(entry: Entry) -> bool:
        return entry[2] not in taken and m._is_queued(entry) and entry[2] not in unsettled

    in_flight = pending.lanes.get(actor, {})
    order = chain((lane for lane in queue.lanes if lane not in in_flight),
                  (lane for lane in in_flight if lane in queue.lanes))
    found: Entry | None = None
    for lane in order:
        entry = first(queue.lanes[lane], free)
        if entry is None or (found is not None and entry[0] >= found[0]):
            continue
        found = entry
        if not queue.prioritised:
            break
    return found
