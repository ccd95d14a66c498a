"""Timestamps of a task's hops through the processes it crosses, for bench/anatomy.py.

Off unless QRT_ANATOMY names a path: then every process that imports this (a coordinator node, a
worker) writes `task_id hop nanoseconds` lines (wall clock, CLOCK_REALTIME: one machine, so the
processes' clocks agree) to PATH.<pid>, at exit. Callers test `ON` first, so with it off a hop
costs one global read.

Hops, in the order one round trip takes them (bench/anatomy.py names the spans between them):
    received        the leader read the submit
    proposed        the leader handed the batch holding it to Raft
    applied         the state machine applied it (pysyncobj's thread)
    accepted        the event loop heard of the commit and answered the submit
    lease_applied   the dispatch that leased it was applied (pysyncobj's thread)
    leased          ... and the event loop heard of it
    run_sent        its `run` went out to the worker
    started, ended  the worker's handler began and returned
    done_sent       the worker sent its `done`
    done_received   the leader read the worker's `done`
    outcome_proposed    the leader handed the outcome's batch to Raft
    outcome_applied the outcome's batch was applied (pysyncobj's thread)
    outcome_committed   the event loop heard of it
    result_sent     the result went out to the waiting client
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any

PATH = os.environ.get("QRT_ANATOMY", "")
ON = bool(PATH)

_lines: list[str] = []
_lock = threading.Lock()


def mark(hop: str, task_id: str) -> None:
    """Note that `task_id` reached `hop` now (call only when ON)."""
    line = f"{task_id} {hop} {time.time_ns()}\n"
    with _lock:
        _lines.append(line)


def proposed(command: Any) -> list[tuple[str, str]]:
    """The hops a command marks when its batch is proposed: a submit's tasks, an outcome's."""
    kind = type(command).__name__
    if kind == "Submit":
        return [("proposed", envelope.id) for envelope in command.tasks]
    if kind == "Finish":
        return [("outcome_proposed", outcome.id) for outcome in command.outcomes]
    return []


def effects(found: list[Any], on_loop: bool) -> None:
    """Mark what a committed batch did: on pysyncobj's thread as it applies (`on_loop` False), and
    again when the event loop hears of it."""
    for effect in found:
        kind = type(effect).__name__
        if kind == "Accepted":
            for task_id in effect.ids:
                mark("accepted" if on_loop else "applied", task_id)
        elif kind == "Leased":
            mark("leased" if on_loop else "lease_applied", effect.task.id)
        elif kind == "Finished":
            mark("outcome_committed" if on_loop else "outcome_applied", effect.id)


def _write() -> None:
    if _lines:
        with open(f"{PATH}.{os.getpid()}", "a") as f:
            f.writelines(_lines)
        _lines.clear()


if ON:
    atexit.register(_write)
