"""The actors that `make demo` runs: `qrt worker examples` serves them."""

from __future__ import annotations

import asyncio
import time

import qrt


@qrt.actor
async def add(x: int, y: int) -> int:
    """An async handler: name "examples.add"."""
    await asyncio.sleep(0.01)
    return x + y


@qrt.actor(name="text.shout", timeout=10.0)
def shout(text: str) -> str:
    """A sync handler: runs in the worker's thread pool."""
    time.sleep(0.05)
    return text.upper() + "!"


@qrt.actor(retries=2)
async def flaky(succeed_on: int) -> str:
    """Fails until its attempt number reaches `succeed_on`, then succeeds: shows retries."""
    attempt = qrt.current_task().attempt
    if attempt < succeed_on:
        raise qrt.Retry(delay=0.2, message=f"attempt {attempt} asks for another try")
    return f"succeeded on attempt {attempt}"


@qrt.actor(retries=1)
def divide(a: float, b: float) -> float:
    """Divides; b=0 raises ZeroDivisionError, which after its one retry lands in the DLQ."""
    return a / b


@qrt.actor
async def validate_email(address: str) -> str:
    """A malformed address is a permanent failure: straight to the DLQ, no retries."""
    if "@" not in address:
        raise qrt.NonRetryable(f"{address!r} is not an email address")
    return address
