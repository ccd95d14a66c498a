"""A chaos run: 3 coordinator nodes, 3 workers, a steady load, a seeded schedule of real faults,
then the checks (tests/chaos/checks.py) and a summary.

    python -m tests.chaos.harness --duration 600 [--seed N] [--base-dir DIR] [--summary FILE]

The seed is printed first; `--seed N` replays the same schedule. Everything a run leaves (every
process's log, the handlers' stamps, accepted.jsonl, faults.log, chaos-summary.json, and code/, the
copy of qrt that every node and worker of the run imported) stays in its base directory, printed
at the start and at the end. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import qrt
from qrt.local import LocalCluster, wait_until

from . import actors, checks
from .faults import WORKER_CONCURRENCY, Injector, plan
from .load import CallTimes, Collector, DigestSampler, Loader, Monitor, rss_kib

WORKERS = 3
# The first fault waits for this much load, when the leader's memory baseline is taken.
WARMUP = 5.0
# No fault starts in the last TAIL s of the run.
TAIL = 5.0
# After the load stops: how long every accepted task may take to reach a final state.
DRAIN_TIMEOUT = 60.0
# Replicas compared over this long after the drain (each node polled in turn).
DIGEST_WINDOW = 4.0
# The leader's memory after the run, against its baseline: generous, since results are kept for
# their TTL (actors.RESULT_TTL) and history and Raft logs grow a little: but not with the traffic.
MEMORY_FACTOR = 1.5
MEMORY_SLACK_KIB = 64 * 1024


@dataclass
class Config:
    duration: float
    seed: int
    base_dir: str | None = None


def run(config: Config) -> dict[str, Any]:
    """One chaos run; returns its summary (summary["ok"] says whether every check held)."""
    base = config.base_dir or tempfile.mkdtemp(prefix=f"qrt-chaos-{config.seed}-")
    os.makedirs(base, exist_ok=True)
    stamps = os.path.join(base, "stamps")
    os.makedirs(stamps, exist_ok=True)
    print(f"chaos: seed {config.seed}, {config.duration:g} s, logs in {base}", flush=True)
    code = _freeze_code(base)
    cluster = LocalCluster(nodes=3, password=f"chaos-{config.seed}", base_dir=base,
                           env={actors.STAMPS_ENV: stamps,
                                "PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))})
    times = CallTimes()
    threads: list[Loader | Collector | Monitor | DigestSampler] = []
    injector: Injector | None = None
    fault_log = open(os.path.join(base, "faults.log"), "a")  # noqa: SIM115 - closed in finally
    try:
        cluster.start()
        injector = Injector(cluster, stamps, WORKERS, fault_log)
        cluster.wait_for_workers(WORKERS)
        origin = time.monotonic()
        wall_to_mono = time.time() - origin
        loader = Loader(cluster.urls, config.seed, os.path.join(base, "accepted.jsonl"), times)
        collector = Collector(cluster.urls, loader.snapshot)
        monitor = Monitor(cluster.urls, times, injector.pids)
        sampler = DigestSampler(cluster.urls)
        threads = [loader, collector, monitor, sampler]
        for t in threads:
            t.start()
        wait_until(lambda: time.monotonic() - origin >= WARMUP and loader.snapshot(), WARMUP + 30, 0.1,
                   "the load under way")
        baseline = _leader_rss(cluster)
        faults_until = origin + config.duration - TAIL
        for step in plan(config.seed):
            if time.monotonic() + step.gap > faults_until:
                break  # a fault under way may run past it: the load goes on until it is repaired
            time.sleep(step.gap)  # ok-sleep: the schedule's quiet time between faults
            injector.apply(step)
            _check_alive(threads)
        cluster.wait_for_leader(30)
        time.sleep(max(0.0, origin + config.duration - time.monotonic()))  # ok-sleep: the rest of the load
        loader.stop()
        load_ended = time.monotonic()
        with contextlib.suppress(TimeoutError):  # the checks name the tasks that never finished
            wait_until(lambda: not collector.pending(), DRAIN_TIMEOUT, 0.2, "every accepted task final")
        drained = time.monotonic() - load_ended
        queues = _queues_after(cluster)
        digests = checks.compare_digests(_last_digests(sampler))
        memory = {"baseline_kib": baseline, "after_kib": _leader_rss(cluster), "peak_kib": monitor.peak_rss}
        collector.stop()
        monitor.stop()
        _check_alive(threads)
        summary = _summarize(config, base, origin, wall_to_mono, loader, collector, monitor, injector, times,
                             digests, memory, queues, drained)
    except BaseException as exc:
        print(f"chaos: the run stopped on {exc!r}; seed {config.seed}, logs in {base}", flush=True)
        raise
    finally:
        for t in threads:  # each is idempotent
            if isinstance(t, DigestSampler):
                t.close()
            else:
                t.stop()
        if injector is not None:
            injector.release()
        cluster.stop()
        fault_log.close()
    path = os.path.join(base, "chaos-summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    summary["summary_file"] = path
    return summary


def _freeze_code(base: str) -> str:
    """A copy of the qrt package for every process of the run, restarted ones included: a node
    restarted after the sources changed (an edit, a checkout) would run other code than its peers,
    and its replica could differ for that reason alone."""
    code = os.path.join(base, "code")
    if not os.path.isdir(code):
        shutil.copytree(os.path.dirname(qrt.__file__), os.path.join(code, "qrt"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return code


def _check_alive(threads: list[Loader | Collector | Monitor | DigestSampler]) -> None:
    for t in threads:
        if t.error is not None:
            raise RuntimeError(f"the harness's {type(t).__name__} failed: {t.error!r}") from t.error


def _leader_rss(cluster: LocalCluster) -> int | None:
    proc = cluster.coordinator_nodes[cluster.wait_for_leader(30)].proc
    return None if proc is None else rss_kib(proc.pid)


def _queues_after(cluster: LocalCluster) -> dict[str, Any]:
    """The leader's queues of the chaos actors once drained: nothing queued, delayed or running."""
    with qrt.Client(cluster.urls) as client:
        queues = client.status()["queues"]
    return {name.rsplit(".", 1)[1]: row for name, row in queues.items() if name.startswith(actors.__name__)}


