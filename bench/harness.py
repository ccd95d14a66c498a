"""What every benchmark shares: its time budget, the cluster it starts, /proc readings, the JSON report.

A benchmark fills its report as it goes, so that when its budget runs out (or it fails) it still
prints what it measured, marked `"timed_out"` or `"error"`; every process it started is stopped by
`LocalCluster` on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import qrt
from qrt.local import LocalCluster, wait_until

from .machine import machine_info

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
ACTORS_MODULE = "bench.actors"

# Each script's whole budget: starting clusters included, it ends (and reports) within this.
DEFAULT_TIMEOUT = 300.0
# Past the budget, this long is left for a phase to notice; then the main thread is interrupted.
HARD_STOP_GRACE = 30.0
# Processes start in ~0.5 s and elect a leader in ~1-2 s; a slow, loaded machine gets slack.
STARTUP_TIMEOUT = 30.0


class Deadline:
    """The benchmark's budget. Phases bound their waits with `remaining()`; past the budget plus a
    grace period a watchdog interrupts the main thread (KeyboardInterrupt), so nothing hangs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self._watchdog = threading.Timer(seconds + HARD_STOP_GRACE, _interrupt_main_thread)
        self._watchdog.daemon = True

    def __enter__(self) -> Deadline:
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchdog.cancel()

    def remaining(self) -> float:
        """Seconds left; raises TimeoutError once the budget is spent."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the benchmark's budget of {self.seconds:.0f} s is spent")
        return left


def _interrupt_main_thread() -> None:
    """SIGINT to the main thread itself: a real signal interrupts a blocking wait (a sleep, a lock)
    there, which `_thread.interrupt_main` does not; asyncio.Runner turns it into cancelling its task."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


@contextmanager
def cluster(nodes: int, fsync: bool = False, curve: bool = False, history: bool = True, metrics: bool = False,
            env: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """A started `nodes`-node coordinator cluster on 127.0.0.1, in a temporary directory removed after
    every process is stopped; a multi-node one encrypts its Raft traffic; `fsync`: `qrt coordinator --fsync`;
    `history` False: `--no-history`; `metrics`: each node serves them (Node.metrics); `env`: more
    environment for its nodes and workers."""
    with tempfile.TemporaryDirectory(prefix="qrt-bench-", ignore_cleanup_errors=True) as base, LocalCluster(
        nodes=nodes,
        # Raft traffic between nodes is Fernet-encrypted with a password (DESIGN.md): measure that cost.
        password=secrets.token_hex(16) if nodes > 1 else None,
        base_dir=base,
        log_level="warning",
        fsync=fsync,
        curve=curve,  # CURVE on the client/worker port (LocalCluster.curve_keys)
        node_args=[] if history else ["--no-history"],
        metrics=metrics,
        # Workers import bench.actors whatever the caller's working directory.
        env={"PYTHONPATH": os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p), **(env or {})},
    ) as c:
        if nodes > 1:
            # A node that dialled a peer before it listened retries after pysyncobj's connectionRetryTime
            # (5 s): until then the cluster commits with 2 of 3 nodes, which is not what is measured here.
            wait_until(lambda: all_joined(c), STARTUP_TIMEOUT, 0.25, "every node to join the Raft cluster")
        yield c


