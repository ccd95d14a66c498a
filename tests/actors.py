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
    await asyncio.sleep(5)


@qrt.actor(timeout=0.3, retries=0)
def too_slow_sync() -> None:
    time.sleep(1)


@qrt.actor
async def sleep_then(seconds: float, value: object = None) -> dict[str, object]:
    """Sleeps, then says which process ran it: the failure tests kill workers mid-sleep."""
    await asyncio.sleep(seconds)
    return {"value": value, "pid": os.getpid(), "attempt": qrt.current_task().attempt}


@qrt.actor(result_ttl=0)
async def no_result() -> int:
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
    await asyncio.sleep(seconds)
    return [started, time.time()]


@qrt.actor(concurrency=2)
async def two_at_a_time(seconds: float) -> list[float]:
    started = time.time()
    await asyncio.sleep(seconds)
    return [started, time.time()]
