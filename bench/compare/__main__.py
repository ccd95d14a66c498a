"""qrt against Celery and Dramatiq: the same workloads, the same machine, the same run.

    python -m bench.compare [--systems qrt-1,qrt-3,celery-default,celery-reliable,dramatiq]
                            [--workloads w1,w2,w3,w4,w5-child,w5-main,w6] [--repeat 3] [--quick]

Sets up what the peers need (.venv-peers; Debian's redis-server if missing, started on 127.0.0.1 on
a free port and stopped afterwards) and runs every workload `--repeat` times on every system. Each
run starts clean (a new qrt cluster; the peer's Redis flushed), in a driver process of its own
(bench/compare/driver.py) that starts 2 fresh worker processes. Writes bench/results/<date>.json,
.md and .png. The workloads are in workloads.py, each system's
settings in its module (qrt_app.py, celery_app.py, dramatiq_app.py) and in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import harness
from ..machine import machine_info
from ..stats import median
from . import infra, report
from .workloads import SIZES, WORKERS, sizes

QRT_SYSTEMS = {"qrt-1": 1, "qrt-3": 3}
SYSTEMS = ["qrt-1", "qrt-3", "celery-default", "celery-reliable", "dramatiq"]
CONFIGS = {
    "qrt-1": "1 coordinator node; workers `qrt worker --concurrency C`; qrt's defaults: ack late (lease), "
             "prefetch 1 per slot, async handlers on uvloop; W5's `work` runs with isolation='process'",
    "qrt-3": "3 coordinator nodes (Raft, encrypted with a password); otherwise as qrt-1",
    "celery-default": "Celery 5 + Redis broker and result backend; prefork pool `-c C`; Celery's defaults "
                      "(ack on receipt, prefetch multiplier 4, heartbeats, gossip, mingle); "
                      "ignore_result except echo; rate_limit='50/s' (per worker)",
    "celery-reliable": "as celery-default with task_acks_late=True, worker_prefetch_multiplier=1, "
                       "task_reject_on_worker_lost=True (Celery's docs' reliability settings)",
    "dramatiq": "Dramatiq + Redis broker; `dramatiq --processes 1 --threads C`; Results middleware "
                "(Redis) for echo; WindowRateLimiter(limit=50, window=1 s) with retries after 100-1000 ms",
}
DRIVER_TIMEOUT = 600.0  # one workload run, workers' start included; W1 on the slowest peer takes ~1 min


@contextmanager
def infrastructure(system: str, redis_binary: str | None, workdir: str) -> Iterator[Callable[[], Any]]:
    """Yields `fresh()`: a context giving one run's driver arguments on a clean system, so no run
    inherits another's state: a new qrt cluster, or the system's Redis flushed."""
    if system in QRT_SYSTEMS:
        @contextmanager
        def new_cluster() -> Iterator[list[str]]:
            with harness.cluster(QRT_SYSTEMS[system]) as c:
                yield ["--coordinators", ",".join(c.urls)]

        yield new_cluster
        return
    assert redis_binary is not None
    with infra.redis_server(redis_binary, workdir) as (url, port):
        @contextmanager
        def flushed() -> Iterator[list[str]]:
            infra.redis_command(port, "FLUSHALL")
            yield ["--redis-url", url]

        yield flushed


def run_driver(python: str, system: str, workload: str, run_dir: str, args: list[str], quick: bool) -> dict[str, Any]:
    """One run in a driver process and its own process group, killed whole afterwards (workers,
    their children, anything a SIGKILL orphaned)."""
    os.makedirs(run_dir)
    cmd = [python, "-m", "bench.compare.driver", system, workload, run_dir, *args, *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONPATH": infra.REPO_ROOT}
    with open(os.path.join(run_dir, "driver.log"), "wb") as log:
        proc = subprocess.Popen(cmd, cwd=infra.REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=DRIVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            out = json.dumps({"error": f"the run took over {DRIVER_TIMEOUT:.0f} s"}).encode()
        finally:
            with contextlib.suppress(ProcessLookupError):  # nothing left in the group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"error": f"the driver printed no result (exit {proc.returncode}); see {run_dir}/driver.log"}
    return result


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median and the worst (largest) value of every figure over the runs that completed."""
    ok = [r for r in runs if "error" not in r]
    keys = sorted({k for r in ok for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    entry: dict[str, Any] = {"runs": runs, "median": {}, "worst": {}}
    for k in keys:
        values = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
        entry["median"][k] = round(median(values), 3)
        entry["worst"][k] = max(values)
    if len(ok) < len(runs):
        entry["errors"] = [r["error"] for r in runs if "error" in r]
    return entry


def peer_versions(python: str) -> dict[str, str]:
    code = ("import json; from importlib.metadata import version as v; "
            "print(json.dumps({p: v(p) for p in ('celery', 'kombu', 'billiard', 'dramatiq', 'redis')}))")
    return dict(json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout))


def measure(args: argparse.Namespace, systems: list[str], workloads: list[str], command: str) -> dict[str, Any]:
    """Every run of every workload on every system: the results, with the machine and versions."""
    wants_peers = any(s not in QRT_SYSTEMS for s in systems)
    peers_python = infra.ensure_peers_venv() if wants_peers else None
    redis_binary = infra.ensure_redis_server() if wants_peers else None
    results: dict[str, Any] = {
        "benchmark": "compare", "date": time.strftime("%Y-%m-%d"), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command, "machine": machine_info(),
        "params": {"repeat": args.repeat, "quick": args.quick, "workers": WORKERS,
                   "sizes": {w: sizes(w, args.quick) for w in workloads}},
        "systems": {},
    }
    if peers_python and redis_binary:
        results["machine"]["versions"].update(peer_versions(peers_python))
        results["machine"]["versions"]["redis-server"] = infra.redis_version(redis_binary)
    with tempfile.TemporaryDirectory(prefix="qrt-compare-", ignore_cleanup_errors=True) as base:
        for system in systems:
            python = sys.executable if system in QRT_SYSTEMS else peers_python
            assert python is not None
            entry: dict[str, Any] = {"config": CONFIGS[system], "workloads": {}}
            results["systems"][system] = entry
            workdir = os.path.join(base, system)
            os.makedirs(workdir)
            with infrastructure(system, redis_binary, workdir) as fresh:
                for workload in workloads:
                    runs = []
                    for rep in range(args.repeat):
                        with fresh() as driver_args:
                            runs.append(run_driver(python, system, workload, os.path.join(workdir, f"{workload}-{rep}"),
                                                   driver_args, args.quick))
                        print(f"{system:16} {workload:9} run {rep + 1}: {json.dumps(runs[-1])}", file=sys.stderr,
                              flush=True)
                    entry["workloads"][workload] = aggregate(runs)
    return results


def write_outputs(results: dict[str, Any], stem: str) -> None:
    """<stem>.json (with the targets checked), .md and .png; the table also goes to stdout."""
    results["targets"] = [t for s in results["systems"] if s in QRT_SYSTEMS for t in report.targets(results, s)]
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    table = report.markdown(results)
    with open(stem + ".md", "w") as f:
        f.write(table)
    charted = report.chart(results, stem + ".png")
    print(table)
    print(f"wrote {stem}.json, .md" + (", .png" if charted else " (no chart: matplotlib is not installed)"),
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    parser.add_argument("--workloads", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each workload; figures are their median")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the whole pipeline")
    parser.add_argument("--out", default=harness.RESULTS_DIR, help="where <date>.json, .md and .png go")
    parser.add_argument("--redraw", metavar="JSON", help="measure nothing: redo the .md and .png of a results file")
    args = parser.parse_args(argv)
    if args.redraw:
        with open(args.redraw) as f:
            write_outputs(json.load(f), args.redraw.removesuffix(".json"))
        return 0
    systems = [s for s in args.systems.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    for name, chosen, allowed in (("system", systems, SYSTEMS), ("workload", workloads, list(SIZES))):
        unknown = [x for x in chosen if x not in allowed]
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}: choose from {', '.join(allowed)}")
    results = measure(args, systems, workloads, " ".join(["python -m bench.compare", *argv]))
    os.makedirs(args.out, exist_ok=True)
    write_outputs(results, os.path.join(args.out, results["date"] + ("-quick" if args.quick else "")))
    failed = any("errors" in w for s in results["systems"].values() for w in s["workloads"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