def _last_digests(sampler: DigestSampler) -> list[dict[str, Any]]:
    """The samples of the run, and each node's own status polled in turn for DIGEST_WINDOW s more."""
    sampler.stop()
    deadline = time.monotonic() + DIGEST_WINDOW
    while time.monotonic() < deadline:
        sampler.sample()
    return sampler.samples


def _summarize(config: Config, base: str, origin: float, wall_to_mono: float, loader: Loader, collector: Collector,
               monitor: Monitor, injector: Injector, times: CallTimes, digests: dict[str, Any],
               memory: dict[str, Any], queues: dict[str, Any], drained: float) -> dict[str, Any]:
    logs = glob.glob(os.path.join(base, "*.log"))
    runs = checks.load_stamps(os.path.join(base, "stamps"))
    faults = injector.faults + checks.load_fences(logs, wall_to_mono)
    accepted = loader.snapshot()
    ev = checks.Evidence(faults, checks.load_lease_losses(logs), checks.runs_by_id(runs), origin)
    errors = checks.logged_errors(logs)
    tasks = checks.check_tasks(accepted, runs, dict(collector.final), ev)
    serial = checks.check_serial(runs, ev)
    limit, _, period = actors.RATE_LIMIT.partition("/")
    rate = checks.check_rate(runs, ev, int(limit), {"s": 1.0, "m": 60.0}[period[-1]])
    after, base_rss = memory["after_kib"], memory["baseline_kib"]
    memory["bound_kib"] = None if base_rss is None else int(base_rss * MEMORY_FACTOR + MEMORY_SLACK_KIB)
    memory["ok"] = after is None or memory["bound_kib"] is None or after <= memory["bound_kib"]
    undrained = {a: row for a, row in queues.items() if row.get("queued") or row.get("running") or row.get("delayed")}
    by_kind: dict[str, int] = {}
    for f in faults:
        by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    stall = max(times.longest.values(), key=lambda v: v[1], default=(origin, 0.0))
    failures = {
        "lost": len(tasks["lost"]), "wedged": len(tasks["wedged"]), "failed": len(tasks["failed"]),
        "duplicates_unexplained": len(tasks["duplicates_unexplained"]),
        "serial_overlaps_unexplained": len(serial["unexplained"]), "rate_violations": len(rate["violations"]),
        "digests_unequal": int(not digests["equal"]), "memory_over_bound": int(not memory["ok"]),
        "queues_not_empty": len(undrained), "errors_logged": errors["count"],
    }
    return {
        "ok": not any(failures.values()), "failures": failures, "seed": config.seed,
        "replay": f"python -m tests.chaos.harness --duration {config.duration:g} --seed {config.seed}",
        "base_dir": base, "duration_s": config.duration, "drain_s": round(drained, 2),
        "faults_by_kind": by_kind, "faults_skipped": injector.skipped,
        "faults": [f.view(origin) for f in sorted(faults, key=lambda f: f.start)],
        "tasks": {k: tasks[k] for k in ("accepted", "finished", "duplicates", "duplicates_explained")},
        "client": {"longest_stall_s": round(stall[1], 3), "longest_stall_at": round(stall[0] - origin, 2),
                   "longest_by_call": {k: round(v[1], 3) for k, v in times.longest.items()},
                   "failed_calls": times.failures},
        "queue_wait": checks.queue_waits(accepted, ev, checks.FreeSlots(runs, ev, injector.lifetimes(),
                                                                         WORKER_CONCURRENCY)),
        "time_to_finish": checks.finish_times(accepted, ev),
        "serial": {k: serial[k] for k in ("runs", "overlaps")},
        "rate": {k: rate[k] for k in ("starts", "limit", "busiest_window")},
        "digests": digests, "known_log_lines": errors["known"], "memory": memory, "queues_after": undrained,
        "leader_changes": len(monitor.leaders) - 1,
        "problems": {"lost": tasks["lost"][:10], "wedged": tasks["wedged"][:10], "failed": tasks["failed"][:10],
                     "duplicates_unexplained": tasks["duplicates_unexplained"][:10],
                     "duplicate_examples": tasks["duplicate_examples"],
                     "serial_overlaps_unexplained": serial["unexplained"][:10],
                     "serial_overlaps_explained": serial["explained"],
                     "rate_violations": rate["violations"][:10], "ran_but_not_accepted": tasks["ran_but_not_accepted"],
                     "errors_logged": errors["examples"]},
    }


