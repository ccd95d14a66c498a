"""`qrt.testing`: the real state machine in your process, on a virtual clock.

Assert your own limits, schedules and retries without sleeping and without starting processes:

    from qrt.testing import VirtualCluster

    def test_my_rate_limit():
        vc = VirtualCluster(workers=2, concurrency=8)
        for i in range(20):
            vc.submit(call_api, i)              # an @qrt.actor(rate_limit="5/s")
        vc.advance(2.5)                         # virtual seconds
        assert len(vc.starts("app.call_api")) == 15

Every decision (limits, fairness, priorities, delays, cron, retries, dead letters) is taken by the
same state machine the coordinator replicates, fed the same commands; only the clock, the network
and the worker processes are simulated. Handlers run in this process, when they start; a task
takes `durations[actor]` virtual seconds (default 0), so concurrency limits can be observed.
"""

from __future__ import annotations

import asyncio
import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .actor import Actor, registry
from .client import ActorRef, SubmitOptions, make_envelope, raise_for_result
from .coordinator.roster import WorkerTable
from .errors import ResultTimeout
from .operator import cron_request, limits_request
from .protocol import Envelope, Outcome
from .state import StateMachine, TaskState, views
from .state import commands as C
from .state.model import Applied, Leased
from .worker import outcomes
from .worker.runner import run_handler

# 2030-01-01T00:00:00Z: a fixed start, so that tests (and cron schedules in them) are repeatable.
DEFAULT_START = 1893456000.0
# How far run_until_idle() goes before it gives up (a cron entry keeps a cluster busy forever).
IDLE_HORIZON = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Start:
    """A task's start: what rate limits count (a lease commit, on the virtual clock)."""

    at: float
    task_id: str
    actor: str
    attempt: int
    worker: str


class VirtualTask:
    """A submitted task; `result()` returns or raises as `Client` does, without waiting."""

    def __init__(self, cluster: VirtualCluster, task_id: str) -> None:
        self.cluster = cluster
        self.id = task_id

    def __repr__(self) -> str:
        return f"<qrt virtual task {self.id} {self.state}>"

    @property
    def state(self) -> str:
        task = self.cluster.machine.tasks.get(self.id)
        return "not_found" if task is None else task.state

    def result(self) -> Any:
        task = self.cluster.machine.tasks.get(self.id)
        if task is not None and task.state not in TaskState.TERMINAL:
            raise ResultTimeout(self.id, 0.0)
        return raise_for_result({"id": self.id, "state": "not_found"} if task is None else task.summary())


