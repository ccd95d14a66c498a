"""The replicated state machine: every queue rule of qrt, pure and deterministic.

``apply_batch(payload) -> effects``. No clock (the leader's timestamp is in the batch), no I/O,
no unseeded randomness, no iteration over hash-ordered sets: every replica that applies the same
batches holds the same state, which the running ``digest`` lets tests compare across nodes.
``apply_batch`` is total: a command that raises is recorded as failed and the batch goes on, since
an exception inside a replicated method would wedge every pysyncobj node.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import sys
from collections.abc import Callable
from typing import Any

from .. import defaults
from . import commands as C
from .backoff import backoff_delay
from .lanes import ActorQueue, lane_of
from .limits import INFINITY, Cap, FlowState, Rate, caps_from_wire, rates_from_wire
from .model import (
    NO_ARGS,
    NO_KWARGS,
    Accepted,
    CancelRunning,
    Count,
    Effect,
    Finished,
    Lease,
    Leased,
    Requeued,
    Retrying,
    Task,
    TaskError,
    TaskState,
)
from .schedules import ON_TIME_GRACE, CronEntry, CronTable

log = logging.getLogger("qrt.state")

# Idle per-key rate windows are swept every this many batches (bounded memory, cheap on average).
SWEEP_EVERY = 1024

DEFAULT_OPTIONS: dict[str, Any] = {
    "missed": "run",
    "retries": defaults.RETRIES,
    "timeout": defaults.TASK_TIMEOUT,
    "result_ttl": defaults.RESULT_TTL,
    "max_worker_losses": defaults.MAX_WORKER_LOSSES,
}


class StateMachine:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        # Per actor, a heap of (-priority, order, id) of QUEUED tasks. Entries of tasks that left
        # the queue another way (cancel, purge) stay behind and are skipped when they surface.
        self.ready: dict[str, ActorQueue] = {}
        self.queued: dict[str, int] = {}  # actor -> number of QUEUED tasks (exact)
        self.waiting: dict[str, int] = {}  # actor -> number of DELAYED tasks (exact)
        self.flow = FlowState()  # rate windows and running counts, per actor and per key value
        # actor -> leader time before which no queued task of it may start (inf: until a lease
        # ends or work arrives), so that an idle dispatch loop does not spin on blocked work
        self.stalled: dict[str, float] = {}
        self.overrides: dict[str, dict[str, Any]] = {}  # operators' limits, winning until reset
        self.paused: dict[str, None] = {}  # actors whose queued tasks do not start
        self.cron = CronTable()
        self.delayed: list[tuple[float, int, str]] = []  # (eta, order, id) of DELAYED tasks
        self.expiry: list[tuple[float, str]] = []  # (expires_at, id) of finished tasks
        self.leases: dict[str, dict[str, None]] = {}  # worker -> ordered set of task ids it runs
        self.dlq: dict[str, float] = {}  # task id -> when it died, oldest first
        self.start_deadlines: list[tuple[float, str]] = []  # (start_by, id) of tasks that may expire
        self.idempotency: dict[str, str] = {}  # "actor\0key" -> the task id it stands for
        self.actors: dict[str, dict[str, Any]] = {}  # registered options per actor
        self.nodes: dict[str, str] = {}  # raft address -> client URL of each coordinator node
        self.order = 0
        self.now = 0.0  # the newest leader timestamp applied
        self.term = 0
        self.applied = 0  # batches applied
        self.digest = ""  # hex chain hash of every batch applied, to compare replicas

    # -- applying ---------------------------------------------------------------------------

    def apply_batch(self, payload: bytes) -> list[list[Effect]]:
        """Apply one batch; returns the effects of the passage of time, then those of each command."""
        self.applied += 1
        self.digest = hashlib.blake2b(self.digest.encode() + payload, digest_size=16).hexdigest()
        try:
            term, timestamp, cmds = C.unpack_batch(payload)
        except Exception:  # cannot happen for batches we built; never let it wedge Raft
            log.exception("unreadable batch ignored")
            return []
        self.term = max(self.term, term)
        self.now = max(self.now, float(timestamp))  # time never goes backwards across leaders
        out: list[list[Effect]] = [[]]
        try:
            self._advance(out[0])
        except Exception:  # as for commands: never let one bug wedge every replica
            log.exception("advancing time failed; the batch's commands still apply")
        for cmd in cmds:
            effects: list[Effect] = []
            try:
                self._handlers[cmd[0]](self, cmd, effects)
            except Exception:
                log.exception("command %r failed; state keeps what it did before the error", cmd[:1])
            out.append(effects)
        return out

    def _advance(self, effects: list[Effect]) -> None:
        """Let time pass: due delayed tasks join their queue; old results and dead letters go."""
        now = self.now
        for fire in self.cron.due(now, lambda actor: self.actors.get(actor, DEFAULT_OPTIONS).get("missed", "run")):
            entry = fire.entry
            self._accept({"id": fire.task_id, "actor": entry.actor, "args": entry.args, "kwargs": entry.kwargs},
                         effects)
        while self.delayed and self.delayed[0][0] <= now:
            eta, _, task_id = heapq.heappop(self.delayed)
            task = self.tasks.get(task_id)
            if task is not None and task.state == TaskState.DELAYED and task.eta == eta:
                if now - eta > ON_TIME_GRACE and task.attempt == 0 and self._option(task, "missed") == "skip":
                    task.start_by = eta  # due while no leader ran, and its actor skips such tasks
                    self._expire(task, effects)
                else:
                    self._enqueue(task)
        while self.start_deadlines and self.start_deadlines[0][0] <= now:
            _, task_id = heapq.heappop(self.start_deadlines)
            task = self.tasks.get(task_id)
            if task is not None and task.state in (TaskState.QUEUED, TaskState.DELAYED) and task.attempt == 0:
                self._expire(task, effects)
        while self.expiry and self.expiry[0][0] <= now:
            at, task_id = heapq.heappop(self.expiry)
            task = self.tasks.get(task_id)
            if task is not None and task.expires_at == at and task.state in TaskState.TERMINAL \
                    and task_id not in self.dlq:
                self._forget(task)
        if self.applied % SWEEP_EVERY == 0:
            periods = [r.period for actor in set(self.actors) | set(self.overrides) for r in self._limits(actor)[0]]
            periods += [float(p) for o in self.overrides.values() for _, p in o.get("key_rates", {}).values()]
            self.flow.sweep(now, max(periods, default=0.0))
        while self.dlq:
            oldest_id, died_at = next(iter(self.dlq.items()))
            if len(self.dlq) <= defaults.DLQ_MAX_ENTRIES and died_at + defaults.DLQ_MAX_AGE > now:
                break
            del self.dlq[oldest_id]
            self._forget(self.tasks[oldest_id])

    # -- commands ---------------------------------------------------------------------------

    def _submit(self, cmd: C.Command, effects: list[Effect]) -> None:
        effects.append(Accepted([self._accept(env, effects) for env in cmd[1]]))

    def _accept(self, env: dict[str, Any], effects: list[Effect]) -> str:
        """Create the task of an envelope (unless its id or idempotency key exists); its id."""
        task_id: str = env["id"]
        key = env.get("idempotency_key")
        scoped_key = f"{env['actor']}\0{key}" if key else ""
        if scoped_key in self.idempotency:
            task_id = self.idempotency[scoped_key]  # the first task with this key stands
        if task_id in self.tasks:
            return task_id  # a retried submit: the id is the idempotency key
        self.order += 1
        task = Task(
            id=task_id, actor=sys.intern(env["actor"]), args=env.get("args") or NO_ARGS,
            kwargs=env.get("kwargs") or NO_KWARGS, keys=env.get("keys") or NO_KWARGS,
            priority=env.get("priority", 0), order=self.order, state=TaskState.NEW,
            submitted_at=self.now, idempotency_key=scoped_key,
        )
        self.tasks[task_id] = task
        if scoped_key:
            self.idempotency[scoped_key] = task_id
        start_by = env.get("expires_at") or (self.now + env["expires_in"] if env.get("expires_in") else 0.0)
        if start_by:
            task.start_by = start_by
            heapq.heappush(self.start_deadlines, (start_by, task_id))
        due = env["eta"] if env.get("eta") else self.now + env.get("delay", 0.0)
        if start_by and start_by <= self.now:
            self._expire(task, effects)
        elif due > self.now:
            self._delay(task, due)
        else:
            self._enqueue(task)
        return task_id

    def _dispatch(self, cmd: C.Command, effects: list[Effect]) -> None:
        # One task per offer per turn, in the offers' order (least loaded first): a batch of ready
        # tasks is spread over the workers rather than filling the first one's slots.
        offers = [[worker, actors, n] for worker, actors, n in cmd[1] if n > 0]
        while offers:
            still = []
            for offer in offers:
                task = self._pop_ready(offer[1])
                if task is None:
                    continue  # nothing left that this worker runs
                self._lease(task, offer[0], effects)
                offer[2] -= 1
                if offer[2]:
                    still.append(offer)
            offers = still

    def _finish(self, cmd: C.Command, effects: list[Effect]) -> None:
        worker = cmd[1]
        for task_id, attempt, ok, value, error_type, message, tb, retry_delay, retryable in cmd[2]:
            task = self.tasks.get(task_id)
            if task is None or task.state != TaskState.RUNNING or task.lease is None \
                    or task.lease.worker != worker or task.attempt != attempt:
                continue  # stale: a lease that expired, or a report sent twice across a failover
            self._release(task)
            if ok:
                self._terminate(task, TaskState.SUCCEEDED, effects, result=value)
                continue
            error = TaskError(error_type or "Exception", message, tb)
            if task.cancel_requested:
                self._terminate(task, TaskState.CANCELLED, effects, error=error)
            elif not retryable or task.failures >= self._option(task, "retries"):
                self._terminate(task, TaskState.FAILED, effects, error=error)
            else:
                task.failures += 1
                delay = retry_delay if retry_delay is not None else backoff_delay(task.id, task.failures)
                task.error = error
                self._delay(task, self.now + delay)
                effects.append(Retrying(task.id, task.attempt, delay, error))

    def _lost(self, cmd: C.Command, effects: list[Effect]) -> None:
        worker, only, counts = cmd[1], cmd[2], cmd[3]
        held = self.leases.get(worker, {})
        wanted = list(held) if only is None else [tid for tid, att in only
                                                   if tid in held and self.tasks[tid].attempt == att]
        for task_id in wanted:
            task = self.tasks[task_id]
            self._release(task)
            if task.cancel_requested:
                self._terminate(task, TaskState.CANCELLED, effects)
                continue
            task.losses += 1 if counts else 0
            if task.losses > self._option(task, "max_worker_losses"):
                error = TaskError("worker_lost", f"its worker was lost {task.losses} times while running it")
                self._terminate(task, TaskState.FAILED, effects, error=error)
            else:
                self._enqueue(task, keep_order=True)
                effects.append(Requeued(task.id, worker))

    def _cancel(self, cmd: C.Command, effects: list[Effect]) -> None:
        task = self.tasks.get(cmd[1])
        if task is None or task.state in TaskState.TERMINAL:
            effects.append(Count(0))
            return
        if task.state == TaskState.RUNNING:
            assert task.lease is not None
            task.cancel_requested = True
            effects.append(CancelRunning(task.lease.worker, task.id))
        else:
            if task.state == TaskState.QUEUED:
                self.queued[task.actor] -= 1
            self._terminate(task, TaskState.CANCELLED, effects)
        effects.append(Count(1, [task.id]))

    def _register_actors(self, cmd: C.Command, effects: list[Effect]) -> None:
        for name, options in cmd[1].items():
            self.actors[name] = options
            declared = self.cron.entries.get(name)
            if options.get("cron"):
                self.cron.put(CronEntry(name, name, options["cron"], options.get("tz", "UTC"), [], {}, "actor"),
                              self.now)
            elif declared is not None and declared.source == "actor":
                self.cron.remove(name)  # the actor no longer declares a schedule

    def _cron_add(self, cmd: C.Command, effects: list[Effect]) -> None:
        _, name, actor, expr, tz, args, kwargs = cmd
        existing = self.cron.entries.get(name)
        if existing is not None and existing.source == "actor":
            effects.append(Count(0))  # an actor's own schedule: its workers' hello would put it back
            return
        self.cron.put(CronEntry(name, actor, expr, tz, args, kwargs, "operator"), self.now)
        effects.append(Count(1))

    def _cron_remove(self, cmd: C.Command, effects: list[Effect]) -> None:
        effects.append(Count(int(self.cron.remove(cmd[1]))))

    def _register_node(self, cmd: C.Command, effects: list[Effect]) -> None:
        self.nodes[cmd[1]] = cmd[2]

    def _dlq_replay(self, cmd: C.Command, effects: list[Effect]) -> None:
        ids = list(self.dlq) if cmd[1] is None else [i for i in cmd[1] if i in self.dlq]
        for task_id in ids:
            del self.dlq[task_id]
            task = self.tasks[task_id]
            task.failures = task.losses = 0
            task.error = task.result = None
            task.finished_at = task.expires_at = 0.0
            self.order += 1
            task.order = self.order
            self._enqueue(task)
        effects.append(Count(len(ids), ids))

    def _dlq_purge(self, cmd: C.Command, effects: list[Effect]) -> None:
        ids = list(self.dlq) if cmd[1] is None else [i for i in cmd[1] if i in self.dlq]
        for task_id in ids:
            del self.dlq[task_id]
            self._forget(self.tasks[task_id])
        effects.append(Count(len(ids), ids))

    def _tick(self, cmd: C.Command, effects: list[Effect]) -> None:
        pass  # _advance has done the work

    def _set_limits(self, cmd: C.Command, effects: list[Effect]) -> None:
        _, actor, rates, caps, key_rate, rate, cap, weight = cmd
        override = self.overrides.setdefault(actor, {})
        if weight is not None:
            value, w = weight
            override["weights"] = [[v, n] for v, n in override.get("weights", []) if v != value] + [[value, w]]
        for name, value in (("rate_limits", rates), ("concurrency", caps), ("rate", rate), ("cap", cap)):
            if value is not None:
                override[name] = value
        if key_rate is not None:
            value, n, period = key_rate
            override.setdefault("key_rates", {})[value] = [n, period]
        self.stalled.pop(actor, None)
        effects.append(Count(1))

    def _pause(self, cmd: C.Command, effects: list[Effect]) -> None:
        actor, paused = cmd[1], cmd[2]
        changed = (actor in self.paused) != paused
        if paused:
            self.paused[actor] = None
        else:
            self.paused.pop(actor, None)
            self.stalled.pop(actor, None)
        effects.append(Count(int(changed)))

    def _purge_queue(self, cmd: C.Command, effects: list[Effect]) -> None:
        doomed = [t for t in self.tasks.values()
                  if t.actor == cmd[1] and t.state in (TaskState.QUEUED, TaskState.DELAYED)]
        for task in doomed:
            if task.state == TaskState.QUEUED:
                self.queued[task.actor] -= 1
            self._terminate(task, TaskState.CANCELLED, effects, error=TaskError("purged", "its queue was purged"))
        effects.append(Count(len(doomed)))

    def _reset_limits(self, cmd: C.Command, effects: list[Effect]) -> None:
        existed = self.overrides.pop(cmd[1], None) is not None
        self.stalled.pop(cmd[1], None)
        effects.append(Count(int(existed)))

    _handlers: dict[str, Callable[[StateMachine, C.Command, list[Effect]], None]] = {
        C.SUBMIT: _submit, C.DISPATCH: _dispatch, C.FINISH: _finish, C.LOST: _lost, C.CANCEL: _cancel,
        C.REGISTER_ACTORS: _register_actors, C.REGISTER_NODE: _register_node,
        C.DLQ_REPLAY: _dlq_replay, C.DLQ_PURGE: _dlq_purge, C.TICK: _tick,
        C.CRON_ADD: _cron_add, C.CRON_REMOVE: _cron_remove,
        C.SET_LIMITS: _set_limits, C.RESET_LIMITS: _reset_limits, C.PAUSE: _pause, C.PURGE_QUEUE: _purge_queue,
    }

    # -- transitions ------------------------------------------------------------------------

    def _forget(self, task: Task) -> None:
        """Drop a finished task's record; its id and idempotency key may then be used again."""
        del self.tasks[task.id]
        if task.idempotency_key and self.idempotency.get(task.idempotency_key) == task.id:
            del self.idempotency[task.idempotency_key]

    def _expire(self, task: Task, effects: list[Effect]) -> None:
        """Not started before its `expires` time: it never runs."""
        if task.state == TaskState.QUEUED:
            self.queued[task.actor] -= 1
        error = TaskError("expired", "not started before its expiry time")
        self._terminate(task, TaskState.EXPIRED, effects, error=error)

    def _option(self, task: Task, name: str) -> Any:
        return self.actors.get(task.actor, DEFAULT_OPTIONS).get(name, DEFAULT_OPTIONS[name])

    def _enqueue(self, task: Task, keep_order: bool = False) -> None:
        self._leave_delayed(task)
        if not keep_order:
            self.order += 1
            task.order = self.order
        task.state = TaskState.QUEUED
        queue = self.ready.get(task.actor)
        if queue is None:
            queue = self.ready[task.actor] = ActorQueue()
        queue.push(lane_of(task.keys), (-task.priority, task.order, task.id))
        self.queued[task.actor] = self.queued.get(task.actor, 0) + 1
        self.stalled.pop(task.actor, None)  # it may be permitted where the others were not

    def _delay(self, task: Task, eta: float) -> None:
        if task.state != TaskState.DELAYED:
            self.waiting[task.actor] = self.waiting.get(task.actor, 0) + 1
        task.state = TaskState.DELAYED
        task.eta = eta
        self.order += 1
        heapq.heappush(self.delayed, (eta, self.order, task.id))

    def _leave_delayed(self, task: Task) -> None:
        if task.state == TaskState.DELAYED:
            left = self.waiting[task.actor] - 1
            if left:
                self.waiting[task.actor] = left
            else:
                del self.waiting[task.actor]

    def _pop_ready(self, actors: list[str]) -> Task | None:
        """The next task for a slot serving `actors`: permitted by its limits, then by priority,
        then round-robin between lanes (lanes.py); across actors, higher priority, then older."""
        best: tuple[tuple[int, int, str], str, str] | None = None  # (entry, actor, lane)
        for actor in actors:
            found = self._candidate(actor)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], actor, found[1])
        if best is None:
            return None
        entry, actor, lane = best
        self.ready[actor].take(lane, self._weight(actor, self.tasks[entry[2]].keys))
        self.queued[actor] -= 1
        return self.tasks[entry[2]]

    def _candidate(self, actor: str) -> tuple[tuple[int, int, str], str] | None:
        queue = self.ready.get(actor)
        if queue is None or not self.queued.get(actor) or self.stalled.get(actor, 0.0) > self.now \
                or actor in self.paused:
            return None
        found: tuple[tuple[int, int, str], str] | None = None
        wait = INFINITY
        for lane, head in queue.heads(self._is_queued):
            if found is not None and head[0] >= found[0][0]:
                continue  # not a higher priority than the lane already chosen
            task = self.tasks[head[2]]
            rates, caps = self._limits(actor, task.keys)
            until = self.flow.blocked_until(actor, task.keys, rates, caps, self.now) if rates or caps else 0.0
            if until:
                wait = min(wait, until)
                continue
            found = (head, lane)
            if not queue.prioritised:
                break  # all of priority 0: the first permitted lane in the round is the one
        if found is None:
            self.stalled[actor] = wait  # nothing can start before then (inf: before a release)
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

    def _limits(self, actor: str, keys: dict[str, Any] | None = None) -> tuple[list[Rate], list[Cap]]:
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

    def _lease(self, task: Task, worker: str, effects: list[Effect]) -> None:
        task.state = TaskState.RUNNING
        task.attempt += 1
        task.lease = Lease(worker, task.attempt, self.term, self.now)
        task.started_at = self.now
        task.leased_in = self.applied
        rates, caps = self._limits(task.actor, task.keys)
        task.counted = self.flow.start(task.actor, task.keys, rates, caps, self.now)
        self.leases.setdefault(worker, {})[task.id] = None
        effects.append(Leased(worker, {
            "id": task.id, "actor": task.actor, "args": task.args, "kwargs": task.kwargs,
            "attempt": task.attempt, "timeout": self._option(task, "timeout"), "term": self.term,
        }))

    def _release(self, task: Task) -> None:
        assert task.lease is not None
        self.flow.release(task.counted)
        task.counted = ()
        self.stalled.pop(task.actor, None)  # a concurrency unit came free
        held = self.leases.get(task.lease.worker)
        if held is not None:
            held.pop(task.id, None)
            if not held:
                del self.leases[task.lease.worker]
        task.lease = None

    def _terminate(self, task: Task, state: str, effects: list[Effect], result: Any = None,
                   error: TaskError | None = None) -> None:
        self._leave_delayed(task)
        task.state = state
        task.result = result
        task.error = error
        task.finished_at = self.now
        effects.append(Finished(task.id, task.summary()))
        if state == TaskState.FAILED:
            self.dlq[task.id] = self.now  # kept by the DLQ's bounds, not by result_ttl
            return
        task.args, task.kwargs, task.keys = NO_ARGS, NO_KWARGS, NO_KWARGS  # only a dead letter runs again
        ttl = self._option(task, "result_ttl")
        if ttl <= 0:
            self._forget(task)
            return
        task.expires_at = self.now + ttl
        heapq.heappush(self.expiry, (task.expires_at, task.id))

    # -- queries (the coordinator reads these under the replication lock) --------------------

    def has_ready(self, actors: list[str], now: float) -> bool:
        """Whether a dispatch for `actors` at leader time `now` could lease anything."""
        return any(self.queued.get(a, 0) > 0 and self.stalled.get(a, 0.0) <= now and a not in self.paused
                   for a in actors)

    def next_due(self) -> float | None:
        """When the earliest delayed task becomes due or queued task expires (may be early: stale entries)."""
        times = [heap[0][0] for heap in (self.delayed, self.start_deadlines) if heap]
        # Only stalls still ahead: a past one is lifted by the next dispatch (counting it would
        # have the leader propose empty ticks back to back: ~880 a second, measured).
        times += [t for a, t in self.stalled.items() if self.now < t != INFINITY and self.queued.get(a)]
        cron = self.cron.next_fire()
        if cron is not None:
            times.append(cron)
        return min(times) if times else None

    def next_expiry(self) -> float | None:
        return self.expiry[0][0] if self.expiry else None

    def leases_of(self, worker: str) -> list[tuple[str, int]]:
        return [(tid, self.tasks[tid].attempt) for tid in self.leases.get(worker, {})]

    def limits_view(self) -> dict[str, dict[str, Any]]:
        """Per actor with limits: what workers registered, the operator's override, and what holds."""
        out: dict[str, dict[str, Any]] = {}
        for actor in sorted(set(self.actors) | set(self.overrides) | set(self.paused)):
            rates, caps = self._limits(actor)
            registered = self.actors.get(actor) or {}
            out[actor] = {
                "rate_limits": [[r.n, r.period, r.key] for r in rates],
                "concurrency": [[c.n, c.key] for c in caps],
                "registered": {k: registered.get(k, []) for k in ("rate_limits", "concurrency")},
                "override": self.overrides.get(actor, {}),
                "running": self.flow.running.get((actor, "", None), 0),
                "paused": actor in self.paused,
            }
        return out

    def depth(self) -> dict[str, dict[str, int]]:
        """Per actor: queued, delayed and running counts, from counters (a scan of a million tasks
        under the apply lock took 300 ms, measured)."""
        running = {bucket[0]: n for bucket, n in self.flow.running.items() if not bucket[1]}
        actors = {a for a, n in self.queued.items() if n} | set(self.waiting) | set(running)
        return {actor: {"queued": self.queued.get(actor, 0), "delayed": self.waiting.get(actor, 0),
                        "running": running.get(actor, 0)} for actor in sorted(actors)}