def report(summary: dict[str, Any]) -> str:
    """The summary for people: the figures, then what failed."""
    s = summary
    lines = [
        f"chaos seed {s['seed']}: {'OK' if s['ok'] else 'FAILED'} after {s['duration_s']:g} s "
        f"(+{s['drain_s']} s drain)",
        f"  faults: {s['faults_by_kind']}" + (f", skipped {s['faults_skipped']}" if s["faults_skipped"] else ""),
        f"  tasks: {s['tasks']['accepted']} accepted, {s['tasks']['finished']} finished, "
        f"{s['tasks']['duplicates']} duplicates ({s['tasks']['duplicates_explained']} explained by a lost lease)",
        f"  longest client stall: {s['client']['longest_stall_s']} s (at +{s['client']['longest_stall_at']} s); "
        f"by call {s['client']['longest_by_call']}",
        f"  queued while a worker was free (actors without limits): "
        f"max {s['queue_wait']['unlimited_while_a_worker_was_free'].get('max_s')} s, "
        f"p99 {s['queue_wait']['unlimited_while_a_worker_was_free'].get('p99_s')} s",
        f"  accepted to finished: max {s['time_to_finish'].get('max_s')} s, "
        f"p99 {s['time_to_finish'].get('p99_s')} s",
        f"  serial: {s['serial']['runs']} runs, {s['serial']['overlaps']} overlaps; rate {s['rate']['limit']}: "
        f"{s['rate']['starts']} starts, busiest window {s['rate']['busiest_window']}",
        f"  digests equal: {s['digests']['equal']} (compared {s['digests']['points_compared']}); "
        f"leader RSS {s['memory']['after_kib']} KiB vs baseline {s['memory']['baseline_kib']} KiB",
        f"  failures: {s['failures']}",
    ]
    if not s["ok"]:
        problems = {k: v for k, v in s["problems"].items() if v and k not in ("duplicate_examples",
                                                                                "serial_overlaps_explained")}
        lines.append("  problems: " + json.dumps(problems, indent=1)[:6000])
        lines.append(f"  replay: {s['replay']}; logs in {s['base_dir']}")
    lines.append(f"  summary: {s.get('summary_file')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load and faults (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed (default: a new one, printed)")
    parser.add_argument("--base-dir", default=None, help="where the run's logs go (default: a new temp dir)")
    parser.add_argument("--summary", default=None, help="also write the summary JSON here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    summary = run(Config(args.duration, seed, args.base_dir))
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=2)
    print(report(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
