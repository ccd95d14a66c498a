"""Round trip: sequential submit-then-result of a no-op task, one at a time, on 1 and 3 nodes.

    python -m bench.roundtrip [--nodes 1|3] [--n 500]

Each sample is one `submit(noop)` followed by `result(timeout=...)` on the returned handle, with
nothing else in flight: the latency a caller sees for one task (two Raft commits: the submit and
the outcome; a dispatch commit; four network hops). Both faces of the client are measured: the
blocking `qrt.Client` and `qrt.AsyncClient` on uvloop. `submit_*` is the time to `accepted` alone.
Targets (the issue): p50 <= 1 ms on 1 node, <= 2 ms on 3 nodes.
"""

from __future__ import annotations

import time
from typing import Any

import uvloop

import qrt

from . import harness
from .actors import noop

TARGETS_P50_MS = {1: 1.0, 3: 2.0}
WARMUP = 50  # connects, registers the actor, warms caches; not counted
RESULT_TIMEOUT = 10.0


def sync_samples(urls: list[str], n: int, deadline: harness.Deadline, out: dict[str, Any]) -> None:
    totals: list[float] = []
    submits: list[float] = []
    try:
        with qrt.Client(urls) as client:
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                handle = client.submit(noop)
                t1 = time.perf_counter()
                handle.result(timeout=min(RESULT_TIMEOUT, deadline.remaining()))
                t2 = time.perf_counter()
                if i >= WARMUP:
                    submits.append((t1 - t0) * 1000)
                    totals.append((t2 - t0) * 1000)
    finally:
        out["total"] = harness.percentiles(totals)
        out["submit_only"] = harness.percentiles(submits)


async def async_samples(urls: list[str], n: int, deadline: harness.Deadline, out: dict[str, Any]) -> None:
    totals: list[float] = []
    submits: list[float] = []
    try:
        async with qrt.AsyncClient(urls) as client:
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                handle = await client.submit(noop)
                t1 = time.perf_counter()
                await handle.result(timeout=min(RESULT_TIMEOUT, deadline.remaining()))
                t2 = time.perf_counter()
                if i >= WARMUP:
                    submits.append((t1 - t0) * 1000)
                    totals.append((t2 - t0) * 1000)
    finally:
        out["total"] = harness.percentiles(totals)
        out["submit_only"] = harness.percentiles(submits)


def run_config(nodes: int, args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    target = TARGETS_P50_MS.get(nodes)
    entry: dict[str, Any] = {"nodes": nodes, "target_p50_ms": target, "sync_client": {}, "async_client": {}}
    report["runs"].append(entry)
    with harness.cluster(nodes) as c:
        harness.start_workers(c, args.workers, args.concurrency, deadline)
        sync_samples(c.urls, args.n, deadline, entry["sync_client"])
        uvloop.run(async_samples(c.urls, args.n, deadline, entry["async_client"]))
    for face in ("sync_client", "async_client"):
        p50 = entry[face]["total"].get("p50_ms")
        if target is not None and p50 is not None:
            entry[face]["meets_target"] = p50 <= target


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 3), help="cluster size (default: 1, then 3)")
    parser.add_argument("--n", type=int, default=500, help="samples per client face")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker process")
    args = parser.parse_args(argv)
    configs = [args.nodes] if args.nodes else [1, 3]

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        report["runs"] = []
        for nodes in configs:
            run_config(nodes, args, deadline, report)

    return harness.run_benchmark("roundtrip", vars(args), args.timeout, body)


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    return harness.emit(report, save=not report["params"]["no_save"])


if __name__ == "__main__":
    raise SystemExit(main())
