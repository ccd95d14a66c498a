"""Drive the pure state machine the way the leader does: stamped batches of commands."""

from __future__ import annotations

from typing import Any

from qrt.protocol import Envelope, Outcome, RunTask
from qrt.state import StateMachine
from qrt.state import commands as C
from qrt.state.model import Effect, Leased


class Driver:
    def __init__(self) -> None:
        self.machine = StateMachine()
        self.now = 1000.0
        self.term = 1
        self.log: list[bytes] = []
        self.time_effects: list[Effect] = []

    def apply(self, *commands: C.Command) -> list[list[Effect]]:
        """The effects of each command (those of time passing are kept in `self.time_effects`)."""
        payload = C.pack_batch(self.term, self.now, list(commands))
        self.log.append(payload)
        applied = self.machine.apply_batch(payload)
        self.time_effects = applied.time
        return applied.effects()

    def submit(self, task_id: str, actor: str = "a", delay: float = 0.0, priority: int = 0,
               args: list[Any] | None = None) -> None:
        self.apply(C.Submit([Envelope(task_id, actor, args or [], {}, delay=delay, priority=priority)]))

    def dispatch(self, worker: str = "w1", actors: list[str] | None = None, n: int = 1) -> list[RunTask]:
        effects = self.apply(C.Dispatch([C.Offer(worker, actors or ["a"], n)]))[0]
        return [e.task for e in effects if isinstance(e, Leased)]

    def finish(self, task: RunTask, worker: str = "w1", ok: bool = True, value: Any = None,
               error_type: str = "ValueError", retryable: bool = True,
               retry_delay: float | None = None) -> list[Effect]:
        outcome = Outcome(task.id, task.attempt, ok, value, "" if ok else error_type, "boom", "",
                          retry_delay, retryable)
        return self.apply(C.Finish(worker, [outcome]))[0]

    def state(self, task_id: str) -> str | None:
        task = self.machine.tasks.get(task_id)
        return None if task is None else task.state


def queues_of(m: StateMachine) -> dict[str, list[tuple[str, list[Any]]]]:
    """Each actor's lanes in round-robin order, with their queued entries (stale ones left out)."""
    return {actor: [(lane, sorted(e for e in heap if m._is_queued(e))) for lane, heap in queue.lanes.items()
                    if any(m._is_queued(e) for e in heap)] for actor, queue in m.queues.items()}
