"""Bulk actions on dead letters, paced: a group of 10,000 must not flood the workers.

Replay puts CHUNK letters back in their queue, then waits until the queues of the actors it
touched hold fewer than CHUNK queued tasks (the workers have taken them) before the next chunk;
so the backlog it adds stays near one chunk, whatever the group's size. Purge needs no pacing but
goes by chunks too (one Raft entry each). A job runs in the dashboard's process; its progress
shows on the dead-letter page.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..client import AsyncClient

log = logging.getLogger("qrt.dashboard")

CHUNK = 200
POLL = 0.2  # seconds between looks at the queue while a chunk drains
# The longest wait for the queue to shrink below a chunk (a paused actor, one no worker serves, one
# that is always busy): then the next chunk goes anyway. Pacing spreads a replay; it never stalls it.
DRAIN_WAIT = 30.0
KEEP_DONE = 20  # finished jobs still shown


@dataclass
class Job:
    id: int
    action: str  # "replay" or "purge"
    what: str  # the group's fingerprint, or a letter's id
    who: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None


class Jobs:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self, action: str, what: str) -> Job | None:
        """The job doing `action` to `what` now, if one is."""
        return next((j for j in self.jobs.values() if (j.action, j.what) == (action, what) and j.finished is None),
                    None)

    def start(self, action: str, what: str, who: str, ids: list[str], actors: list[str]) -> Job:
        job = Job(next(self._ids), action, what, who, len(ids))
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job, ids, actors))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        finished = [j for j in self.jobs.values() if j.finished is not None]
        for old in finished[:-KEEP_DONE]:
            del self.jobs[old.id]
        return job

    def shown(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: -j.id)

    async def _run(self, job: Job, ids: list[str], actors: list[str]) -> None:
        try:
            for i in range(0, len(ids), CHUNK):
                chunk = ids[i:i + CHUNK]
                if job.action == "replay":
                    job.done += await self.client.dlq_replay(chunk)
                    if i + CHUNK < len(ids):
                        await self._drained(actors)
                else:
                    job.done += await self.client.dlq_purge(chunk)
        except Exception as exc:  # shown on the page; the letters not reached stay dead letters
            job.error = f"{type(exc).__name__}: {exc}"
            log.error("%s of %s by %s stopped after %d of %d: %s", job.action, job.what, job.who, job.done,
                      job.total, job.error)
        finally:
            job.finished = time.time()
            log.info("%s of %s by %s: %d of %d done", job.action, job.what, job.who, job.done, job.total)

    async def _drained(self, actors: list[str]) -> None:
        """Until the actors' queues hold less than a chunk (the workers keep up), DRAIN_WAIT at most."""
        give_up = time.monotonic() + DRAIN_WAIT
        while time.monotonic() < give_up:
            queues: dict[str, Any] = (await self.client.status()).get("queues", {})
            if sum(queues.get(a, {}).get("queued", 0) for a in actors) < CHUNK:
                return
            await asyncio.sleep(POLL)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
