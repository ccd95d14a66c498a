"""qrt as the comparison drives it: the actors its workers serve, and the client side.

Workers: `qrt worker bench.compare.qrt_app --concurrency C`, with every coordinator URL. The actors
keep qrt's defaults (ack late, prefetch 1, retries 3 with backoff), except `work`, which runs in a
child process (`isolation="process"`) so that W5 has a child to kill, as Celery and Dramatiq do.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import qrt

from .stamps import ended, started
from .workloads import RATE_LIMIT

CHUNK = 1000  # tasks per submit_many: one request, one Raft entry


@qrt.actor(name="cmp.noop")
async def noop(tag: str) -> None:
    started(tag)
    ended(tag)


@qrt.actor(name="cmp.echo")
async def echo(tag: str) -> str:
    started(tag)
    ended(tag)
    return tag


@qrt.actor(name="cmp.sleep")
async def sleep(tag: str, seconds: float) -> None:
    started(tag)
    await asyncio.sleep(seconds)
    ended(tag)


@qrt.actor(name="cmp.work", isolation="process")
def work(tag: str, seconds: float) -> None:
    started(tag)
    time.sleep(seconds)
    ended(tag)


@qrt.actor(name="cmp.rated", rate_limit=f"{RATE_LIMIT}/s")
async def rated(tag: str) -> None:
    started(tag)
    ended(tag)


ACTORS: dict[str, qrt.Actor[Any, Any]] = {"noop": noop, "echo": echo, "sleep": sleep, "work": work, "rated": rated}


class QrtSystem:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.client = qrt.Client(urls)

    def worker_command(self, concurrency: int) -> list[str]:
        cmd = [sys.executable, "-m", "qrt.cli", "worker", __name__, "--concurrency", str(concurrency),
               "--log-level", "warning"]
        for url in self.urls:
            cmd += ["--coordinator", url]
        return cmd

    def worker_env(self) -> dict[str, str]:
        return {}

    def submit(self, kind: str, tag: str, *args: Any) -> Any:
        return self.client.submit(ACTORS[kind], tag, *args)

    def submit_all(self, kind: str, tags: list[str], *args: Any) -> None:
        for i in range(0, len(tags), CHUNK):
            self.client.submit_many(ACTORS[kind], [(tag, *args) for tag in tags[i:i + CHUNK]])

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout)

    def close(self) -> None:
        self.client.close()