class VirtualCluster:
    """One replicated state machine, `workers` simulated workers with `concurrency` slots each."""

    def __init__(self, actors: list[Actor[Any, Any]] | None = None, workers: int = 1, concurrency: int = 8,
                 start: float | datetime.datetime = DEFAULT_START,
                 durations: dict[str, float] | None = None) -> None:
        self.machine = StateMachine()
        self.now = start.timestamp() if isinstance(start, datetime.datetime) else float(start)
        self.actors = {a.name: a for a in actors} if actors is not None else dict(registry)
        # The leader's view of its workers, and its policy for offering them (least loaded first).
        self.workers = WorkerTable()
        for i in range(workers):
            name = f"virtual-worker-{i}"
            self.workers.hello(name, name.encode(), list(self.actors), concurrency, concurrency)
        self.durations = dict(durations or {})
        self.running: list[tuple[float, str, Outcome]] = []  # (finishes at, worker, outcome)
        self.history: list[Start] = []
        self._seq = 0
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qrt-virtual")
        self._apply(C.RegisterActors({name: a.options() for name, a in self.actors.items()}))

    def close(self) -> None:
        self._loop.close()
        self._executor.shutdown(wait=False)

    def __enter__(self) -> VirtualCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what a client does -----------------------------------------------------------------

    def submit(self, actor: ActorRef, *args: Any, **kwargs: Any) -> VirtualTask:
        return self.submit_with(actor, args, kwargs)

    def submit_with(self, actor: ActorRef, args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None,
                    *, delay: float | None = None, eta: float | datetime.datetime | None = None,
                    expires: float | datetime.datetime | None = None, priority: int = 0,
                    idempotency_key: str | None = None) -> VirtualTask:
        """As `Client.submit_with`; `eta` and `expires` datetimes are read on the virtual clock."""
        envelope = make_envelope(actor, args, kwargs,
                                 SubmitOptions(delay, eta, expires, priority, idempotency_key))
        envelope = Envelope.from_wire(envelope.to_wire(), "task")  # the coordinator's own validation
        [accepted] = self._apply(C.Submit([envelope])).effects()[0]
        self._dispatch_and_finish()
        return VirtualTask(self, accepted.ids[0])  # type: ignore[union-attr]

    def task(self, task_id: str) -> VirtualTask:
        return VirtualTask(self, task_id)

    def cancel(self, task_id: str) -> None:
        self._apply(C.Cancel(task_id))

    # -- what an operator does --------------------------------------------------------------

    def set_limits(self, actor: str, rate: str | None = None, key: Any = None, concurrency: int | None = None,
                   weight: int | None = None) -> None:
        """As `Client.set_limits`."""
        request = limits_request(actor, rate, key, concurrency, weight)
        self._apply(C.operator_limits(actor, request.rate, request.key, request.concurrency, request.weight))

    def reset_limits(self, actor: str) -> None:
        self._apply(C.ResetLimits(actor))

    def pause(self, actor: str) -> None:
        self._apply(C.Pause(actor, True))

    def resume(self, actor: str) -> None:
        self._apply(C.Pause(actor, False))

    def cron_add(self, name: str, actor: ActorRef, expr: str, args: list[Any] | tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, tz: str = "UTC") -> None:
        """As `Client.cron_add`."""
        r = cron_request(name, actor, expr, args, kwargs, tz)
        self._apply(C.CronAdd(r.name, r.actor, r.expr, r.tz, r.args, r.kwargs))

    def cron_list(self) -> list[dict[str, Any]]:
        return [entry.view() for entry in self.machine.cron.entries.values()]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [self.machine.tasks[i].summary(with_arguments=True) for i in self.machine.dlq]

    # -- time ---------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass: every start, finish, retry and cron fire in between."""
        until = self.now + seconds
        self._dispatch_and_finish()
        while (upcoming := self._next_event()) is not None and upcoming <= until:
            self.now = upcoming
            self._dispatch_and_finish()
        self.now = until
        self._dispatch_and_finish()

    def run_until_idle(self, horizon: float = IDLE_HORIZON) -> None:
        """Advance until no task is queued, delayed or running, or nothing more can happen, or
        `horizon` seconds have passed."""
        until = self.now + horizon
        self._dispatch_and_finish()
        while any(t.state not in TaskState.TERMINAL for t in self.machine.tasks.values()):
            upcoming = self._next_event()
            if upcoming is None or upcoming > until:
                break  # e.g. tasks of an actor no virtual worker serves, or a paused queue
            self.advance(upcoming - self.now)

    def _next_event(self) -> float | None:
        times = [t for t in (views.next_due(self.machine), *(r[0] for r in self.running))
                 if t is not None and t > self.now]
        return min(times, default=None)

    def starts(self, actor: str | None = None) -> list[Start]:
        """Every start so far, oldest first (optionally of one actor)."""
        return [s for s in self.history if actor is None or s.actor == actor]

    # -- the simulated coordinator and workers -----------------------------------------------

    def _apply(self, *commands: C.Command) -> Applied:
        return self.machine.apply_batch(C.pack_batch(1, self.now, list(commands)))

    def _dispatch_and_finish(self) -> None:
        """What a leader does at one instant: report finished tasks, then fill free slots."""
        while True:
            done = [r for r in self.running if r[0] <= self.now]
            self.running = [r for r in self.running if r[0] > self.now]
            for _, worker, outcome in done:
                self._apply(C.Finish(worker, [outcome]))
                self.workers.by_id[worker].credit += 1
            offered = self.workers.offerable()
            leased: list[Leased] = []
            if offered:
                command = self.workers.reserve(offered)
                leased = [e for e in self._apply(command).effects()[0] if isinstance(e, Leased)]
                for conn, offer in zip(offered, command.offers, strict=True):
                    self.workers.settle(conn, offer.slots, sum(e.worker == conn.id for e in leased), self.now)
            for effect in leased:
                self._start(effect)
            if not done and not leased:
                return

    def _start(self, effect: Leased) -> None:
        task, worker = effect.task, effect.worker
        self.history.append(Start(self.now, task.id, task.actor, task.attempt, worker))
        outcome = self._loop.run_until_complete(
            run_handler(self.actors[task.actor], task, self._executor, lambda _: None))
        duration = self.durations.get(task.actor, 0.0)
        if duration > task.timeout:
            duration = task.timeout
            outcome = outcomes.error(task.id, task.attempt, "timeout",
                                     f"ran longer than its timeout of {task.timeout} s (virtual)")
        self.running.append((self.now + duration, worker, outcome))
