"""The control plane at scale: one coordinator (1 and 3 nodes) with 10, 100 and 1,000 workers.

    python -m bench.control_plane [--sizes 10,100,1000] [--nodes 1,3] [--idle 10] [--tasks 20000]
                                  [--celery-workers 1,2,4,8]

The workers are simulated (bench/sim_workers.py): a few processes of `--per-process` DEALER sockets
that speak the real worker protocol: `hello`, a `heartbeat` every second, and `done` for every
`run` at once (a no-op task). For each size it reports, over an idle window, the coordinator's
CPU share and the messages per second per worker (sent and received by the workers), then, with
the workers connected, the dispatch throughput of `--tasks` no-op tasks (one slot per worker).
Target (the issue): messages per worker constant, the leader <= 10 % of a core for 1,000 idle workers.

Beside it, what the same membership costs in Celery's design (bench/celery_membership.py): n
workers receive n(n-1)/2 heartbeat events per second between them, computed for each size and
measured with a few real idle Celery workers (--celery-workers; an empty value skips them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import uvloop

import qrt
from qrt.local import wait_until

from . import celery_membership, harness
from .sim_workers import ACTOR, Simulation
from .throughput import push

IDLE_TARGET_PERCENT = 10.0  # of one core, the leader with 1,000 idle workers (the issue)


def measure_size(nodes: int, size: int, args: argparse.Namespace, deadline: harness.Deadline) -> dict[str, Any]:
    """`size` simulated workers on a fresh `nodes`-node cluster: the idle window, then dispatch."""
    out: dict[str, Any] = {"nodes": nodes, "workers": size}
    with harness.cluster(nodes) as c:
        leader = c.coordinator_nodes[c.wait_for_leader()]
        sim = Simulation([leader.url, *[u for u in c.urls if u != leader.url]], size, args.per_process,
                         harness.REPO_ROOT)
        try:
            t0 = time.monotonic()
            wait_until(lambda: sim.counters().get("welcomed", 0) >= size, min(120.0, deadline.remaining()), 0.1,
                       f"{size} simulated workers welcomed")
            out["all_welcomed_s"] = round(time.monotonic() - t0, 2)
            time.sleep(2.0)  # the hellos' commits and the first beats settle
            pids = {f"node{i}{' (leader)' if n is leader else ''}": n.proc.pid
                    for i, n in enumerate(c.coordinator_nodes) if n.proc is not None}
            cpu0, msgs0, w0 = _cpu(pids), sim.counters(), time.monotonic()
            time.sleep(args.idle)
            cpu1, msgs1, w1 = _cpu(pids), sim.counters(), time.monotonic()
            window = w1 - w0
            msgs = sum(msgs1[k] - msgs0[k] for k in ("sent", "received")) / window
            out["idle"] = {"window_s": round(window, 2),
                           "coordinator_cpu_percent_of_a_core": _share(cpu0, cpu1, window),
                           "messages_per_s": round(msgs, 1), "messages_per_s_per_worker": round(msgs / size, 3)}
            if size >= args.dispatch_from:
                with qrt.Client(c.urls) as client:
                    connected = sum(1 for w in client.status()["workers"] if w["connected"])
                run: dict[str, Any] = {"workers_connected": connected}
                cpu0, t = _cpu(pids), time.monotonic()
                uvloop.run(push(c.urls, ACTOR, args.tasks, 1000, 4, deadline, run))
                run["coordinator_cpu_percent_of_a_core"] = _share(cpu0, _cpu(pids), time.monotonic() - t)
                out["dispatch"] = run
        finally:
            sim.stop()
    return out


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: harness.proc_cpu_seconds(pid) for name, pid in pids.items()}


def _share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    return {name: round((after[name] - before[name]) / seconds * 100, 1) for name in before}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="simulated workers, comma-separated")
    parser.add_argument("--nodes", default="1,3", help="cluster sizes, comma-separated")
    parser.add_argument("--idle", type=float, default=10.0, help="idle measurement window, s")
    parser.add_argument("--tasks", type=int, default=20_000, help="no-op tasks dispatched with the workers connected")
    parser.add_argument("--dispatch-from", type=int, default=1000, help="measure dispatch at sizes from this one")
    parser.add_argument("--per-process", type=int, default=250, help="simulated workers per process")
    parser.add_argument("--celery-workers", default="1,2,4,8", help="real Celery workers measured idle; '' skips")
    parser.set_defaults(timeout=900.0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        report["qrt"] = []
        for nodes in (int(n) for n in args.nodes.split(",") if n):
            for size in sizes:
                result = measure_size(nodes, size, args, deadline)
                report["qrt"].append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
                if size >= 1000:
                    leader = max(result["idle"]["coordinator_cpu_percent_of_a_core"].values())
                    result["meets_idle_target"] = leader <= IDLE_TARGET_PERCENT
        report["celery_model"] = celery_membership.model(sizes)
        counts = [int(k) for k in args.celery_workers.split(",") if k]
        if counts:
            report["celery_measured"] = celery_membership.measure(counts, args.idle)

    return harness.run_benchmark("control_plane", vars(args), args.timeout, body)


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    if not report["params"]["no_save"]:  # beside the comparison of the same day (bench.compare)
        os.makedirs(harness.RESULTS_DIR, exist_ok=True)
        path = os.path.join(harness.RESULTS_DIR, time.strftime("%Y-%m-%d") + ".control-plane.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"saved {os.path.relpath(path, harness.REPO_ROOT)}", file=sys.stderr)
    return harness.emit(report, save=False)


if __name__ == "__main__":
    raise SystemExit(main())
