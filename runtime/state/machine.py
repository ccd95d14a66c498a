"""The replicated state machine: every queue rule of qrt, pure and deterministic.

``apply_batch(payload) -> effects``. No clock (the leader's timestamp is in the batch), no I/O,
no unseeded randomness, no iteration over hash-ordered sets: every replica that applies the same
batches holds the same state: the running ``digest`` of the log, and the digest of the state at
each checkpoint (digest.py), let replicas be compared.
``apply_batch`` is total: a command that raises ends its effects with ``Internal`` and the batch
goes on, since an exception inside a replicated method would wedge every pysyncobj node.

This module says what each command does; store.py keeps the records and moves tasks between
states (transitions.py), views.py answers the coordinator's read-only questions.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import sys
from collections.abc import Callable
from typing import Any

from .. import defaults
from ..protocol import Envelope
from . import commands as C
from .backoff import backoff_delay
from .cron import ON_TIME_GRACE
from .lanes import lane_of
from .model import (
    NO_ARGS,
    NO_KWARGS,
    Accepted,
    Applied,
    CancelRunning,
    Count,
    Effect,
    Internal,
    Refused,
    Requeued,
    Retrying,
    Task,
    TaskError,
    TaskState,
)
from .store import DEFAULT_OPTIONS, TaskStore

log = logging.getLogger("qrt.state")

# Idle per-key rate windows are swept every this many batches (bounded memory, cheap on average).
SWEEP_EVERY = 1024
# Operators' changes remembered by operation id (a client resends within seconds; this is plenty),
# with the ids they touched when there are at most MAX_OP_IDS (a purge of 100,000 letters: the count).
MAX_OPS = 1000
MAX_OP_IDS = 100

Handler = Callable[[Any, Any, list[Effect]], None]  # (machine, command record, its effects)


class StateMachine(TaskStore):
    # -- applying ---------------------------------------------------------------------------

    def apply_batch(self, payload: bytes) -> Applied:
        """Apply one batch: the effects of the passage of time, and of each command by its ref."""
        self.applied += 1
        self.checkpoint = None
        self.digest = hashlib.blake2b(self.digest.encode() + payload, digest_size=16).hexdigest()
        applied = Applied([], {})
        try:
            term, timestamp, cmds, refs = C.unpack_batch(payload)
            if len(refs) != len(cmds) or not all(type(r) is int for r in refs):
                raise ValueError(f"{len(refs)} refs for {len(cmds)} commands, or refs that are not ints")
            self.batch_term = int(term)  # the term of the leader that decided this batch
            if self.batch_term >= self.term:  # a deposed leader's clock does not move time
                self.term = self.batch_term
                self.now = max(self.now, float(timestamp))  # time never goes backwards across leaders
        except Exception:  # cannot happen for batches we built; never let it wedge Raft
            log.exception("unreadable batch ignored")
            return applied
        try:
            self._advance(applied.time)
        except Exception as exc:  # as for commands: the batch's commands still apply
            self._failed("time passing", exc, applied.time)
        for ref, cmd in zip(refs, cmds, strict=True):
            effects: list[Effect] = []
            try:
                self._handlers[type(cmd)](self, cmd, effects)
            except Exception as exc:
                self._failed(cmd.kind if isinstance(cmd, C.Unreadable) else cmd.KIND, exc, effects)
            applied.by_ref[ref] = effects
        try:
            self._compact()
        except Exception as exc:  # as for time passing: never let it wedge Raft
            self._failed("compaction", exc, applied.time)
        return applied

    def _failed(self, what: str, exc: Exception, effects: list[Effect]) -> None:
        """A step of a batch raised: it keeps what it did before the error (every move is checked
        before it changes anything), and its effects end with Internal for whoever asked for it."""
        log.error("%s failed; state keeps what it did before the error", what, exc_info=exc)
        effects.append(Internal(what, f"the state machine failed to apply {what!r}: {type(exc).__name__}: {exc} "
                                      "(a bug in qrt, or a log written by another version; see the coordinator's log)"))

    def _advance(self, effects: list[Effect]) -> None:
        """Let time pass: due delayed tasks join their queue; old results and dead letters go."""
        now = self.now
        for fire in self.cron.due(now, lambda actor: self.actors.get(actor, DEFAULT_OPTIONS).get("missed", "run")):
            entry = fire.entry
            self._accept(Envelope(fire.task_id, entry.actor, entry.args, entry.kwargs), effects)
        while self.delay_heap and self.delay_heap[0][0] <= now:
            due = heapq.heappop(self.delay_heap)
            if self._live_delay(due):
                eta, ready = due[0], self.tasks[due[2]]
                if now - eta > ON_TIME_GRACE and ready.attempt == 0 and self.option(ready, "missed") == "skip":
                    self._expire(ready, effects)
                    ready.start_by = eta  # due while no leader ran, and its actor skips such tasks
                else:
                    self._enqueue(ready)
                    self._note(ready, "queued")
        while self.start_deadlines and self.start_deadlines[0][0] <= now:
            deadline = heapq.heappop(self.start_deadlines)
            if self._live_deadline(deadline):  # (not an old task's, whose id was used again)
                self._expire(self.tasks[deadline[1]], effects)
        while self.expiry and self.expiry[0][0] <= now:
            at, task_id = heapq.heappop(self.expiry)
            task = self.tasks.get(task_id)
            if task is not None and task.expires_at == at and task.state in TaskState.TERMINAL \
                    and task_id not in self.dlq:
                self._forget(task)
        if self.applied % SWEEP_EVERY == 0:
            periods = [r.period for actor in set(self.actors) | set(self.overrides) for r in self.limits(actor)[0]]
            periods += [float(p) for o in self.overrides.values() for _, p in o.get("key_rates", {}).values()]
            self.flow.sweep(now, max(periods, default=0.0))
        while self.dlq:
            oldest_id, died_at = next(iter(self.dlq.items()))
            if len(self.dlq) <= defaults.DLQ_MAX_ENTRIES and died_at + defaults.DLQ_MAX_AGE > now:
                break
            del self.dlq[oldest_id]
            self._note(self.tasks[oldest_id], "purged", detail="the dead-letter queue's bounds")
            self._forget(self.tasks[oldest_id])

    # -- clients' and workers' commands -----------------------------------------------------

    def _submit(self, cmd: C.Submit, effects: list[Effect]) -> None:
        effects.append(Accepted([self._accept(env, effects) for env in cmd.tasks]))

    def _accept(self, env: Envelope, effects: list[Effect]) -> str:
        """Create the task of an envelope (unless its id or idempotency key exists); its id."""
        task_id = env.id
        scoped_key = f"{env.actor}\0{env.idempotency_key}" if env.idempotency_key else ""
        if scoped_key in self.idempotency:
            task_id = self.idempotency[scoped_key]  # the first task with this key stands
        if task_id in self.tasks:
            return task_id  # a retried submit: the id is the idempotency key
        self.order += 1
        task = Task(
            id=task_id, actor=sys.intern(env.actor), args=env.args or NO_ARGS, kwargs=env.kwargs or NO_KWARGS,
            keys=env.keys or NO_KWARGS, priority=env.priority, order=self.order, submitted_at=self.now,
            idempotency_key=scoped_key,
        )
        if env.trace:
            task.trace = env.trace
        self.tasks[task_id] = task
        if scoped_key:
            self.idempotency[scoped_key] = task_id
        start_by = env.expires_at or (self.now + env.expires_in if env.expires_in else 0.0)
        if start_by:
            task.start_by = start_by
        if start_by > self.now:  # else it expires below, and no entry is needed
            heapq.heappush(self.start_deadlines, (start_by, task_id))
            self.deadlines_live += 1
        due = env.eta if env.eta else self.now + env.delay
        detail = (task.actor, task.args, task.kwargs, task.keys, task.priority, due if due > self.now else 0.0)
        self._note(task, "submitted", detail=(*detail, task.trace) if task.trace else detail)
        self.tallies.of(task.actor).submitted += 1
        if task.keys:
            self.tallies.count_keys(task.keys, "submitted")
        if start_by and start_by <= self.now:
            self._expire(task, effects)
        elif due > self.now:
            self._delay(task, due)
        else:
            self._enqueue(task)
        return task_id

    @property
    def stale(self) -> bool:
        """Whether the batch being applied was decided by a deposed leader (its leftover, forwarded
        by pysyncobj after a pause): commands made from a leader's view of its workers (DISPATCH,
        LOST) are refused then, since that view is stale. Facts (submits, outcomes) still apply."""
        return self.batch_term < self.term

    def _dispatch(self, cmd: C.Dispatch, effects: list[Effect]) -> None:
        if self.stale:  # no one would deliver or expire what it granted
            return
        # One task per offer per turn, in the offers' order (least loaded first): a batch of ready
        # tasks is spread over the workers rather than filling the first one's slots.
        turn = [(offer, offer.slots) for offer in cmd.offers if offer.slots > 0]
        while turn:
            still = []
            for offer, slots in turn:
                task = self._take_next(offer.actors)
                if task is None:
                    continue  # nothing left that this worker runs
                self._lease(task, offer.worker, effects)
                if slots > 1:
                    still.append((offer, slots - 1))
            turn = still

    def _grant(self, cmd: C.Grant, effects: list[Effect]) -> None:
        """Leases the leader decided and sent ahead of this commit: each stands if nothing the leader
        could not foresee (a deposed leader's leftovers) took its task or limited its actor first."""
        for task_id, attempt in cmd.leases:
            task = self.tasks.get(task_id)
            if self.stale or task is None or task.state != TaskState.QUEUED or task.attempt + 1 != attempt \
                    or not self.unlimited(task.actor):
                effects.append(Refused(cmd.worker, task_id))
                continue
            self.queues[task.actor].claim(lane_of(task.keys), (-task.priority, task.order, task.id), self._is_queued)
            self._lease(task, cmd.worker, effects)

    def _finish(self, cmd: C.Finish, effects: list[Effect]) -> None:
        for o in cmd.outcomes:
            task = self.tasks.get(o.id)
            if task is None or task.state != TaskState.RUNNING or task.lease is None \
                    or task.lease.worker != cmd.worker or task.attempt != o.attempt:
                continue  # stale: a lease that expired, or a report sent twice across a failover
            tally = self.tallies.of(task.actor)
            tally.ran(self.now - task.started_at)
            self._release(task)
            if o.ok:
                tally.succeeded += 1
                if task.keys:
                    self.tallies.count_keys(task.keys, "succeeded")
                self._terminate(task, TaskState.SUCCEEDED, effects, result=o.value)
                continue
            error = TaskError(o.error_type or "Exception", o.message, o.traceback)
            if task.cancel_requested:
                self._terminate(task, TaskState.CANCELLED, effects, error=error)
                continue
            tally.failed += 1
            dead = not o.retryable or task.failures >= self.option(task, "retries")
            if task.keys:
                self.tallies.count_keys(task.keys, "failed")
                if dead:
                    self.tallies.count_keys(task.keys, "dead_lettered")
            if dead:
                tally.dead_lettered += 1
                self._terminate(task, TaskState.FAILED, effects, error=error)
            else:
                tally.retried += 1
                task.failures += 1
                delay = o.retry_delay if o.retry_delay is not None else backoff_delay(task.id, task.failures)
                self._delay(task, self.now + delay)
                task.error = error
                effects.append(Retrying(task.id, task.attempt, delay, error, task.actor))
                self._note(task, "retried", cmd.worker, (delay, error))

    def _lost(self, cmd: C.Lost, effects: list[Effect]) -> None:
        if self.stale:  # a paused leader's expiries: the new leader's timers decide those leases
            return
        held = self.leases.get(cmd.worker, {})
        wanted = list(held) if cmd.leases is None else [tid for tid, att in cmd.leases
                                                        if tid in held and self.tasks[tid].attempt == att]
        for task_id in wanted:
            task = self.tasks[task_id]
            self._release(task)
            if task.cancel_requested:
                self._terminate(task, TaskState.CANCELLED, effects)
                continue
            task.losses += 1 if cmd.counts else 0
            self.tallies.of(task.actor).lost += 1
            if task.losses > self.option(task, "max_worker_losses"):
                error = TaskError("worker_lost", f"its worker was lost {task.losses} times while running it")
                self.tallies.of(task.actor).dead_lettered += 1
                if task.keys:
                    self.tallies.count_keys(task.keys, "dead_lettered")
                self._terminate(task, TaskState.FAILED, effects, error=error)
            else:
                self._enqueue(task, keep_order=True)
                effects.append(Requeued(task.id, cmd.worker, task.actor, task.attempt))
                self._note(task, "lost", cmd.worker)

    def _cancel(self, cmd: C.Cancel, effects: list[Effect]) -> None:
        task = self.tasks.get(cmd.task_id)
        if task is None or task.state in TaskState.TERMINAL:
            effects.append(Count(0))
            return
        if task.state == TaskState.RUNNING:
            assert task.lease is not None
            task.cancel_requested = True
            effects.append(CancelRunning(task.lease.worker, task.id))
        else:
            self._terminate(task, TaskState.CANCELLED, effects)
        effects.append(Count(1, [task.id]))

    def _register_actors(self, cmd: C.RegisterActors, effects: list[Effect]) -> None:
        for name, options in cmd.actors.items():
            if cmd.started < self.registered_by.get(name, 0.0):
                continue  # a worker started before the one whose options are in force: older code
            self.registered_by[name] = cmd.started
            self.actors[name] = options
            declared = self.cron.entries.get(name)
            if options.get("cron"):
                self.cron.put(name, name, options["cron"], options.get("tz", "UTC"), [], {},
                              source="actor", now=self.now)
            elif declared is not None and declared.source == "actor":
                self.cron.remove(name)  # the actor no longer declares a schedule

    def _register_node(self, cmd: C.RegisterNode, effects: list[Effect]) -> None:
        self.nodes[cmd.raft_address] = cmd.url

    def _tick(self, cmd: C.Tick, effects: list[Effect]) -> None:
        pass  # _advance has done the work

    def _checkpoint(self, cmd: C.Checkpoint, effects: list[Effect]) -> None:
        # Digesting is the replication layer's (it forks, so that no replica stalls): this says
        # where, and what the leader found at its previous checkpoint.
        self.checkpoint = (self.applied, cmd.mark, cmd.digest)

    def _unreadable(self, cmd: C.Unreadable, effects: list[Effect]) -> None:
        raise ValueError(cmd.reason)

    # -- operators' commands ----------------------------------------------------------------

    def _repeated(self, op: str | None, effects: list[Effect]) -> bool:
        """Whether operation `op` was applied before: its first count is the answer again."""
        done = self.ops.get(op) if op else None
        if done is not None:
            effects.append(Count(done[0], done[1]))
        return done is not None

    def _record(self, op: str | None, n: int, ids: list[str], effects: list[Effect]) -> None:
        if op:
            self.ops[op] = (n, ids if len(ids) <= MAX_OP_IDS else [])  # a resend gets the count alone
            if len(self.ops) > MAX_OPS:
                del self.ops[next(iter(self.ops))]
        effects.append(Count(n, ids))

    def _dlq_replay(self, cmd: C.DlqReplay, effects: list[Effect]) -> None:
        if self._repeated(cmd.op, effects):
            return
        ids = list(self.dlq) if cmd.ids is None else [i for i in cmd.ids if i in self.dlq]
        for task_id in ids:
            task = self.tasks[task_id]
            self._enqueue(task)
            del self.dlq[task_id]
            task.failures = task.losses = 0
            task.error = task.result = None
            task.finished_at = task.expires_at = 0.0
            self._note(task, "replayed")
        self._record(cmd.op, len(ids), ids, effects)

    def _dlq_purge(self, cmd: C.DlqPurge, effects: list[Effect]) -> None:
        if self._repeated(cmd.op, effects):
            return
        ids = list(self.dlq) if cmd.ids is None else [i for i in cmd.ids if i in self.dlq]
        for task_id in ids:
            del self.dlq[task_id]
            self._note(self.tasks[task_id], "purged", detail="dlq_purge")
            self._forget(self.tasks[task_id])
        self._record(cmd.op, len(ids), ids, effects)

    def _set_limits(self, cmd: C.SetLimits, effects: list[Effect]) -> None:
        override = self.overrides.setdefault(cmd.actor, {})
        if cmd.weight is not None:
            value, w = cmd.weight
            override["weights"] = [[v, n] for v, n in override.get("weights", []) if v != value] + [[value, w]]
        if cmd.rate_limits is not None:
            override["rate_limits"] = cmd.rate_limits
        if cmd.concurrency is not None:
            override["concurrency"] = cmd.concurrency
        if cmd.rate is not None:
            override["rate"] = list(cmd.rate)
        if cmd.cap is not None:
            override["cap"] = cmd.cap
        if cmd.key_rate is not None:
            value, n, period = cmd.key_rate
            override.setdefault("key_rates", {})[value] = [n, period]
        self.blocked_until.pop(cmd.actor, None)
        effects.append(Count(1))

    def _reset_limits(self, cmd: C.ResetLimits, effects: list[Effect]) -> None:
        existed = self.overrides.pop(cmd.actor, None) is not None
        self.registered_by.pop(cmd.actor, None)  # and the next worker's hello registers its options
        self.blocked_until.pop(cmd.actor, None)
        effects.append(Count(int(existed)))

    def _pause(self, cmd: C.Pause, effects: list[Effect]) -> None:
        changed = (cmd.actor in self.paused) != cmd.paused
        if cmd.paused:
            self.paused[cmd.actor] = None
        else:
            self.paused.pop(cmd.actor, None)
            self.blocked_until.pop(cmd.actor, None)
        effects.append(Count(int(changed)))

    def _purge_queue(self, cmd: C.PurgeQueue, effects: list[Effect]) -> None:
        if self._repeated(cmd.op, effects):
            return
        doomed = [t for t in self.tasks.values()
                  if t.actor == cmd.actor and t.state in (TaskState.QUEUED, TaskState.DELAYED)]
        for task in doomed:
            self._terminate(task, TaskState.CANCELLED, effects, error=TaskError("purged", "its queue was purged"))
        self._record(cmd.op, len(doomed), [], effects)

    def _cron_add(self, cmd: C.CronAdd, effects: list[Effect]) -> None:
        existing = self.cron.entries.get(cmd.name)
        if existing is not None and existing.source == "actor":
            effects.append(Count(0))  # an actor's own schedule: its workers' hello would put it back
            return
        self.cron.put(cmd.name, cmd.actor, cmd.expr, cmd.tz, cmd.args, cmd.kwargs, source="operator", now=self.now)
        effects.append(Count(1))

    def _alert(self, cmd: C.Alert, effects: list[Effect]) -> None:
        """Count 1 when the alert's state changed (the leader then tells its sinks), else 0."""
        key = f"{cmd.rule}\x1f{cmd.actor}"
        if cmd.firing and key not in self.alerts:
            self.alerts[key] = {"rule": cmd.rule, "actor": cmd.actor, "since": self.now, "value": cmd.value,
                                "text": cmd.text}
            effects.append(Count(1))
        elif not cmd.firing and key in self.alerts:
            del self.alerts[key]
            effects.append(Count(1))
        else:
            effects.append(Count(0))

    def _cron_remove(self, cmd: C.CronRemove, effects: list[Effect]) -> None:
        effects.append(Count(int(self.cron.remove(cmd.name))))

    _handlers: dict[type, Handler] = {
        C.Submit: _submit, C.Dispatch: _dispatch, C.Grant: _grant, C.Finish: _finish, C.Lost: _lost, C.Cancel: _cancel,
        C.RegisterActors: _register_actors, C.RegisterNode: _register_node, C.Tick: _tick, C.Checkpoint: _checkpoint,
        C.Unreadable: _unreadable,
        C.DlqReplay: _dlq_replay, C.DlqPurge: _dlq_purge, C.SetLimits: _set_limits, C.ResetLimits: _reset_limits,
        C.Pause: _pause, C.PurgeQueue: _purge_queue, C.CronAdd: _cron_add, C.CronRemove: _cron_remove,
        C.Alert: _alert,
    }
