"""The workloads, written once against `System`, so every system runs exactly the same steps.

Each workload starts its own worker processes (`Workers`), warms them up until every worker has run
a task, measures, and returns a flat dict of figures. What a handler did is read from its stamps
(stamps.py), never from the system's own bookkeeping.

Standard library only: this runs in the peers' virtualenv too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..stats import busiest_window, percentiles, sustained_rate
from .stamps import ENV_DIR, ENV_WORKER, StampLog

WORKERS = 2  # worker processes (instances) per system, as the issue says
STARTUP_TIMEOUT = 90.0  # Celery's mingle and a cold import on a loaded 2-core machine take a while


class System(Protocol):
    """One task queue as the workloads drive it. Task kinds (each handler stamps start and end):
    `noop(tag)`, `echo(tag) -> tag`, `sleep(tag, seconds)`, `work(tag, seconds)` (a sleep in a
    process of its own, the one W5 kills) and `rated(tag)` (limited to RATE_LIMIT starts per second)."""

    def worker_command(self, concurrency: int) -> list[str]: ...
    def worker_env(self) -> dict[str, str]: ...
    def submit(self, kind: str, tag: str, *args: Any) -> Any: ...
    def submit_all(self, kind: str, tags: list[str], *args: Any) -> None: ...
    def result(self, handle: Any, timeout: float) -> Any: ...
    def close(self) -> None: ...


RATE_LIMIT = 50  # per second, for `rated`
MARKED_TASK_OVERRUN_S = 0.5  # W5's marked task lasts this much past the kill

# How the driver configures the peers' apps: each reads these when imported (a worker's too).
ENV_REDIS_URL = "QRT_BENCH_REDIS_URL"
ENV_CELERY_PROFILE = "QRT_BENCH_CELERY_PROFILE"


class PeerSystem:
    """What Celery's and Dramatiq's sides share: their settings reach the workers in `env`, and
    neither has a batched enqueue (their groups, too, enqueue one message at a time)."""

    env: dict[str, str]

    def worker_env(self) -> dict[str, str]:
        return self.env

    def submit(self, kind: str, tag: str, *args: Any) -> Any:
        raise NotImplementedError

    def submit_all(self, kind: str, tags: list[str], *args: Any) -> None:
        for tag in tags:
            self.submit(kind, tag, *args)

# Full sizes (the issue's) and the quick ones of a smoke run (`--quick`).
SIZES: dict[str, dict[str, Any]] = {
    "w1": {"tasks": 20_000, "concurrency": 8, "timeout": 180.0},
    "w2": {"rate": 200, "seconds": 15.0, "concurrency": 8},
    "w3": {"tasks": 500, "concurrency": 8},
    "w4": {"long_s": 2.0, "shorts": 20, "short_s": 0.01, "concurrency": 1},
    "w5-child": {"tasks": 200, "work_s": 0.05, "kill_after": 1.0, "grace": 15.0, "concurrency": 2},
    "w5-main": {"tasks": 200, "work_s": 0.05, "kill_after": 1.0, "grace": 15.0, "concurrency": 2},
    "w6": {"tasks": 300, "concurrency": 8},
    # W1 and W3 again with one slot per worker: the shape where a task's dispatch cost cannot hide
    # behind batching (CPU-bound tasks, or a rate-limited API called one at a time).
    "w1-1slot": {"tasks": 20_000, "concurrency": 1, "timeout": 300.0},
    "w3-1slot": {"tasks": 500, "concurrency": 1},
}
QUICK: dict[str, dict[str, Any]] = {
    "w1": {"tasks": 2_000}, "w2": {"seconds": 3.0}, "w3": {"tasks": 100},
    "w1-1slot": {"tasks": 1_000}, "w3-1slot": {"tasks": 100},
    "w5-child": {"grace": 8.0}, "w5-main": {"grace": 8.0}, "w6": {"tasks": 100},
}


def sizes(workload: str, quick: bool) -> dict[str, Any]:
    return {**SIZES[workload], **(QUICK.get(workload, {}) if quick else {})}


@dataclass
class Workers:
    """The worker processes of one run; `stop()` kills them and every process they started."""

    system: System
    concurrency: int
    run_dir: str
    procs: list[subprocess.Popen[bytes]]

    @classmethod
    def start(cls, system: System, concurrency: int, run_dir: str, count: int = WORKERS) -> Workers:
        workers = cls(system, concurrency, run_dir, [])
        for _ in range(count):
            workers.add()
        return workers

    def add(self) -> subprocess.Popen[bytes]:
        name = f"w{len(self.procs)}"
        env = {**os.environ, **self.system.worker_env(), ENV_DIR: os.path.join(self.run_dir, "stamps"),
               ENV_WORKER: name, "PYTHONUNBUFFERED": "1"}
        with open(os.path.join(self.run_dir, f"{name}.log"), "ab") as log:
            proc = subprocess.Popen(self.system.worker_command(self.concurrency), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def names(self) -> set[str]:
        return {f"w{i}" for i, p in enumerate(self.procs) if p.poll() is None}

    def stop(self) -> None:
        for proc in self.procs:
            for pid in [*descendants(proc.pid), proc.pid]:
                kill(pid)
            proc.wait()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc), children first."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return [d for c in children for d in (c, *descendants(c))]


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)


@dataclass
class Run:
    """One workload's run: the system, its workers, their stamps, and unique tags."""

    system: System
    workers: Workers
    stamps: StampLog
    prefix: str

    def tags(self, n: int, what: str = "t") -> list[str]:
        return [f"{self.prefix}{what}{i}" for i in range(n)]

    def warm_up(self, kind: str, *args: Any) -> None:
        """Run rounds of tasks until every worker instance has run one: all are connected and
        consuming (and a process-isolated actor has its children) before anything is measured."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        per_round = 2 * len(self.workers.procs) * self.workers.concurrency
        for round_ in range(1000):
            tags = self.tags(per_round, f"warm{round_}.")
            for tag in tags:
                self.system.submit(kind, tag, *args)
            if not self.stamps.wait_ended(set(tags), max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"warm-up tasks did not finish within {STARTUP_TIMEOUT:.0f} s")
            seen = {s.worker for tag, starts in self.stamps.starts.items() if "warm" in tag for s in starts}
            if seen >= self.workers.names():
                return
        raise TimeoutError("some worker never ran a warm-up task")


def w1_throughput(run: Run, tasks: int, timeout: float, **_: Any) -> dict[str, Any]:
    """Submit `tasks` no-ops as fast as the client allows; rates to the last submit and the last end."""
    run.warm_up("noop")
    tags = run.tags(tasks)
    t0 = time.time()
    run.system.submit_all("noop", tags)
    enqueued = time.time() - t0
    done = run.stamps.wait_ended(set(tags), timeout)
    ended = [run.stamps.first_end(t) for t in tags if t in run.stamps.ends]
    out: dict[str, Any] = {"tasks": tasks, "completed": len(ended), "enqueue_rate": round(tasks / enqueued, 1)}
    if done:
        out["end_to_end_rate"] = round(tasks / (max(ended) - t0), 1)
    return out


def w2_latency(run: Run, rate: float, seconds: float, **_: Any) -> dict[str, Any]:
    """Open loop: task i is due at t0 + i / rate whatever happened before; latency is its handler's
    start minus that due time, so a client that falls behind shows in the figure too."""
    run.warm_up("noop")
    tags = run.tags(int(rate * seconds))
    t0 = time.time() + 0.1
    due = [t0 + i / rate for i in range(len(tags))]
    late = []
    for tag, at in zip(tags, due, strict=True):
        pause = at - time.time()
        if pause > 0:
            time.sleep(pause)
        late.append((time.time() - at) * 1000)
        run.system.submit("noop", tag)
    run.stamps.wait_ended(set(tags), 60.0)
    lat = [(run.stamps.first_start(t) - at) * 1000 for t, at in zip(tags, due, strict=True) if t in run.stamps.starts]
    return {"tasks": len(tags), "completed": len(lat), **_ms("start_latency", percentiles(lat)),
            "client_lateness_p99_ms": percentiles(late)["p99_ms"]}


def w3_roundtrip(run: Run, tasks: int, **_: Any) -> dict[str, Any]:
    """Sequential submit-and-wait of `echo`: the client's view, from submit to result in hand."""
    run.warm_up("noop")
    for tag in run.tags(20, "warm_rt"):  # the result path warmed too (a connection, a subscription)
        run.system.result(run.system.submit("echo", tag), 30.0)
    times = []
    for tag in run.tags(tasks):
        t = time.perf_counter()
        value = run.system.result(run.system.submit("echo", tag), 30.0)
        times.append((time.perf_counter() - t) * 1000)
        if value != tag:
            raise AssertionError(f"echo({tag!r}) returned {value!r}")
    return {"tasks": tasks, **_ms("roundtrip", percentiles(times))}


