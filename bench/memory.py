"""Memory: the leader coordinator's resident memory at idle, after 20,000 tasks, with 100,000 queued.

    python -m bench.memory [--nodes 1|3] [--tasks 20000] [--queued 100000]

Reads VmRSS (and VmHWM, the peak; RssAnon, the heap; RssFile, mapped files such as the Raft
journal) from /proc/<pid>/status of the leader's process. Two clusters, so the figures do not mix:
  1. idle, then after a throughput run of `--tasks` no-op tasks through 2 workers (finished tasks
     keep their record and result for the result TTL, 10 minutes by default, so they are counted);
  2. idle, then with `--queued` tasks submitted to an actor no worker serves, and no worker running.
DESIGN.md: memory is bounded by live tasks (and results within their TTL), not by history.
"""

from __future__ import annotations

import time
from typing import Any

import uvloop

import qrt
from qrt.local import LocalCluster

from . import harness
from .actors import UNSERVED, noop
from .throughput import push

# Let the allocator and pysyncobj's post-commit work settle before reading RSS.
SETTLE = 1.0
CHUNK, INFLIGHT = 1000, 4


def _memory(c: LocalCluster, leader: int) -> dict[str, Any]:
    """RSS of the leader, and of the followers (they hold the same replicated state)."""
    pids = [n.proc.pid for n in c.coordinator_nodes if n.proc is not None]
    out: dict[str, Any] = {"leader": harness.proc_memory(pids[leader])}
    followers = [harness.proc_memory(pid) for i, pid in enumerate(pids) if i != leader]
    if followers:
        out["followers_VmRSS"] = [f["VmRSS"] for f in followers]
    return out


def _growth(before: dict[str, Any], after: dict[str, Any], tasks: int) -> dict[str, Any]:
    grown = after["leader"]["VmRSS"] - before["leader"]["VmRSS"]
    return {"VmRSS_growth_bytes": grown, "bytes_per_task": round(grown / tasks) if tasks else None}


def after_throughput(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    phase: dict[str, Any] = {}
    report["after_throughput"] = phase
    with harness.cluster(args.nodes) as c:
        leader = c.wait_for_leader()
        time.sleep(SETTLE)
        phase["idle"] = _memory(c, leader)
        harness.start_workers(c, 2, args.concurrency, deadline)
        run: dict[str, Any] = {}
        phase["run"] = run
        uvloop.run(push(c.urls, noop, args.tasks, CHUNK, INFLIGHT, deadline, run))
        time.sleep(SETTLE)
        phase["after"] = _memory(c, leader)
        phase.update(_growth(phase["idle"], phase["after"], args.tasks))
        if c.wait_for_leader() != leader:
            phase["note"] = "the leader changed during the run"
    if run.get("outcomes", {}).get("succeeded") != args.tasks:
        report.setdefault("failed_checks", []).append(f"throughput run: {run.get('outcomes')} of {args.tasks}")


def with_queued(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    phase: dict[str, Any] = {}
    report["with_queued"] = phase
    with harness.cluster(args.nodes) as c:
        leader = c.wait_for_leader()
        time.sleep(SETTLE)
        phase["idle"] = _memory(c, leader)
        run: dict[str, Any] = {}
        phase["enqueue"] = run  # no worker: the rate of accepting alone
        uvloop.run(push(c.urls, UNSERVED, args.queued, CHUNK, INFLIGHT, deadline, run, wait=False))
        time.sleep(SETTLE)
        with qrt.Client(c.urls) as client:
            queued = client.status()["queues"].get(UNSERVED, {}).get("queued", 0)
        phase["queued"] = queued
        phase["after"] = _memory(c, leader)
        phase.update(_growth(phase["idle"], phase["after"], queued))
    if queued != args.queued:
        report.setdefault("failed_checks", []).append(f"{queued} of {args.queued} tasks queued")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="cluster size")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks of the throughput run")
    parser.add_argument("--queued", type=int, default=100_000, help="tasks left queued")
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker process")
    args = parser.parse_args(argv)

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        after_throughput(args, deadline, report)
        with_queued(args, deadline, report)

    return harness.run_benchmark("memory", vars(args), args.timeout, body)


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    return harness.emit(report, save=not report["params"]["no_save"])


if __name__ == "__main__":
    raise SystemExit(main())
