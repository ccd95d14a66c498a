"""Actors the integration tests run in real worker processes (`qrt worker tests.actors`)."""

from __future__ import annotations

import asyncio
import os
import time

import qrt


@qrt.actor
async def add(x: int, y: int) -> int:
    return x + y


@qrt.actor
def sync_add(x: int, y: int) -> int:
    return x + y


@qrt.actor
async def whoami() -> dict[str, object]:
    info = qrt.current_task()
    return {"id": info.id, "actor": info.actor, "attempt": info.attempt, "pid": os.getpid()}


@qrt.actor(retries=2)
async def fail_until(attempts: int) -> int:
    """Raises Retry until its attempt number reaches `attempts`."""
    attempt = qrt.current_task().attempt
    if attempt < attempts:
        raise qrt.Retry(delay=0.05)
    return attempt


@qrt.actor(retries=1)
async def always_fails(message: str) -> None:
    raise ValueError(message)


@qrt.actor
async def not_retryable() -> None:
    raise qrt.NonRetryable("bad input")


@qrt.actor(timeout=0.3, retries=0)
async def too_slow() -> None:
    await asyncio.sleep(5)  # ok-sleep: the handler's simulated work


@qrt.actor(timeout=0.3, retries=0)
def too_slow_sync() -> None:
    time.sleep(1)  # ok-sleep: the handler's simulated work


@qrt.actor
async def sleep_then(seconds: float, value: object = None) -> dict[str, object]:
    """Sleeps, then says which process ran it: the failure tests kill workers mid-sleep."""
    await asyncio.sleep(seconds)  # ok-sleep: the handler's simulated work
    return {"value": value, "pid": os.getpid(), "attempt": qrt.current_task().attempt}


@qrt.actor(result_ttl=0)
async def no_result(release_file: str) -> int:
    """Stores no result, and returns only once `release_file` exists: a test can be waiting by then."""
    while not os.path.exists(release_file):
        await asyncio.sleep(0.01)  # ok-sleep: the handler polls for the test's go-ahead
    return 1


@qrt.actor
async def unpackable() -> object:
    return object()


@qrt.actor
async def huge_result() -> str:
    return "x" * (17 * 1024 * 1024)


@qrt.actor(rate_limit="5/s")
async def rate_limited(i: int) -> float:
    return time.time()


@qrt.actor(concurrency=qrt.Concurrency(1, key="tenant"))
async def one_per_tenant(tenant: str, seconds: float) -> list[float]:
    started = time.time()
    await asyncio.sleep(seconds)  # ok-sleep: the handler's simulated work
    return [started, time.time()]


@qrt.actor(concurrency=2)
async def two_at_a_time(seconds: float) -> list[float]:
    started = time.time()
    await asyncio.sleep(seconds)  # ok-sleep: the handler's simulated work
    return [started, time.time()]


# -- isolation="process": sync handlers in supervised child processes ---------------------------


def _say_pid(path: str) -> None:
    """Tells the test which process runs the handler (written whole: the test polls for the file)."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)


@qrt.actor(isolation="process", timeout=0.5, retries=0)
def stuck_in_c(pid_file: str) -> None:
    """Blocks in C (as a hung library call would) far past its timeout: only killing its process ends it."""
    _say_pid(pid_file)
    time.sleep(30)  # ok-sleep: the handler's simulated work


@qrt.actor(isolation="process", retries=0)
def sleep_in_child(pid_file: str, seconds: float) -> None:
    _say_pid(pid_file)
    time.sleep(seconds)  # ok-sleep: the handler's simulated work


@qrt.actor(isolation="process")
def isolated_whoami() -> dict[str, object]:
    info = qrt.current_task()
    return {"id": info.id, "actor": info.actor, "attempt": info.attempt, "pid": os.getpid(), "ppid": os.getppid()}


@qrt.actor(isolation="process", max_tasks_per_child=1)
def one_task_per_child() -> int:
    return os.getpid()


@qrt.actor(isolation="process", retries=0)
def exits_abruptly(how: str) -> None:
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), 9)  # SIGKILL


@qrt.actor(isolation="process", retries=1)
def dies_on_first_attempt() -> dict[str, int]:
    """Its first attempt kills its child; the retry runs in a fresh one."""
    if qrt.current_task().attempt == 1:
        os._exit(3)
    return {"attempt": qrt.current_task().attempt, "pid": os.getpid()}


@qrt.actor(isolation="process", retries=2)
def isolated_fail_until(attempts: int) -> int:
    """Raises Retry until its attempt number reaches `attempts`, as fail_until does in a thread."""
    attempt = qrt.current_task().attempt
    if attempt < attempts:
        raise qrt.Retry(delay=0.05)
    return attempt


@qrt.actor(isolation="process", retries=0)
def isolated_raises(message: str) -> None:
    raise ValueError(message)


@qrt.actor(retries=0)
async def nested(depth: int) -> object:
    """A result nested `depth` levels deep."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value



@qrt.actor(concurrency=1, timeout=0.3, retries=1)
def overruns(path: str, seconds: float) -> None:
    """A sync handler that runs past its timeout (a thread cannot be stopped); it appends its
    start and end (monotonic seconds) to `path`, so a test can tell whether two attempts overlapped."""
    start = time.monotonic()
    time.sleep(seconds)  # ok-sleep: the handler's simulated work
    with open(path, "a") as f:
        f.write(f"{start} {time.monotonic()}\n")


@qrt.actor(isolation="process", rate_limit="5/s", retries=0)
def isolated_rated(path: str) -> None:
    """Appends when it starts (monotonic seconds: one clock for every process of the machine)."""
    with open(path, "a") as f:
        f.write(f"{time.monotonic()}\n")


@qrt.actor
async def submit_add(x: int) -> str:
    """Submits add(x, 1) from inside a handler ($QRT_COORDINATORS); the child task's id."""
    async with qrt.AsyncClient() as client:
        return (await client.submit(add, x, 1)).id
