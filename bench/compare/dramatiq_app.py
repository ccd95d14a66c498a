"""Dramatiq with Redis, as the comparison drives it.

Runs in the peers' virtualenv. Workers: `dramatiq bench.compare.dramatiq_app --processes 1
--threads C` (one worker process of C threads under Dramatiq's main process). Dramatiq's defaults
otherwise: messages are acknowledged after the handler returns; a dead worker's unacknowledged
messages come back once its Redis heartbeat is older than 60 s. `echo` stores its result with the
Results middleware (W3). `rated` is limited the way Dramatiq's docs show, a `WindowRateLimiter` of
50 per 1 s window in Redis; a start over the limit raises `RateLimitExceeded` and the Retries
middleware retries it, here after 100 ms to 1 s (the default backoff, 15 s and up, would make the
achieved rate meaningless).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend as LimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend as ResultsBackend

from .stamps import ended, started
from .workloads import ENV_REDIS_URL, RATE_LIMIT, PeerSystem

_redis = os.environ.get(ENV_REDIS_URL, "redis://127.0.0.1:6379")
broker = RedisBroker(url=f"{_redis}/0")
broker.add_middleware(Results(backend=ResultsBackend(url=f"{_redis}/1")))
dramatiq.set_broker(broker)
limiter = WindowRateLimiter(LimiterBackend(url=f"{_redis}/2"), "cmp.rated", limit=RATE_LIMIT, window=1)


@dramatiq.actor(actor_name="cmp.noop")
def noop(tag: str) -> None:
    started(tag)
    ended(tag)


@dramatiq.actor(actor_name="cmp.echo", store_results=True)
def echo(tag: str) -> str:
    started(tag)
    ended(tag)
    return tag


@dramatiq.actor(actor_name="cmp.sleep")
def sleep(tag: str, seconds: float) -> None:
    started(tag)
    time.sleep(seconds)
    ended(tag)


@dramatiq.actor(actor_name="cmp.work")
def work(tag: str, seconds: float) -> None:
    started(tag)
    time.sleep(seconds)
    ended(tag)


@dramatiq.actor(actor_name="cmp.rated", max_retries=1000, min_backoff=100, max_backoff=1000)
def rated(tag: str) -> None:
    with limiter.acquire():
        started(tag)
        ended(tag)


ACTORS = {"noop": noop, "echo": echo, "sleep": sleep, "work": work, "rated": rated}


class DramatiqSystem(PeerSystem):
    def __init__(self, redis_url: str) -> None:
        self.env = {ENV_REDIS_URL: redis_url}

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "dramatiq", __name__, "--processes", "1", "--threads", str(concurrency)]

    def submit(self, kind: str, tag: str, *args: Any) -> Any:
        return ACTORS[kind].send(tag, *args)

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.get_result(block=True, timeout=int(timeout * 1000))

    def close(self) -> None:
        broker.close()