def w4_head_of_line(run: Run, long_s: float, shorts: int, short_s: float, **_: Any) -> dict[str, Any]:
    """One long task, then short ones, on 2 workers with one slot each: a short task should never
    wait for the long one while the other worker is free."""
    run.warm_up("sleep", 0.01)
    long_tag, *short_tags = run.tags(1 + shorts)
    submitted = {long_tag: time.time()}
    run.system.submit("sleep", long_tag, long_s)
    for tag in short_tags:
        submitted[tag] = time.time()
        run.system.submit("sleep", tag, short_s)
    run.stamps.wait_ended({long_tag, *short_tags}, 60.0)
    long_end = run.stamps.first_end(long_tag)
    starts = {t: run.stamps.first_start(t) for t in short_tags if t in run.stamps.starts}
    return {"shorts": shorts, "completed": len(starts),
            "max_short_wait_ms": round(max((s - submitted[t]) * 1000 for t, s in starts.items()), 1),
            "shorts_after_long": sum(1 for s in starts.values() if s >= long_end)}


def w5_worker_death(run: Run, tasks: int, work_s: float, kill_after: float, grace: float, victim: str,
                    **_: Any) -> dict[str, Any]:
    """SIGKILL a worker's process mid-task (`victim`: "child", the process running a task, or
    "main", the worker's main process), start a replacement at once, and count what never
    completed within `grace` seconds of the kill and what completed twice.

    The task the kill interrupts is a marked one, submitted first and lasting until past the kill:
    a kill aimed at a short task could land just after it ended (measured: CI saw a run where the
    killed child had finished its task, so nothing ran twice)."""
    run.warm_up("work", 0.01)
    [marked] = run.tags(1, "marked")
    tags = [marked, *run.tags(tasks)]
    t0 = time.time()
    run.system.submit("work", marked, kill_after + MARKED_TASK_OVERRUN_S)
    run.system.submit_all("work", tags[1:], work_s)
    time.sleep(max(0.0, t0 + kill_after - time.time()))
    run.stamps.poll()
    if marked not in run.stamps.starts:
        raise RuntimeError(f"the marked task has not started {kill_after} s after its submit")
    running = run.stamps.starts[marked][0]
    worker = run.workers.procs[int(running.worker.removeprefix("w"))]
    if victim == "main":
        pid = worker.pid
    elif running.pid in descendants(worker.pid):
        pid = running.pid
    else:
        raise RuntimeError(f"the marked task runs in {running.worker}'s main process, not in a child")
    killed_at = time.time()
    kill(pid)
    run.workers.add()
    run.stamps.wait_ended(set(tags), grace)
    ends = run.stamps.ends
    completed = [t for t in tags if t in ends]
    out = {"tasks": len(tags), "killed": victim, "lost": len(tags) - len(completed),
           "completed_twice": sum(1 for t in completed if len(ends[t]) > 1),
           "started_twice": sum(1 for t in tags if len(run.stamps.starts.get(t, ())) > 1),
           "killed_task_ran_again": len(run.stamps.starts.get(marked, ())) > 1}
    if completed and not out["lost"]:  # the short tasks' recovery: the marked one's rerun lasts as long as it
        out["recovered_after_kill_s"] = round(max(min(s.time for s in ends[t]) for t in tags[1:]) - killed_at, 2)
    restarts = [s.time for s in run.stamps.starts.get(marked, ()) if s.time > killed_at]
    if restarts:
        out["killed_task_restarted_after_s"] = round(min(restarts) - killed_at, 2)
    return out


