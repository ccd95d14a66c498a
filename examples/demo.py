"""`make demo`: a one-node coordinator and a worker as real processes, and a mix of real tasks.

Run it with `python -m examples.demo` from the repository root. It prints each task as it is
submitted and as it finishes, then stops every process it started.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import qrt
from examples import add, divide, flaky, shout, validate_email
from qrt.local import LocalCluster

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:5.2f}s] {text}", flush=True)


async def follow(name: str, handle: qrt.AsyncTaskHandle) -> None:
    try:
        value: Any = await handle.result(timeout=30)
        say(f"  done     {name} -> {value!r}")
    except qrt.TaskFailed as exc:
        say(f"  FAILED   {name} -> {exc.error_type}: {exc.message} (now in the dead-letter queue)")


async def run_tasks(urls: list[str]) -> None:
    async with qrt.AsyncClient(urls) as client:
        jobs = {
            "add(2, 3)                 async": await client.submit(add, 2, 3),
            "text.shout('hello')       sync, in a thread": await client.submit(shout, "hello"),
            "flaky(succeed_on=3)       retries twice": await client.submit(flaky, 3),
            "divide(1, 0)              fails, retried once, dead-lettered": await client.submit(divide, 1, 0),
            "validate_email('nobody')  NonRetryable": await client.submit(validate_email, "nobody"),
            "add(40, 2)                delayed 2 s": await client.submit_with(add, (40, 2), delay=2.0),
        }
        batch = await client.submit_many(add, [(i, i) for i in range(100)])
        for name, handle in jobs.items():
            say(f"submitted {name}  [{handle.id[:8]}]")
        say("submitted 100 x add(i, i) in one batch (one round trip, one Raft entry)")
        await asyncio.gather(*(follow(name, h) for name, h in jobs.items()),
                             _sum(batch))
        dead = await client.dlq_list()
        say(f"dead-letter queue holds {dead['total']}:")
        for entry in dead["entries"]:
            say(f"  {entry['actor']}{tuple(entry['args'])}  {entry['error']['type']}: {entry['error']['message']}")


async def _sum(handles: list[qrt.AsyncTaskHandle]) -> None:
    values = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    say(f"  done     100 x add(i, i) -> sum {sum(values)}")


def main() -> None:
    say("starting a one-node coordinator and a worker (qrt worker examples) on 127.0.0.1")
    with LocalCluster(nodes=1) as cluster:
        cluster.start_worker(["examples"], concurrency=8)
        cluster.wait_for_workers(1)
        with qrt.Client(cluster.urls) as client:
            status = client.status()
        say(f"coordinator {status['leader']} leads (term {status['term']}); "
            f"worker serves {', '.join(status['workers'][0]['actors'])}")
        asyncio.run(run_tasks(cluster.urls))
        say("stopping the worker and the coordinator")
    say("all processes stopped")


if __name__ == "__main__":
    main()
