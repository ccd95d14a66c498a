"""Throughput: 20,000 no-op tasks through 2 worker processes, on a 1-node and a 3-node cluster.

    python -m bench.throughput [--nodes 1|3] [--tasks 20000] [--workers 2] [--concurrency 8] [--fsync] [--curve]
                               [--no-history]

Reports, per cluster size, the enqueue rate (tasks accepted per second, from the first submit to
the last `accepted`) and the end-to-end rate (from the first submit to the last result received),
while workers run tasks as they arrive. One AsyncClient submits batches (`submit_many`, one Raft
entry each) with a few in flight, and waits on every task's result as soon as its batch is
accepted; every one of the results is checked, so a lost or failed task fails the benchmark.
Targets (the issue): >= 5,000 tasks/s on 1 node, >= 4,500 on 3 nodes. With --fsync, every node runs
`qrt coordinator --fsync` (each Raft entry on disk before it counts): the run records the data
directory's filesystem and the cost of one fdatasync there, which that figure depends on. With
--curve, the client/worker port uses CURVE (keys generated for the run): compare with a run without.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from typing import Any

import uvloop

import qrt
from qrt import curve, defaults

from . import harness
from .actors import noop

TARGETS = {1: 5000.0, 3: 4500.0}  # end-to-end tasks/s (the issue)
WARMUP_TASKS = 200  # connects the client, registers the actor and warms both workers; not counted
RESULT_TIMEOUT = 120.0  # per task; the benchmark's own budget bounds the whole wait anyway


async def push(urls: list[str], actor: qrt.Actor[Any, Any] | str, total: int, chunk: int, inflight: int,
               deadline: harness.Deadline, out: dict[str, Any], wait: bool = True) -> None:
    """Submit `total` no-argument tasks in batches of `chunk`, `inflight` batches at a time; with `wait`,
    wait for each batch's results as soon as it is accepted. Rates and outcome counts go into `out`,
    as far as they got when the budget runs out."""
    out.update({"tasks": total, "accepted": 0, "outcomes": {}})
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(inflight)
    marks = {"last_accepted": 0.0, "last_result": 0.0}

    async def one_batch(client: qrt.AsyncClient, n: int) -> None:
        async with gate:
            handles = await client.submit_many(actor, [()] * n)
        marks["last_accepted"] = time.perf_counter()
        out["accepted"] += len(handles)
        if not wait:
            return
        results = await asyncio.gather(*(h.result(timeout=RESULT_TIMEOUT) for h in handles), return_exceptions=True)
        marks["last_result"] = time.perf_counter()
        for r in results:
            outcomes["succeeded" if r is None else type(r).__name__] += 1

    sizes = [min(chunk, total - i) for i in range(0, total, chunk)]
    async with qrt.AsyncClient(urls) as client:
        if wait:
            warm = await client.submit_many(actor, [()] * WARMUP_TASKS)
            async with asyncio.timeout(min(60.0, deadline.remaining())):
                await asyncio.gather(*(h.result(timeout=60) for h in warm))
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(deadline.remaining()):
                await asyncio.gather(*(one_batch(client, n) for n in sizes))
        finally:  # also when the budget ran out: report what was reached
            out["outcomes"] = dict(outcomes)
            if marks["last_accepted"]:
                out["enqueue_s"] = round(marks["last_accepted"] - t0, 4)
                out["enqueue_rate"] = round(out["accepted"] / out["enqueue_s"], 1)
            if marks["last_result"]:
                done = sum(outcomes.values())
                out["end_to_end_s"] = round(marks["last_result"] - t0, 4)
                out["end_to_end_rate"] = round(done / out["end_to_end_s"], 1)


@contextlib.contextmanager
def client_keys(c: Any) -> Any:
    """The cluster's client keys in this process's environment (every qrt client here reads them)."""
    keys = c.curve_keys("client")
    names = {"curve_secret_key": curve.ENV_SECRET_KEY, "curve_server_key": curve.ENV_SERVER_KEY}
    saved = {env: os.environ.get(env) for env in names.values()}
    os.environ.update({names[k]: v for k, v in keys.items()})
    try:
        yield
    finally:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value


def run_config(nodes: int, args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    entry: dict[str, Any] = {"nodes": nodes, "fsync": args.fsync, "curve": args.curve, "history": args.history,
                             "target_end_to_end_rate": TARGETS.get(nodes)}
    report["runs"].append(entry)
    with harness.cluster(nodes, fsync=args.fsync, curve=args.curve, history=args.history) as c, client_keys(c):
        assert c.base_dir is not None
        entry["data_disk"] = harness.disk_info(c.base_dir)
        harness.start_workers(c, args.workers, args.concurrency, deadline)
        before = harness.cpu_snapshot(c)
        try:
            uvloop.run(push(c.urls, noop, args.tasks, args.chunk, args.inflight, deadline, entry))
        finally:
            entry["cpu_seconds"] = harness.cpu_used(before, harness.cpu_snapshot(c))
        if nodes > 1:
            entry["raft"] = harness.raft_view(c)
    succeeded = entry["outcomes"].get("succeeded", 0)
    if succeeded != args.tasks:
        report.setdefault("failed_checks", []).append(
            f"{nodes} node(s): {succeeded} of {args.tasks} tasks succeeded ({entry['outcomes']})")
    target = TARGETS.get(nodes)
    if target is not None and "end_to_end_rate" in entry:
        entry["meets_target"] = entry["end_to_end_rate"] >= target


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    return harness.emit(report, save=not report["params"]["no_save"])


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 3), help="cluster size (default: 1, then 3)")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=defaults.WORKER_CONCURRENCY,
                        help="slots per worker process")
    parser.add_argument("--chunk", type=int, default=1000, help="tasks per submit_many call (one batch)")
    parser.add_argument("--inflight", type=int, default=4, help="submit_many calls in flight at once")
    parser.add_argument("--fsync", action="store_true", help="run the coordinators with --fsync")
    parser.add_argument("--curve", action="store_true", help="CURVE on the client/worker port (its cost)")
    parser.add_argument("--no-history", dest="history", action="store_false",
                        help="coordinators keep no task history (to measure its cost)")
    args = parser.parse_args(argv)
    configs = [args.nodes] if args.nodes else [1, 3]

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        report["runs"] = []
        for nodes in configs:
            run_config(nodes, args, deadline, report)

    return harness.run_benchmark("throughput", vars(args), args.timeout, body)


if __name__ == "__main__":
    raise SystemExit(main())
