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
from .stats import percentiles

TARGETS_P50_MS = {1: 1.0, 3: 2.0}
WARMUP = 50  # connects, registers the actor, warms caches; not counted
# A sample that waits this long is counted as stuck (a lost wake-up, not a slow task: the handler does
# nothing) and left behind; the next submit goes on, so one stuck task does not end the benchmark.
STUCK_AFTER = 5.0


def _summarize(out: dict[str, Any], totals: list[float], submits: list[float], stuck: list[str]) -> None:
    out["total"] = percentiles(totals)
    out["submit_only"] = percentiles(submits)
    out["stuck"] = len(stuck)
    if stuck:
        out["stuck_ids"] = stuck[:10]


def sync_samples(urls: list[str], n: int, deadline: harness.Deadline, out: dict[str, Any]) -> None:
    totals: list[float] = []
    submits: list[float] = []
    stuck: list[str] = []
    try:
        with qrt.Client(urls) as client:
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                handle = client.submit(noop)
                t1 = time.perf_counter()
                try:
                    handle.result(timeout=min(STUCK_AFTER, deadline.remaining()))
                except qrt.ResultTimeout:
                    deadline.remaining()  # raises if it was the budget, not the task, that ran out
                    stuck.append(handle.id)
                    continue
                t2 = time.perf_counter()
                if i >= WARMUP:
                    submits.append((t1 - t0) * 1000)
                    totals.append((t2 - t0) * 1000)
    finally:
        _summarize(out, totals, submits, stuck)


async def async_samples(urls: list[str], n: int, deadline: harness.Deadline, out: dict[str, Any]) -> None:
    totals: list[float] = []
    submits: list[float] = []
    stuck: list[str] = []
    try:
        async with qrt.AsyncClient(urls) as client:
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                handle = await client.submit(noop)
                t1 = time.perf_counter()
                try:
                    await handle.result(timeout=min(STUCK_AFTER, deadline.remaining()))
                except qrt.ResultTimeout:
                    deadline.remaining()  # raises if it was the budget, not the task, that ran out
                    stuck.append(handle.id)
                    continue
                t2 = time.perf_counter()
                if i >= WARMUP:
                    submits.append((t1 - t0) * 1000)
                    totals.append((t2 - t0) * 1000)
    finally:
        _summarize(out, totals, submits, stuck)


def _async_samples(urls: list[str], n: int, deadline: harness.Deadline, out: dict[str, Any]) -> None:
    uvloop.run(async_samples(urls, n, deadline, out))


def run_config(nodes: int, args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    target = TARGETS_P50_MS.get(nodes)
    entry: dict[str, Any] = {"nodes": nodes, "target_p50_ms": target, "sync_client": {}, "async_client": {}}
    report["runs"].append(entry)
    with harness.cluster(nodes) as c:
        harness.start_workers(c, args.workers, args.concurrency, deadline)
        for face, measure in (("sync_client", sync_samples), ("async_client", _async_samples)):
            before = harness.cpu_snapshot(c)
            try:
                measure(c.urls, args.n, deadline, entry[face])
            finally:  # CPU per round trip, warm-up included: where the time goes, by process
                used = harness.cpu_used(before, harness.cpu_snapshot(c))
                entry[face]["cpu_ms_per_roundtrip"] = {k: round(v * 1000 / (WARMUP + args.n), 3)
                                                       for k, v in used.items()}
    for face in ("sync_client", "async_client"):
        if entry[face].get("stuck"):
            report.setdefault("failed_checks", []).append(
                f"{nodes} node(s), {face}: {entry[face]['stuck']} task(s) not finished after {STUCK_AFTER} s")
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
