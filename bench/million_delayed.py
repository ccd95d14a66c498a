"""1,000,000 delayed tasks pending: the coordinator's memory, and the pause of a snapshot of them.

--scale-tasks delayed tasks (delay 1 h) submitted to an actor nobody serves, in batches of
--batch: the coordinator's RSS (target <= 1 GiB). Then, while they are pending, the longest pause
of a Raft snapshot of them under a stream of round trips (target <= 100 ms; snapshot_pause.py says
how it is made to happen and measured). At the end, forks of this run's coordinator still writing a
snapshot are stopped by PID: stopping the coordinator does not stop them. If the budget does not
allow all the tasks, it reports the largest N reached and the rate, and extrapolates to 1M
(labelled "extrapolated").

Part `scale` of `python -m bench.flow_control`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import uvloop

import qrt
from qrt.client import SubmitOptions, make_envelope

from . import harness
from .actors import UNSERVED
from .snapshot_pause import measure_under_stream
from .snapshot_probes import DumpWatcher

TARGET_RSS_BYTES = 1 << 30
TARGET_PAUSE_MS = 100.0
SCALE_TARGET_TASKS = 1_000_000
SCALE_DELAY = 3600.0  # an hour: none of them falls due during the benchmark
# Time kept for the scale part after its bulk submission (RSS, status, stream, the snapshot's
# child pickling 1M tasks with gzip on a shared core: 35-40 s on the 2-core machine of the README).
SCALE_RESERVE_S = 120.0
SETTLE = 1.0


async def _bulk_submit(urls: list[str], n: int, batch: int, inflight: int, stop_at: float,
                       out: dict[str, Any]) -> None:
    """`n` tasks delayed by an hour, `batch` per request, `inflight` requests at once.

    submit_many has no delay option and submit_with sends one task per request (a million round
    trips), so the envelopes are built exactly as submit_with builds them (`make_envelope` with
    `SubmitOptions(delay=...)`) and sent with `AsyncClient._submit`, the private method behind
    submit_many: acceptable in a benchmark, not a public API.
    """
    options = SubmitOptions(delay=SCALE_DELAY)
    accepted = 0
    pending: set[asyncio.Task[list[qrt.AsyncTaskHandle]]] = set()
    t0 = time.monotonic()
    async with qrt.AsyncClient(urls) as client:
        try:
            for start in range(0, n, batch):
                if time.monotonic() >= stop_at:
                    out["stopped_by_budget"] = True
                    break
                envelopes = [make_envelope(UNSERVED, (), None, options) for _ in range(min(batch, n - start))]
                pending.add(asyncio.ensure_future(client._submit(envelopes)))
                if len(pending) >= inflight:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    accepted += sum(len(d.result()) for d in done)
            if pending:
                done, pending = await asyncio.wait(pending)
                accepted += sum(len(d.result()) for d in done)
        finally:
            elapsed = time.monotonic() - t0
            out.update({"requested": n, "accepted": accepted, "seconds": round(elapsed, 2),
                        "rate_per_s": round(accepted / elapsed, 1) if elapsed else None})


def measure(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    out: dict[str, Any] = {"tasks": args.scale_tasks, "delay_s": SCALE_DELAY, "batch": args.batch,
                           "target_rss_bytes": TARGET_RSS_BYTES, "target_pause_ms": TARGET_PAUSE_MS}
    report["scale"] = out
    with harness.cluster(1) as c:
        node = c.coordinator_nodes[0]
        assert node.proc is not None
        pid = node.proc.pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()  # names this run's own data directory: its forks have the same one
        watcher = DumpWatcher(node.data_dir, node.raft, pid)
        watcher.start()
        try:
            harness.start_workers(c, args.workers, args.concurrency, deadline)
            time.sleep(SETTLE)
            out["rss_idle"] = harness.proc_memory(pid)
            cpu0 = harness.proc_cpu_seconds(pid)
            bulk: dict[str, Any] = {}
            out["submit"] = bulk
            stop_at = time.monotonic() + max(10.0, deadline.remaining() - SCALE_RESERVE_S)
            uvloop.run(_bulk_submit(c.urls, args.scale_tasks, args.batch, args.inflight, stop_at, bulk))
            bulk["coordinator_cpu_s"] = round(harness.proc_cpu_seconds(pid) - cpu0, 2)
            time.sleep(SETTLE)
            out["rss_pending"] = harness.proc_memory(pid)
            t = time.monotonic()
            with qrt.Client(c.urls) as client:
                status = client.status()
            out["status_call_ms"] = round((time.monotonic() - t) * 1000, 1)  # O(tasks): depth() walks them all
            pending = status["queues"].get(UNSERVED, {})
            out["pending_delayed"] = pending.get("delayed", 0)
            out["commit_index_before"] = status["commit_index"]
            if out["pending_delayed"] != bulk["accepted"]:
                harness.fail_check(report, f"scale: {out['pending_delayed']} delayed of {bulk['accepted']} accepted")
            out["snapshots_before_stream"] = len(watcher.snapshots)
            uvloop.run(measure_under_stream(c.urls, status["commit_index"], watcher, args.stream_rate,
                                            deadline, out))
            time.sleep(SETTLE)
            out["rss_after_snapshot"] = harness.proc_memory(pid)
        finally:
            watcher.stop()
            c.stop()  # the coordinator and workers, by PID (the `with` does it again, harmlessly)
            out["snapshot_children_stopped"] = _stop_snapshot_children(pid, cmdline)
    _scale_verdict(args, out, report)


def _stop_snapshot_children(coordinator: int, cmdline: bytes) -> int:
    """Stopping the coordinator does not stop a snapshot child still pickling (nor does it keep the
    coordinator from forking one while it shuts down): it would run on alone for up to ~40 s with
    ~2 GiB at 1M tasks, then write into a removed directory. Stop those forks of this run's
    coordinator (same command line, naming this run's temporary data directory), by PID."""
    stopped = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == coordinator:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() != cmdline:
                    continue
            os.kill(int(entry), signal.SIGKILL)
            stopped += 1
        except OSError:  # gone meanwhile (ProcessLookupError), or not ours to read
            continue
    return stopped


def _scale_verdict(args: Any, out: dict[str, Any], report: dict[str, Any]) -> None:
    reached = out.get("submit", {}).get("accepted", 0)
    rss = max(out.get("rss_pending", {}).get("VmRSS", 0), out.get("rss_after_snapshot", {}).get("VmRSS", 0))
    idle = out.get("rss_idle", {}).get("VmRSS", 0)
    if reached and rss:
        out["rss_bytes_per_pending_task"] = round((rss - idle) / reached)
        out["rss_max_mib"] = round(rss / 2**20, 1)
        if reached < SCALE_TARGET_TASKS:
            estimate = idle + (rss - idle) * SCALE_TARGET_TASKS / reached
            out["extrapolated_to_1M"] = {
                "note": f"extrapolated linearly from {reached} tasks, not measured",
                "rss_mib": round(estimate / 2**20, 1),
                "submit_seconds": round(SCALE_TARGET_TASKS / out["submit"]["rate_per_s"], 1)
                if out["submit"].get("rate_per_s") else None,
            }
        measured_1m = reached >= SCALE_TARGET_TASKS
        out["meets_rss_target"] = rss <= TARGET_RSS_BYTES if measured_1m else None
        if measured_1m and not out["meets_rss_target"]:
            harness.miss_target(report, f"scale: coordinator RSS {rss / 2**20:.0f} MiB > 1024 MiB with {reached} tasks")
    during = out.get("snapshot", {}).get("during_snapshot", {})
    pause = during.get("max_ms")
    if pause is not None:
        out["meets_pause_target"] = pause <= TARGET_PAUSE_MS
        if not out["meets_pause_target"]:
            outside = during.get("max_ms_outside_machine_stalls")
            harness.miss_target(report, f"scale: round trip of {pause:.0f} ms during the snapshot "
                                        f"(> {TARGET_PAUSE_MS:.0f} ms; {outside} ms outside machine-wide stalls)")
    elif "snapshot" in out:
        harness.miss_target(report, "scale: no snapshot measured")