def disk_info(directory: str, probes: int = 200) -> dict[str, Any]:
    """The filesystem holding `directory` and the median cost there of a 512-byte write and its
    fdatasync: what `--fsync` pays twice per Raft entry, on each node (a VM's virtual disk may
    acknowledge from the host's cache: read a rate measured with --fsync beside this figure)."""
    path = os.path.realpath(directory)
    device, fstype, longest = "?", "?", ""
    with open("/proc/mounts") as f:
        for line in f:
            dev, mount, kind = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(longest):
                device, fstype, longest = dev, kind, mount
    probe = os.path.join(directory, "fdatasync-probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for i in range(probes):
            t0 = time.perf_counter()
            os.pwrite(fd, b"x" * 512, i * 512)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(probe)
    return {"device": device, "filesystem": fstype,
            "write_fdatasync_p50_ms": round(sorted(times)[len(times) // 2] * 1000, 3)}


def start_workers(c: LocalCluster, count: int, concurrency: int, deadline: Deadline) -> None:
    """Start `count` worker processes serving bench.actors and wait until the leader knows them all."""
    for _ in range(count):
        c.start_worker([ACTORS_MODULE], concurrency=concurrency)

    def ready() -> bool:
        with qrt.Client(c.urls) as client:
            workers = client.status()["workers"]
        return sum(1 for w in workers if w["connected"] and "bench.noop" in w["actors"]) >= count

    wait_until(ready, min(STARTUP_TIMEOUT, deadline.remaining()), 0.1, f"{count} workers connected")


def leader_pid(c: LocalCluster) -> int:
    index = c.wait_for_leader()
    proc = c.coordinator_nodes[index].proc
    assert proc is not None
    return proc.pid


def raft_view(c: LocalCluster) -> list[dict[str, Any]]:
    """Each node's own view (leader?, term, commit and applied index, state digest): a follower that
    lags or a digest that differs shows here."""
    out = []
    for node in c.coordinator_nodes:
        keys = c.curve_keys("client")
        with qrt.Client([node.url], curve_secret_key=keys.get("curve_secret_key"),
                        curve_server_key=keys.get("curve_server_key")) as client:
            s = client.status(local=True)
        out.append({k: s.get(k) for k in ("is_leader", "term", "commit_index", "last_applied", "digest")})
    return out


def all_joined(c: LocalCluster) -> bool:
    """Every node follows one leader in one term and has applied everything committed."""
    try:
        view = raft_view(c)
    except qrt.QrtError:
        return False
    terms = {v["term"] for v in view}
    return (len(terms) == 1 and 0 not in terms and sum(bool(v["is_leader"]) for v in view) == 1
            and min(v["last_applied"] for v in view) >= max(v["commit_index"] for v in view))


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS (resident now), VmHWM (peak resident), RssAnon (heap) and RssFile (mapped files), in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of stat


def cpu_snapshot(c: LocalCluster) -> dict[str, float]:
    """CPU seconds so far of every process of the cluster, and of this one (the client)."""
    out = {f"coordinator{i}": proc_cpu_seconds(n.proc.pid) for i, n in enumerate(c.coordinator_nodes)
           if n.proc is not None and n.proc.poll() is None}
    out.update({f"worker{i}": proc_cpu_seconds(w.pid) for i, w in enumerate(c.workers) if w.poll() is None})
    out["client"] = time.process_time()
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 3) for k in after if k in before}


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="whole budget in seconds; past it the benchmark stops and reports what it has")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/<name>-<time>.json")
    return parser


def run_benchmark(name: str, params: dict[str, Any], timeout: float,
                  body: Callable[[Deadline, dict[str, Any]], None]) -> dict[str, Any]:
    """Run `body(deadline, report)`; the report it fills comes back, complete or not, with the machine."""
    report: dict[str, Any] = {"benchmark": name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "params": params, "machine": machine_info()}
    t0 = time.monotonic()
    with Deadline(timeout) as deadline:
        try:
            body(deadline, report)
        except (TimeoutError, KeyboardInterrupt) as exc:
            report["timed_out"] = True
            report["error"] = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
    report["elapsed_s"] = round(time.monotonic() - t0, 2)
    return report


def fail_check(report: dict[str, Any], message: str) -> None:
    """A check the benchmark itself depends on failed (lost tasks, a broken limit): the exit status is 1."""
    report.setdefault("failed_checks", []).append(message)


def miss_target(report: dict[str, Any], message: str) -> None:
    """A figure below its target: reported, not a failure."""
    report.setdefault("targets_missed", []).append(message)


def emit(report: dict[str, Any], save: bool = True) -> int:
    """Print the report as one JSON object; save a copy; the exit status says whether it completed."""
    if save:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        path = os.path.join(RESULTS_DIR, f"{report['benchmark']}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"saved {os.path.relpath(path, REPO_ROOT)}", file=sys.stderr)
    print(json.dumps(report, indent=2), flush=True)
    return 1 if report.get("error") or report.get("failed_checks") else 0
