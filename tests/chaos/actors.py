"""Actors of the chaos harness (`qrt worker tests.chaos.actors`).

Each handler appends a `start` line before its work and an `end` line after it (or when it is
cancelled) to a file of its own process, so that the checks are made from what really ran: task id,
attempt, pid, monotonic and wall time. CLOCK_MONOTONIC is one clock for every process of the host,
so stamps of different workers compare directly. A SIGKILLed worker leaves a `start` without `end`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import qrt

# The directory of the stamp files; set by the harness in every worker's environment.
STAMPS_ENV = "QRT_CHAOS_STAMPS"
# Results are kept long enough for the harness's collector to read each one, and not much longer:
# the leader's memory must come back to its baseline after the load (the check at the end).
RESULT_TTL = 300.0
# The rate-limited actor's limit; the harness checks every window of its period against it.
RATE_LIMIT = "20/s"

_fd: int | None = None
_fd_pid = 0


def _stamp(event: str, actor: str, seq: int, **extra: Any) -> None:
    """One JSON line, written by one `write` to an O_APPEND file: whole even if the process dies next."""
    global _fd, _fd_pid
    if _fd is None or _fd_pid != os.getpid():
        directory = os.environ[STAMPS_ENV]
        _fd = os.open(os.path.join(directory, f"stamps-{os.getpid()}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        _fd_pid = os.getpid()
    info = qrt.current_task()
    line = {"e": event, "id": info.id, "actor": actor, "attempt": info.attempt, "seq": seq, "pid": os.getpid(),
            "mono": time.monotonic(), "wall": time.time(), **extra}
    os.write(_fd, (json.dumps(line) + "\n").encode())


async def _work(actor: str, seq: int, seconds: float, retry_first: bool = False) -> int:
    _stamp("start", actor, seq)
    outcome = "error"
    try:
        await asyncio.sleep(seconds)  # ok-sleep: the handler's simulated work
        if retry_first and qrt.current_task().attempt == 1:
            outcome = "retry"
            raise qrt.Retry(delay=0.2)
        outcome = "ok"
        return seq
    except asyncio.CancelledError:
        outcome = "cancelled"  # fenced, or cancelled by the leader
        raise
    finally:
        _stamp("end", actor, seq, outcome=outcome)


@qrt.actor(result_ttl=RESULT_TTL)
async def plain(seq: int, seconds: float) -> int:
    return await _work("plain", seq, seconds)


@qrt.actor(result_ttl=RESULT_TTL, concurrency=1)
async def serial(seq: int, seconds: float) -> int:
    """Never two at once, across all workers, unless a lease was lost."""
    return await _work("serial", seq, seconds)


@qrt.actor(result_ttl=RESULT_TTL, rate_limit=RATE_LIMIT)
async def limited(seq: int, seconds: float) -> int:
    """No window of a second holds more than 20 starts, across all workers."""
    return await _work("limited", seq, seconds)


@qrt.actor(result_ttl=RESULT_TTL, retries=3)
async def flaky(seq: int, seconds: float, retry_first: bool) -> int:
    """Asks for a retry on its first attempt when `retry_first`: it finishes on the second."""
    return await _work("flaky", seq, seconds, retry_first)


@qrt.actor(result_ttl=RESULT_TTL)
def blocking(seq: int, seconds: float) -> int:
    """A sync handler, in a thread: it cannot be cancelled, so a fence lets it run to its end."""
    _stamp("start", "blocking", seq)
    outcome = "error"
    try:
        time.sleep(seconds)  # ok-sleep: the handler's simulated work
        outcome = "ok"
        return seq
    finally:
        _stamp("end", "blocking", seq, outcome=outcome)


ACTORS: dict[str, qrt.Actor[Any, Any]] = {
    "plain": plain, "serial": serial, "limited": limited, "flaky": flaky, "blocking": blocking}
