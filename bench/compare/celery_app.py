"""Celery 5 with Redis (broker and result backend), as the comparison drives it.

Runs in the peers' virtualenv. Workers: `celery -A bench.compare.celery_app worker -c C` (the
prefork pool, Celery's default), with $QRT_BENCH_CELERY_PROFILE choosing the settings:

- `default`: Celery's defaults (ack on receipt by the pool, prefetch multiplier 4);
- `reliable`: what Celery's docs recommend for reliability: `task_acks_late=True`,
  `worker_prefetch_multiplier=1`, `task_reject_on_worker_lost=True`.

Both keep Redis's default visibility timeout (1 hour: an unacknowledged task comes back after it)
and Celery's worker heartbeats, gossip and mingle. Tasks that need no result set `ignore_result`,
Celery's fastest path; `echo` stores its result in Redis for W3. `rated` has `rate_limit="50/s"`,
which Celery enforces per worker process, not across the cluster.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

from celery import Celery

from .stamps import ended, started
from .workloads import ENV_CELERY_PROFILE, ENV_REDIS_URL, RATE_LIMIT, PeerSystem

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "reliable": {"task_acks_late": True, "worker_prefetch_multiplier": 1, "task_reject_on_worker_lost": True},
}

_redis = os.environ.get(ENV_REDIS_URL, "redis://127.0.0.1:6379")
app = Celery("cmp", broker=f"{_redis}/0", backend=f"{_redis}/1")
app.conf.update(broker_connection_retry_on_startup=True, **PROFILES[os.environ.get(ENV_CELERY_PROFILE, "default")])


@app.task(name="cmp.noop", ignore_result=True)
def noop(tag: str) -> None:
    started(tag)
    ended(tag)


@app.task(name="cmp.echo")
def echo(tag: str) -> str:
    started(tag)
    ended(tag)
    return tag


@app.task(name="cmp.sleep", ignore_result=True)
def sleep(tag: str, seconds: float) -> None:
    started(tag)
    time.sleep(seconds)
    ended(tag)


@app.task(name="cmp.work", ignore_result=True)
def work(tag: str, seconds: float) -> None:
    started(tag)
    time.sleep(seconds)
    ended(tag)


@app.task(name="cmp.rated", ignore_result=True, rate_limit=f"{RATE_LIMIT}/s")
def rated(tag: str) -> None:
    started(tag)
    ended(tag)


TASKS = {"noop": noop, "echo": echo, "sleep": sleep, "work": work, "rated": rated}


class CelerySystem(PeerSystem):
    def __init__(self, redis_url: str, profile: str) -> None:
        self.env = {ENV_REDIS_URL: redis_url, ENV_CELERY_PROFILE: profile}

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", __name__, "worker", "-c", str(concurrency),
                "-l", "warning", "-n", f"cmp-{uuid.uuid4().hex[:8]}@%h"]

    def submit(self, kind: str, tag: str, *args: Any) -> Any:
        return TASKS[kind].delay(tag, *args)

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def close(self) -> None:
        app.close()
