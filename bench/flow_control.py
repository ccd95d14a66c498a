"""Flow control: rate-limit accuracy, round-robin between keys, and 1,000,000 delayed tasks pending.

    python -m bench.flow_control [--part rate|fairness|scale] [--quick] [--timeout 300] [--no-save]

Each part starts its own 1-node coordinator and 2 worker processes x 8 slots serving bench.actors,
on 127.0.0.1 (the machine's 2 cores are shared by all of them and by this client).

rate      `bench.rate50` (rate_limit="50/s", an async no-op returning time.time() as its own start
          stamp), saturated: --rate-tasks submitted at once. From the handlers' stamps: the 1 s
          windows (closed, [t, t+1], anchored at each start) holding more than 50 starts, strictly
          and with --tolerance for the lease-to-handler delay (the limit counts lease commits, on
          the leader's clock; a handler starts a little later, by a varying delay, so a window of
          1 s - tolerance of handler stamps maps into 1 s of lease stamps); the busiest window;
          the achieved rate and utilisation = the time a perfect limiter needs for these tasks
          (bursts of 50 at 0, 1, 2 ... s) / the time taken (target >= 95 %).
fairness  10 tenants; tenant 0 submits --fair-big tasks first, then tenants 1-9 --fair-small each
          (one batch, tenant after tenant), ~20 ms of async work each. Per tenant: starts in the
          window while every tenant has work (from the first start of a small tenant's task to the
          first start that leaves some tenant nothing queued), Jain's index of the 9 small tenants'
          throughput there (target >= 0.95), and the wait from submit to start (handler stamp minus
          the client's clock before its submit), small tenants vs the big one. Three
          actors: `fair_rr` (the target) has a keyed limit that never binds, so lanes exist and
          the 16 slots are what is scarce: who gets a slot is the round-robin alone.
          `fair_cap1` (Concurrency(1, key="tenant")): each tenant runs one task at a time, and with
          16 slots >= 10 tenants the cap alone makes the shares equal, whatever the order of
          choice: it shows the cap, not the round-robin (the big tenant's backlog is purged once
          the small tenants are done: alone at one task at a time it would take ~25 s).
          `fair_fifo`: no key, hence one lane, the control: small tenants wait behind the backlog.
scale     --scale-tasks delayed tasks (delay 1 h) submitted to an actor nobody serves, in batches
          of --batch: the coordinator's RSS (target <= 1 GiB). Then, while they are pending, a
          steady stream of submit+result round trips of bench.noop (--stream-rate per second,
          open loop) while a Raft snapshot is taken: its longest latency and the longest gap
          between results during the snapshot (target <= 100 ms). pysyncobj compacts its log
          (forks, and the child pickles the state to raft-*.dump) when the log holds more than
          logCompactionMinEntries = 5000 entries, or 300 s after the last one. Group commit makes
          the 1M tasks only ~500 entries, so after them this benchmark adds the missing entries
          with sequential one-entry requests (a `cancel` of an unknown id: no state), stopping
          just short of the threshold so that the stream's own entries cross it: the snapshot
          happens at a known moment, on every run, with nothing but the stream going on. It is
          seen in the data directory: raft-*.dump.tmp appears when the child starts writing (just
          after the fork), and raft-*.dump is replaced when it is done. Latencies are split into
          phases (baseline, filler, after it) and windows (around the fork, the whole snapshot,
          around the dump's replacement), with the longest gaps between results and between sends:
          a gap in the sends is this client not running, not the coordinator. A separate idle
          process notes machine-wide scheduling stalls (> 20 ms) to tell them apart. At the end,
          forks of this run's coordinator still writing a snapshot are stopped by PID: stopping
          the coordinator does not stop them.
          If the budget does not allow all the tasks, it reports the largest N reached and the
          rate, and extrapolates to 1M (labelled "extrapolated").

--quick: 250 rate-limited tasks and 100,000 pending tasks (about 25 s in all, instead of ~100 s).
Targets missed are listed under "targets_missed"; lost tasks or a broken limit under "failed_checks".
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvloop

import qrt
from qrt.client import SubmitOptions, make_envelope

from . import harness
from .actors import FAIR_WORK_S, RATE_LIMIT, RATE_LIMIT_N, UNSERVED, fair_cap1, fair_fifo, fair_rr, noop, rate50
from .stats import percentiles

PARTS = ("rate", "fairness", "scale")
RATE_PERIOD = 1.0
TARGET_UTILISATION = 0.95
TARGET_JAIN = 0.95
TARGET_RSS_BYTES = 1 << 30
TARGET_PAUSE_MS = 100.0
SCALE_TARGET_TASKS = 1_000_000
SCALE_DELAY = 3600.0  # an hour: none of them falls due during the benchmark
# pysyncobj's SyncObjConf default: the log is compacted (a snapshot) once it holds more entries.
LOG_COMPACTION_MIN_ENTRIES = 5000
# The filler stops this many entries short of the threshold; the stream crosses it (~2 entries per
# round trip: the submit with its lease, then the outcome), in about a second at 200/s.
FILLER_HEADROOM = 300
BASELINE_S = 2.0  # the stream alone, before the filler: its latencies without a snapshot
AFTER_SNAPSHOT_S = 1.0  # the stream goes on this long after the dump is replaced
SNAPSHOT_START_TIMEOUT = 30.0
# Time kept for the scale part after its bulk submission (RSS, status, stream, the snapshot's
# child pickling 1M tasks with gzip on a shared core: 35-40 s on the 2-core machine of the README).
SCALE_RESERVE_S = 120.0
SETTLE = 1.0

QUICK = {"rate_tasks": 5 * RATE_LIMIT_N, "fair_big": 1000, "fair_small": 10, "scale_tasks": 100_000}
FULL = {"rate_tasks": 12 * RATE_LIMIT_N, "fair_big": 1000, "fair_small": 10, "scale_tasks": SCALE_TARGET_TASKS}


# -- part 1: the rate limit -----------------------------------------------------------------------


async def _rate_run(urls: list[str], n: int, deadline: harness.Deadline) -> tuple[float, list[Any], list[float]]:
    async with qrt.AsyncClient(urls) as client:
        t_submit = time.time()
        handles = await client.submit_many(rate50, [()] * n)
        expected = n / RATE_LIMIT_N * RATE_PERIOD + 30.0
        async with asyncio.timeout(min(expected, deadline.remaining())):
            results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        # The lease commits' own stamps (what the limit counts, DESIGN.md): from the raw `wait`
        # reply's task summary, which the public handle does not return.
        summaries = await asyncio.gather(*(client._request({"t": "wait", "id": h.id, "timeout": 5.0}, 5.0)
                                           for h in handles))
    leases = [s["started_at"] for s in summaries if "started_at" in s]
    return t_submit, results, leases


def rate_figures(stamps: list[float], n: int, period: float, tolerance: float) -> dict[str, Any]:
    """What the stamps say about the limit "n per period" (stamps sorted)."""
    s = sorted(stamps)
    if len(s) < 2:
        return {}
    counts = [bisect_right(s, t + period) - i for i, t in enumerate(s)]
    tolerant = [bisect_right(s, t + period - tolerance) - i for i, t in enumerate(s)]
    busiest = max(range(len(s)), key=counts.__getitem__)
    # Shortest span holding n+1 starts: a closed window of `period` holds more than n iff it is <= period.
    spans = [s[i + n] - s[i] for i in range(len(s) - n)]
    # How late each start came after the window first let it in (s[i-n] + period): the limiter's
    # reaction time (negative: a strict violation).
    lateness_ms = [(s[i] - s[i - n] - period) * 1000 for i in range(n, len(s))]
    span = s[-1] - s[0]
    ideal = (math.ceil(len(s) / n) - 1) * period  # a perfect limiter: bursts of n at 0, P, 2P, ...
    utilisation = ideal / span if span > 0 else None
    per_second = Counter(int((t - s[0]) // period) for t in s)
    return {
        "starts": len(s),
        "violations": sum(1 for c in counts if c > n),
        "violations_with_tolerance": sum(1 for c in tolerant if c > n),
        "busiest_window": {"starts": counts[busiest], "at_s": round(s[busiest] - s[0], 4)},
        "shortest_span_of_n_plus_1_starts_s": round(min(spans), 6) if spans else None,
        "tolerance_needed_ms": round(max(0.0, period - min(spans)) * 1000, 3) if spans else None,
        "first_to_last_s": round(span, 4),
        "ideal_first_to_last_s": ideal,
        "achieved_rate": round(n / period * utilisation, 2) if utilisation else None,
        "naive_rate_all_over_span": round(len(s) / span, 2) if span else None,
        "naive_rate_after_first_burst": round((len(s) - n) / span, 2) if span else None,
        "utilisation": round(utilisation, 4) if utilisation else None,
        "lateness_after_window_reopens": percentiles(lateness_ms),
        "starts_per_second": [per_second.get(k, 0) for k in range(max(per_second) + 1)],
    }


def part_rate(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    out: dict[str, Any] = {"actor": rate50.name, "limit": RATE_LIMIT, "tasks": args.rate_tasks,
                           "tolerance_ms": args.tolerance * 1000, "target_utilisation": TARGET_UTILISATION}
    report["rate"] = out
    with harness.cluster(1) as c:
        harness.start_workers(c, args.workers, args.concurrency, deadline)
        t_submit, results, leases = uvloop.run(_rate_run(c.urls, args.rate_tasks, deadline))
    stamps = [r for r in results if isinstance(r, float)]
    failed = Counter(type(r).__name__ for r in results if not isinstance(r, float))
    out["outcomes"] = {"succeeded": len(stamps), **failed}
    out.update(rate_figures(stamps, RATE_LIMIT_N, RATE_PERIOD, args.tolerance))
    at_leases = rate_figures(leases, RATE_LIMIT_N, RATE_PERIOD, 0.0)
    out["at_lease_commits"] = {k: at_leases.get(k) for k in ("starts", "violations", "busiest_window", "utilisation")}
    if at_leases.get("violations"):
        _fail(report, f"rate: {at_leases['violations']} windows of {RATE_PERIOD} s hold more than "
                      f"{RATE_LIMIT_N} lease commits")
    if stamps:
        out["submit_to_first_start_ms"] = round((min(stamps) - t_submit) * 1000, 3)
    if failed:
        _fail(report, f"rate: {len(stamps)} of {args.rate_tasks} tasks succeeded ({dict(failed)})")
    if out.get("violations_with_tolerance"):
        _fail(report, f"rate: {out['violations_with_tolerance']} windows of {RATE_PERIOD - args.tolerance:.3f} s "
                      f"hold more than {RATE_LIMIT_N} handler starts")
    if out.get("utilisation") is not None:
        out["meets_target"] = out["utilisation"] >= TARGET_UTILISATION
        if not out["meets_target"]:
            _missed(report, f"rate: utilisation {out['utilisation']:.1%} < {TARGET_UTILISATION:.0%}")


# -- part 2: fairness between keys ----------------------------------------------------------------


def jain(values: list[Any]) -> float | None:
    total, squares = sum(values), sum(v * v for v in values)
    return round(total * total / (len(values) * squares), 4) if squares else None


async def _fair_run(urls: list[str], actor: qrt.Actor[Any, Any], tenants: int, big: int, small: int,
                    purge_after_small: bool, deadline: harness.Deadline) -> dict[str, Any]:
    async with qrt.AsyncClient(urls) as client:
        t_big = time.time()
        big_handles = await client.submit_many(actor, [(0,)] * big)
        t_small = time.time()
        # Tenant after tenant in one batch: a FIFO queue would serve tenant 1 wholly before tenant 2.
        small_handles = await client.submit_many(actor, [(t,) for t in range(1, tenants) for _ in range(small)])
        t_accepted = time.time()
        budget = min(deadline.remaining(), 60.0 + (big + small * tenants) * FAIR_WORK_S)
        async with asyncio.timeout(budget):
            big_jobs = [asyncio.ensure_future(h.result()) for h in big_handles]
            small_results = await asyncio.gather(*(h.result() for h in small_handles), return_exceptions=True)
            purged = 0
            if purge_after_small:
                purged = await client.purge(actor.name)
            big_results = await asyncio.gather(*big_jobs, return_exceptions=True)
    return {"t_big": t_big, "t_small": t_small, "t_accepted": t_accepted, "purged": purged,
            "big": big_results, "small": small_results}


def fair_figures(raw: dict[str, Any], tenants: int, small: int) -> dict[str, Any]:
    starts: dict[int, list[float]] = {0: [r for r in raw["big"] if isinstance(r, float)]}
    for i, r in enumerate(raw["small"]):
        if isinstance(r, float):
            starts.setdefault(1 + i // small, []).append(r)
    errors = Counter(type(r).__name__ for r in raw["big"] + raw["small"] if not isinstance(r, float))
    out: dict[str, Any] = {"outcomes": {"started": sum(len(v) for v in starts.values()), **errors},
                           "purged_big_tasks": raw["purged"]}
    if any(len(starts.get(t, [])) < small for t in range(1, tenants)):
        out["error"] = "some small tenant's tasks did not all run"
        return out
    # The window while every tenant has work: from the first start of a small tenant's task (their one
    # batch is committed by then: all of them are queued) to the first start that leaves a tenant with
    # nothing queued (its last). From the small batch's send instead, the big tenant's starts before
    # that batch commits would count as unfair.
    t0 = min(min(starts[t]) for t in range(1, tenants))
    t1 = min(max(v) for v in starts.values() if v)
    window = t1 - t0
    if window <= 0:  # FIFO: tenant 0's last task started before any small tenant's first
        out["note"] = "no window where every tenant has work: one tenant's queue emptied before another's started"
    counts = {t: sum(1 for s in starts.get(t, []) if t0 <= s <= t1) for t in range(tenants)}
    rates = {t: counts[t] / window if window > 0 else None for t in counts}
    small_rates = [rates[t] for t in range(1, tenants)]
    total = sum(counts.values())
    small_waits = [(s - raw["t_small"]) * 1000 for t in range(1, tenants) for s in starts[t]]
    big_waits = [(s - raw["t_big"]) * 1000 for s in starts[0]]
    done_ms = [(max(starts[t]) - raw["t_small"]) * 1000 for t in range(1, tenants)]
    out.update({
        "window_s": round(window, 4),
        "starts_in_window": counts,
        "throughput_in_window_per_s": {t: None if r is None else round(r, 1) for t, r in rates.items()},
        "jain_small_tenants": jain(small_rates) if window > 0 else None,
        "jain_all_tenants": jain(list(rates.values())) if window > 0 else None,
        "big_tenant_share_in_window": round(counts[0] / total, 4) if total else None,
        "fair_share": round(1 / tenants, 4),
        "wait_small_ms": _p50_max(small_waits),
        "wait_big_ms": _p50_max(big_waits),
        "small_tenant_last_start_ms": _p50_max(done_ms),
    })
    return out


def _p50_max(values: list[float]) -> dict[str, Any]:
    p = percentiles(values)
    return {k: p[k] for k in ("n", "p50_ms", "max_ms")} if p else {}


def part_fairness(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
    out: dict[str, Any] = {"tenants": args.tenants, "big_tenant_tasks": args.fair_big,
                           "small_tenant_tasks": args.fair_small, "work_ms": FAIR_WORK_S * 1000,
                           "slots": args.workers * args.concurrency, "target_jain_small": TARGET_JAIN, "runs": {}}
    report["fairness"] = out
    modes = [("round_robin", fair_rr, False), ("cap1_per_tenant", fair_cap1, True), ("fifo_control", fair_fifo, False)]
    with harness.cluster(1) as c:
        harness.start_workers(c, args.workers, args.concurrency, deadline)
        for name, actor, purge in modes:
            raw = uvloop.run(_fair_run(c.urls, actor, args.tenants, args.fair_big, args.fair_small, purge, deadline))
            entry = {"actor": actor.name, **fair_figures(raw, args.tenants, args.fair_small)}
            out["runs"][name] = entry
            if entry.get("error"):
                _fail(report, f"fairness {name}: {entry['error']} ({entry['outcomes']})")
    rr = out["runs"]["round_robin"]
    if rr.get("jain_small_tenants") is not None:
        rr["meets_target"] = rr["jain_small_tenants"] >= TARGET_JAIN
        if not rr["meets_target"]:
            _missed(report, f"fairness: Jain index {rr['jain_small_tenants']} < {TARGET_JAIN}")


# -- part 3: 1M delayed tasks, memory and the snapshot pause ----------------------------------------


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


async def _fill_log(client: qrt.AsyncClient, entries_so_far: Callable[[int], float], target: int) -> dict[str, Any]:
    """Sequential requests that each become one Raft entry and change nothing (a cancel of an unknown
    id), until `entries_so_far(requests sent)` reaches `target`: pysyncobj's log then nears its
    compaction threshold."""
    t0 = time.monotonic()
    n = 0
    while entries_so_far(n) < target:
        await client.cancel(uuid.uuid4().hex)
        n += 1
    elapsed = time.monotonic() - t0
    return {"requests": n, "seconds": round(elapsed, 2), "per_s": round(n / elapsed, 1) if elapsed else None}


async def _snapshot_under_stream(urls: list[str], commit_index: int, watcher: DumpWatcher, rate: float,
                                 deadline: harness.Deadline, out: dict[str, Any]) -> None:
    known = len(watcher.snapshots)
    with StallProbe() as probe:
        stream, t_filled, t_end = await _stream_phases(urls, commit_index, watcher, rate, deadline, out, known)
    next_started = watcher.writing_since
    stalls = probe.stalls
    out["machine_stalls_over_20ms"] = len(stalls)
    new = watcher.snapshots[known:]
    if not new:
        out["snapshot"] = {"error": "no snapshot seen within the wait"}
        return
    snap = new[0]
    started, done = snap["started"], snap["done"]
    entry: dict[str, Any] = {"dump_bytes": snap["bytes"]}
    # Entries appended while the child wrote can exceed the threshold again: pysyncobj then forks
    # the next snapshot at once (seen as another .tmp).
    again = [x["started"] for x in new[1:]] + ([next_started] if next_started is not None else [])
    if watcher.child_peak:
        entry["child_peak_memory"] = watcher.child_peak
    if started is not None and again and again[0] is not None:
        entry["next_snapshot_started_after_fork_s"] = round(again[0] - started, 3)
    if started is not None:
        entry["started_after_filler_s"] = round(started - t_filled, 3)
    if started is not None and done is not None:
        entry["write_s"] = round(done - started, 3)  # the child's pickling + gzip, fork to replace
    first = started if started is not None else done
    if first is not None:
        entry["fork_at_monotonic"] = round(first, 4)  # to line up with other processes' logs
        last = done if done is not None else t_end
        # The fork stalls the parent; then the child competes for the cores while it writes.
        entry["around_fork"] = stream.between(first - 0.05, first + 0.25, ref=first)
        entry["during_snapshot"] = stream.between(first - 0.05, last + 0.25, ref=first)
        entry["around_dump_replaced"] = stream.between(last - 0.05, last + 0.25, ref=first)
        entry["machine_stalls"] = [{"at_s": round(at - first, 4), "ms": ms} for at, ms in stalls
                                   if first - 0.05 <= at <= last + 0.25]
        # The same, leaving out round trips that overlap a stall the idle probe process saw too.
        clear = [(d - s) * 1000 for s, d in stream.samples if d >= first - 0.05 and s <= last + 0.25
                 and not any(s <= at + ms / 1000 and at <= d for at, ms in stalls)]
        entry["during_snapshot"]["max_ms_outside_machine_stalls"] = round(max(clear), 3) if clear else None

        def worst(t0: float, t1: float) -> list[dict[str, float]]:
            found = sorted(((d - s) * 1000, s - first) for s, d in stream.samples if d >= t0 and s <= t1)
            return [{"latency_ms": round(lat, 3), "sent_after_fork_s": round(at, 4)} for lat, at in found[-3:][::-1]]
        entry["worst_round_trips_near_fork"] = worst(first - 0.05, first + 1.0)
        entry["worst_round_trips_near_dump_replaced"] = worst(last - 1.0, last + 0.25)
    out["snapshot"] = entry


async def _stream_phases(urls: list[str], commit_index: int, watcher: DumpWatcher, rate: float,
                         deadline: harness.Deadline, out: dict[str, Any], known: int) -> tuple[Stream, float, float]:
    """The stream alone, a status probe, the filler, then the stream alone until the snapshot is
    written; its latencies per phase go into `out`."""
    async with qrt.AsyncClient(urls) as client, qrt.AsyncClient(urls) as control:
        stream = Stream(client, rate)
        runner = asyncio.ensure_future(stream.run())
        try:
            t_start = time.monotonic()
            await asyncio.sleep(BASELINE_S)
            t_probe = time.monotonic()
            # How many Raft entries a round trip makes (the submit with its lease; the outcome): one
            # status call (it walks every task: a pause of its own, kept out of the windows measured).
            done_at_probe = len(stream.samples)
            probed = int((await control.status())["commit_index"])
            per_rt = (probed - commit_index) / max(1, done_at_probe)
            t_fill = time.monotonic()
            done_at_fill = len(stream.samples)
            target = LOG_COMPACTION_MIN_ENTRIES - FILLER_HEADROOM

            def entries(requests: int) -> float:
                return probed + per_rt * (len(stream.samples) - done_at_fill) + requests

            out["log_entries"] = {"before_stream": commit_index, "after_baseline": probed,
                                  "per_round_trip": round(per_rt, 3), "filler_stops_at": target,
                                  "compaction_above": LOG_COMPACTION_MIN_ENTRIES}
            out["filler"] = await _fill_log(control, entries, target)
            t_filled = time.monotonic()
            start_limit = t_filled + SNAPSHOT_START_TIMEOUT
            while len(watcher.snapshots) == known and watcher.is_alive():
                left = deadline.end - time.monotonic()
                if left < 20 or (watcher.writing_since is None and time.monotonic() > start_limit):
                    break  # no snapshot started, or the child's writing outlasts the budget
                await asyncio.sleep(0.05)
            await asyncio.sleep(AFTER_SNAPSHOT_S)
        finally:
            t_end = time.monotonic()
            await stream.stop()
            runner.cancel()
        out["log_entries"]["at_end"] = (await control.status())["commit_index"]
    # Round trips sent in each phase (those caught by the status probe's own pause are in none).
    out["stream"] = {"rate_per_s": rate, "round_trips": len(stream.samples), "failures": dict(stream.failures),
                     "baseline": stream.between(t_start, t_probe, overlapping=False),
                     "during_filler": stream.between(t_fill, t_filled, overlapping=False),
                     "after_filler": stream.between(t_filled, t_end, overlapping=False)}
    return stream, t_filled, t_end


def part_scale(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
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
                _fail(report, f"scale: {out['pending_delayed']} delayed of {bulk['accepted']} accepted")
            out["snapshots_before_stream"] = len(watcher.snapshots)
            uvloop.run(_snapshot_under_stream(c.urls, status["commit_index"], watcher, args.stream_rate,
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
            _missed(report, f"scale: coordinator RSS {rss / 2**20:.0f} MiB > 1024 MiB with {reached} tasks")
    during = out.get("snapshot", {}).get("during_snapshot", {})
    pause = during.get("max_ms")
    if pause is not None:
        out["meets_pause_target"] = pause <= TARGET_PAUSE_MS
        if not out["meets_pause_target"]:
            _missed(report, f"scale: round trip of {pause:.0f} ms during the snapshot (> {TARGET_PAUSE_MS:.0f} ms; "
                            f"{during.get('max_ms_outside_machine_stalls')} ms outside machine-wide stalls)")
    elif "snapshot" in out:
        _missed(report, "scale: no snapshot measured")


# -- the script ------------------------------------------------------------------------------------


def _fail(report: dict[str, Any], message: str) -> None:
    report.setdefault("failed_checks", []).append(message)


def _missed(report: dict[str, Any], message: str) -> None:
    report.setdefault("targets_missed", []).append(message)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, help="one part only (default: all three)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller sizes: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker process")
    parser.add_argument("--rate-tasks", type=int, help=f"tasks of the rate part (default {FULL['rate_tasks']})")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="seconds allowed for the lease-to-handler delay when counting violations")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--fair-big", type=int, help=f"tasks of tenant 0 (default {FULL['fair_big']})")
    parser.add_argument("--fair-small", type=int, help=f"tasks of each other tenant (default {FULL['fair_small']})")
    parser.add_argument("--scale-tasks", type=int, help=f"delayed tasks pending (default {FULL['scale_tasks']})")
    parser.add_argument("--batch", type=int, default=2000, help="tasks per submit request (scale)")
    parser.add_argument("--inflight", type=int, default=4, help="submit requests in flight (scale)")
    parser.add_argument("--stream-rate", type=float, default=200.0, help="round trips per second (scale)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    parts = [args.part] if args.part else list(PARTS)
    steps = {"rate": part_rate, "fairness": part_fairness, "scale": part_scale}

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        for part in parts:
            steps[part](args, deadline, report)

    return harness.run_benchmark("flow_control", vars(args), args.timeout, body)


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    return harness.emit(report, save=not report["params"]["no_save"])


if __name__ == "__main__":
    raise SystemExit(main())