def w6_rate_limit(run: Run, tasks: int, **_: Any) -> dict[str, Any]:
    """`tasks` rate-limited tasks at once: the busiest 1 s window of handler starts (the limit's
    promise), and the sustained rate (the median of starts per back-to-back 1 s window)."""
    run.warm_up("noop")
    tags = run.tags(tasks)
    run.system.submit_all("rated", tags)
    run.stamps.wait_ended(set(tags), tasks / RATE_LIMIT * 4 + 30)
    starts = sorted(run.stamps.first_start(t) for t in tags if t in run.stamps.starts)
    out: dict[str, Any] = {"tasks": tasks, "limit_per_s": RATE_LIMIT, "completed": len(starts),
                           "busiest_1s_window": busiest_window(starts, 1.0)}
    rate = sustained_rate(starts, 1.0)
    if rate is not None:
        out["sustained_rate"] = rate
    return out


def _ms(name: str, p: dict[str, float]) -> dict[str, float]:
    return {f"{name}_{k}": v for k, v in p.items() if k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}


WORKLOADS: dict[str, Callable[..., dict[str, Any]]] = {
    "w1": w1_throughput, "w2": w2_latency, "w3": w3_roundtrip, "w4": w4_head_of_line,
    "w5-child": lambda run, **kw: w5_worker_death(run, victim="child", **kw),
    "w5-main": lambda run, **kw: w5_worker_death(run, victim="main", **kw),
    "w6": w6_rate_limit,
    "w1-1slot": w1_throughput, "w3-1slot": w3_roundtrip,
}
