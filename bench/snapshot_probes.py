"""What watches a Raft snapshot under load: its files, machine-wide stalls, and a stream of round trips.

Used by snapshot_pause.py (part `scale` of `python -m bench.flow_control`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import qrt

from .actors import noop
from .stats import percentiles


class DumpWatcher(threading.Thread):
    """Polls the node's snapshot files: the .tmp appears when the forked child starts writing, and
    the dump is replaced (new inode) when it is done. Times are time.monotonic()."""

    def __init__(self, data_dir: str, raft_address: str, pid: int, interval: float = 0.002) -> None:
        super().__init__(name="dump-watcher", daemon=True)
        self.path = os.path.join(data_dir, f"raft-{raft_address.replace(':', '_')}.dump")
        self.pid = pid
        self.interval = interval
        # The snapshot child's largest private (copied-on-write or new) memory: what a snapshot costs
        # the machine beyond the coordinator's own RSS. Sampled every 0.5 s (smaps_rollup is not free).
        self.child_peak: dict[str, int] = {}
        self.snapshots: list[dict[str, Any]] = []
        self.writing_since: float | None = None  # the .tmp was seen then, and the dump not yet replaced
        self._stop_event = threading.Event()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def run(self) -> None:
        tmp = self.path + ".tmp"
        last = self._signature()
        sampled = 0.0
        while not self._stop_event.wait(self.interval):
            now = time.monotonic()
            if self.writing_since is None and os.path.exists(tmp):
                self.writing_since = now
            if self.writing_since is not None and now - sampled >= 0.5:
                sampled = now
                self._sample_child()
            sig = self._signature()
            if sig is not None and sig != last:
                self.snapshots.append({"started": self.writing_since, "done": now, "bytes": sig[2]})
                self.writing_since = None
            last = sig
        if self.writing_since is not None:
            self.snapshots.append({"started": self.writing_since, "done": None, "bytes": None})

    def children(self) -> list[int]:
        """The coordinator's child processes: its snapshot writers (pysyncobj forks from its own thread)."""
        found: list[int] = []
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                own = f.read()
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{tid}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                for kid in kids:
                    with open(f"/proc/{kid}/cmdline", "rb") as f:
                        if f.read() == own:  # a fork of the coordinator, nothing else
                            found.append(kid)
        except OSError:
            pass
        return found

    def _sample_child(self) -> None:
        try:
            for child in self.children():
                with open(f"/proc/{child}/smaps_rollup") as f:
                    fields = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f)
                              if k in ("Rss", "Private_Dirty", "Private_Clean")}
                if fields.get("Private_Dirty", 0) > self.child_peak.get("Private_Dirty", 0):
                    self.child_peak = fields
        except (OSError, ValueError):
            pass  # the child exited meanwhile, or /proc lacks smaps_rollup

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# A process that sleeps 2 ms at a time and prints when it woke up much later than asked.
_PROBE = """
import sys, time
threshold = float(sys.argv[1])
last = time.monotonic()
while True:
    time.sleep(0.002)
    now = time.monotonic()
    if now - last > threshold:
        print(last, round((now - last) * 1000, 3), flush=True)
    last = now
"""


class StallProbe:
    """Scheduling stalls seen by a separate, idle process: when it and this client both stall at the
    same moment, the machine (shared cores, the hypervisor) stalled, not the coordinator."""

    def __init__(self, threshold: float = 0.02) -> None:
        self.threshold = threshold
        self.stalls: list[tuple[float, float]] = []  # (time.monotonic() it slept from, ms it lasted)
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> StallProbe:
        self._proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(self.threshold)],
                                      stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        try:
            out, _ = self._proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        self.stalls = [(float(a), float(b)) for a, b in (line.split() for line in out.splitlines() if line)]


class Stream:
    """Open-loop round trips (submit + result of bench.noop) at `rate` per second."""

    def __init__(self, client: qrt.AsyncClient, rate: float) -> None:
        self.client = client
        self.interval = 1.0 / rate
        self.samples: list[tuple[float, float]] = []  # (sent, done), time.monotonic()
        self.failures: Counter[str] = Counter()
        self._jobs: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def _one(self) -> None:
        sent = time.monotonic()
        try:
            handle = await self.client.submit(noop)
            await handle.result(timeout=60)
        except Exception as exc:
            self.failures[type(exc).__name__] += 1
            return
        self.samples.append((sent, time.monotonic()))

    async def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            # Behind schedule (this process was not scheduled): launch what is due, no more.
            while next_at <= time.monotonic():
                job = asyncio.ensure_future(self._one())
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
                next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def stop(self) -> None:
        self._stop.set()
        if self._jobs:
            await asyncio.wait(self._jobs, timeout=30)

    def between(self, t0: float, t1: float, overlapping: bool = True, ref: float | None = None) -> dict[str, Any]:
        """Latencies of round trips overlapping [t0, t1] (or only those sent in it), and the longest
        gaps between results and between sends there; with `ref`, where the worst ones were."""
        inside = [(s, d) for s, d in self.samples if (d >= t0 if overlapping else s >= t0) and s <= t1]
        lat = [(d - s) * 1000 for s, d in inside]
        out = percentiles(lat)
        if ref is not None and inside:
            sent, _ = max(inside, key=lambda sd: sd[1] - sd[0])
            out["max_sent_at_s"] = round(sent - ref, 4)
        # A gap between results with no gap between sends is the coordinator's; a gap in the sends is
        # this process not being scheduled (the cores are shared), which delays the results as much.
        for name, times in (("results", [d for _, d in self.samples]), ("sends", [s for s, _ in self.samples])):
            inner = sorted(t for t in times if t0 <= t <= t1)
            bounds = [t0, *inner, t1]
            gaps = [(bounds[i + 1] - bounds[i], bounds[i]) for i in range(len(bounds) - 1)]
            if gaps:
                gap, at = max(gaps)
                out[f"longest_gap_between_{name}_ms"] = round(gap * 1000, 3)
                if ref is not None:
                    out[f"longest_gap_between_{name}_from_s"] = round(at - ref, 4)
        return out
