"""The checks made after a chaos run, from what really ran (the handlers' stamps), what the client
was told (accepted ids, final states), what the harness did (faults) and what the nodes logged.

Pure: records in, findings out, so a run's directory can be checked again later (`load_stamps`
and `load_lease_losses` read the files; the rest computes).

When a lease counts as lost: the leader logged "task T back in the queue (worker W gone)" for the
task, or it was started again under a higher attempt without a failure of its own; *and* a fault
touched the worker that held it between the run's start and the later run's start: that worker
was SIGKILLed, its TCP connection was destroyed, or it fenced itself (its log says so). Only then
may a task run twice to success, or two runs of a `concurrency=1` actor overlap. Anything else is
a defect of qrt (DESIGN.md, "Invariants").
"""

from __future__ import annotations

import bisect
import datetime
import glob
import itertools
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Kinds of fault that cost a worker its leases (and only those: a leader that pauses or dies hands
# every lease to the next one with a full grace period, so it may cost none).
WORKER_FAULTS = ("kill_worker", "drop_conn", "fence")
# A worker resends an unacknowledged report every second (defaults.RESEND_AFTER): one killed within
# this long after a handler returned may have taken its report with it.
REPORT_GRACE = 2.0
# Actors without limits: their wait from `accepted` to the first start is the queue's own delay.
UNLIMITED = ("plain", "flaky", "blocking")

LEASE_LOST = re.compile(r"task ([0-9a-f]{32}) back in the queue \(worker \S+?-(\d+)-[0-9a-f]{8} gone\)")
FENCED = re.compile(r"^(\S+ \S+) \S+\s+qrt\.worker: worker \S+?-(\d+)-[0-9a-f]{8} heard no leader")


@dataclass(slots=True)
class Accepted:
    seq: int
    id: str
    actor: str
    submitted: float  # monotonic, when the first submit left
    accepted: float  # monotonic, when the accepted reply came back
    burst: bool = False  # one of many submitted at once


@dataclass(slots=True)
class Run:
    id: str
    actor: str
    attempt: int
    seq: int
    pid: int
    start: float
    end: float | None = None  # None: no end stamp (its process died during the run)
    outcome: str | None = None


@dataclass(slots=True)
class Fault:
    kind: str
    target: str
    start: float  # monotonic
    end: float
    pid: int | None = None  # the process it hit (a worker's, or a node's)
    detail: dict[str, Any] = field(default_factory=dict)

    def view(self, origin: float) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "pid": self.pid, "at": round(self.start - origin, 2),
                "lasted": round(self.end - self.start, 2), **self.detail}


# -- reading a run's directory -----------------------------------------------------------------


def load_stamps(directory: str) -> list[Run]:
    """Every run from the stamp files: a start paired with its end (same pid, id and attempt, in order)."""
    runs: list[Run] = []
    for path in sorted(glob.glob(os.path.join(directory, "stamps-*.jsonl"))):
        open_runs: dict[tuple[str, int], list[Run]] = defaultdict(list)
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # a line cut by SIGKILL (one write per line makes this very unlikely)
                s = json.loads(line)
                key = (s["id"], s["attempt"])
                if s["e"] == "start":
                    run = Run(s["id"], s["actor"], s["attempt"], s["seq"], s["pid"], s["mono"])
                    runs.append(run)
                    open_runs[key].append(run)
                elif open_runs[key]:
                    run = open_runs[key].pop(0)
                    run.end, run.outcome = s["mono"], s["outcome"]
    return runs


def _log_time(stamp: str, wall_to_mono: float) -> float:
    """A log line's local wall time ("2026-11-30 06:19:47,351") as monotonic seconds."""
    wall = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return wall - wall_to_mono


def load_lease_losses(log_paths: Iterable[str]) -> dict[str, list[int]]:
    """Task id -> the pids of the workers whose lease of it a leader expired ("back in the queue")."""
    lost: dict[str, list[int]] = defaultdict(list)
    for path in log_paths:
        with open(path, errors="replace") as f:
            for line in f:
                m = LEASE_LOST.search(line)
                if m:
                    lost[m.group(1)].append(int(m.group(2)))
    return dict(lost)


def load_fences(log_paths: Iterable[str], wall_to_mono: float) -> list[Fault]:
    """Each worker's own word that it fenced itself, as a fault on it."""
    fences = []
    for path in log_paths:
        with open(path, errors="replace") as f:
            for line in f:
                m = FENCED.search(line)
                if m:
                    at = _log_time(m.group(1), wall_to_mono)
                    fences.append(Fault("fence", os.path.basename(path), at, at, int(m.group(2))))
    return fences


HEADER = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\S+)")
# pysyncobj 0.3.17 says this (CRITICAL) when a follower truncates entries that match (a stale resend,
# DESIGN.md); the digests compared across replicas are the proof that nothing diverged. Counted apart.
KNOWN = ("truncating already-applied log entries",)


def logged_errors(log_paths: Iterable[str]) -> dict[str, Any]:
    """ERROR and CRITICAL lines, and tracebacks, in every process's log: none is expected, since a
    fault of another process is no error of this one (each example with what followed it)."""
    examples: list[dict[str, Any]] = []
    count = 0
    known = dict.fromkeys(KNOWN, 0)
    for path in sorted(log_paths):
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        current: list[str] | None = None
        for line in lines:
            header = HEADER.match(line)
            if header:
                current = None
                pattern = next((k for k in KNOWN if k in line), None)
                if pattern is not None:
                    known[pattern] += 1
                    continue
            # An error line starts an example; so does a traceback, unless it is that line's own.
            if (header and header.group(1) in ("ERROR", "CRITICAL")) or (line.startswith("Traceback")
                                                                       and current is None):
                count += 1
                current = []
                if len(examples) < 10:
                    examples.append({"log": os.path.basename(path), "lines": current})
            if current is not None and len(current) < 16:
                current.append(line)
    return {"count": count, "examples": examples, "known": known}


# -- the checks ------------------------------------------------------------------------------------


class Evidence:
    """What the checks consult about a run: the faults, and which tasks lost a lease."""

    def __init__(self, faults: list[Fault], lease_losses: dict[str, list[int]], runs_by_id: dict[str, list[Run]],
                 origin: float) -> None:
        self.faults = sorted(faults, key=lambda f: f.start)
        self.lease_losses = lease_losses
        self.runs_by_id = runs_by_id
        self.origin = origin
        self.kills = {f.pid: f.start for f in faults if f.kind == "kill_worker" and f.pid is not None}

    def effective_end(self, run: Run) -> float:
        """When a run stopped: its end stamp, or the SIGKILL of its worker; infinity if neither."""
        if run.end is not None:
            return run.end
        return self.kills.get(run.pid, math.inf)

    def worker_faults(self, run: Run, until: float) -> list[Fault]:
        """Faults that cost `run`'s worker its leases, between the run's start and `until`."""
        return [f for f in self.faults
                if f.kind in WORKER_FAULTS and f.pid == run.pid and run.start <= f.start <= until]

    def lease_lost(self, run: Run) -> bool:
        if run.pid in self.lease_losses.get(run.id, []):
            return True
        return any(r.attempt > run.attempt for r in self.runs_by_id.get(run.id, [])) and run.outcome != "retry"

    def explained(self, run: Run, until: float) -> list[Fault]:
        """The worker faults that excuse a second run after `run` (empty: nothing excuses it)."""
        return self.worker_faults(run, until) if self.lease_lost(run) else []

    def before(self, at: float, window: float = 10.0) -> list[dict[str, Any]]:
        """The faults that began up to `window` s before `at` (or were still under way), for a report."""
        return [f.view(self.origin) for f in self.faults if at - window <= f.start <= at or f.start <= at <= f.end]

    def at(self, t: float) -> float:
        return round(t - self.origin, 3)


def check_tasks(accepted: list[Accepted], runs: list[Run], final: dict[str, str],
                ev: Evidence) -> dict[str, Any]:
    """Every accepted task finished (success stamped and reported), once unless a lease was lost."""
    accepted_ids = {a.id for a in accepted}
    lost, wedged, failed, duplicates = [], [], [], []
    explained = 0
    for a in accepted:
        runs_of = sorted(ev.runs_by_id.get(a.id, []), key=lambda r: r.start)
        ok = [r for r in runs_of if r.outcome == "ok"]
        state = final.get(a.id, "pending")
        if state == "pending":
            wedged.append({"id": a.id, "actor": a.actor, "seq": a.seq, "accepted_at": ev.at(a.accepted),
                           "runs": [_run_view(r, ev) for r in runs_of]})
        elif state == "not_found":
            lost.append({"id": a.id, "actor": a.actor, "seq": a.seq, "why": "the cluster does not know it",
                         "runs": [_run_view(r, ev) for r in runs_of]})
        elif state != "succeeded":
            failed.append({"id": a.id, "actor": a.actor, "seq": a.seq, "state": state,
                           "runs": [_run_view(r, ev) for r in runs_of]})
        if not ok and state == "succeeded":
            lost.append({"id": a.id, "actor": a.actor, "seq": a.seq, "why": "succeeded without a successful run",
                         "runs": [_run_view(r, ev) for r in runs_of]})
        for first, later in itertools.pairwise(ok):
            faults = ev.explained(first, later.start)
            explained += bool(faults)
            duplicates.append({"id": a.id, "actor": a.actor, "seq": a.seq, "explained_by": [
                f.view(ev.origin) for f in faults], "runs": [_run_view(r, ev) for r in runs_of]})
    unconfirmed = sorted({r.id for r in runs} - accepted_ids)
    return {"accepted": len(accepted), "finished": sum(1 for a in accepted if final.get(a.id) == "succeeded"),
            "wedged": wedged, "lost": lost, "failed": failed, "duplicates": len(duplicates),
            "duplicates_explained": explained,
            "duplicates_unexplained": [d for d in duplicates if not d["explained_by"]],
            "duplicate_examples": duplicates[:5], "ran_but_not_accepted": unconfirmed[:20]}


def check_serial(runs: list[Run], ev: Evidence, actor: str = "serial") -> dict[str, Any]:
    """No two runs of the concurrency=1 actor overlap, unless the first one's lease was lost."""
    serial = sorted((r for r in runs if r.actor == actor), key=lambda r: r.start)
    overlaps = []
    for i, first in enumerate(serial):
        end = ev.effective_end(first)
        for later in serial[i + 1:]:
            if later.start >= end:
                break
            faults = ev.explained(first, later.start)
            overlaps.append({"first": _run_view(first, ev), "second": _run_view(later, ev),
                             "overlap_s": round(min(end, ev.effective_end(later)) - later.start, 3),
                             "explained_by": [f.view(ev.origin) for f in faults],
                             "faults_before": [] if faults else ev.before(later.start)})
    return {"runs": len(serial), "overlaps": len(overlaps),
            "unexplained": [o for o in overlaps if not o["explained_by"]],
            "explained": [o for o in overlaps if o["explained_by"]][:5]}


def check_rate(runs: list[Run], ev: Evidence, limit: int, period: float, actor: str = "limited") -> dict[str, Any]:
    """No window of `period` s holds more than `limit` starts (every start counts, every attempt)."""
    starts = sorted(r.start for r in runs if r.actor == actor)
    violations: list[dict[str, Any]] = []
    worst = 0
    j = 0
    for i, t in enumerate(starts):
        j = max(j, i)
        while j < len(starts) and starts[j] < t + period:
            j += 1
        count = j - i
        worst = max(worst, count)
        if count > limit and not (violations and t < violations[-1]["_until"]):
            violations.append({"window_start": ev.at(t), "starts": count, "_until": t + period,
                               "faults_before": ev.before(t)})
        elif count > limit:
            violations[-1]["starts"] = max(violations[-1]["starts"], count)
    for v in violations:
        del v["_until"]
    return {"starts": len(starts), "limit": f"{limit}/{period:g}s", "busiest_window": worst,
            "violations": violations}


class FreeSlots:
    """When some worker had a free slot, from the stamps: capacity is `slots` per live worker
    process (from its start to its SIGKILL), busy is the handlers running (a killed worker's end
    at its kill). Approximate: a worker counts from its process start, before it has said hello."""

    def __init__(self, runs: list[Run], ev: Evidence, lifetimes: dict[int, tuple[float, float]], slots: int) -> None:
        steps: list[tuple[float, int]] = []  # (time, change of free slots)
        for start, end in lifetimes.values():
            steps += [(start, slots), (end, -slots)]
        for r in runs:
            steps += [(r.start, -1), (ev.effective_end(r), 1)]
        steps = sorted(s for s in steps if math.isfinite(s[0]))
        self.times: list[float] = []
        self.free: list[bool] = []  # on [times[k], times[k+1])
        self.cumulative: list[float] = []  # free seconds before times[k]
        level, total = 0, 0.0
        for t, change in steps:
            if self.times:
                total += (t - self.times[-1]) * self.free[-1]
            level += change
            self.times.append(t)
            self.free.append(level > 0)
            self.cumulative.append(total)

    def _before(self, t: float) -> float:
        k = bisect.bisect_right(self.times, t) - 1
        if k < 0:
            return 0.0
        return self.cumulative[k] + (t - self.times[k]) * self.free[k]

    def between(self, a: float, b: float) -> float:
        """Seconds within [a, b] during which some worker had a free slot."""
        return max(0.0, self._before(b) - self._before(a))


def queue_waits(accepted: list[Accepted], ev: Evidence, free: FreeSlots) -> dict[str, Any]:
    """Per actor, from `accepted` to the first start (max, p99, p50); and for the actors without
    limits, the part of that wait during which a worker had a free slot (the queue's own delay:
    no limit held them, no busy worker excuses it)."""
    by_actor: dict[str, list[tuple[float, str]]] = defaultdict(list)
    while_free: list[tuple[float, str]] = []
    for a in accepted:
        starts = [r.start for r in ev.runs_by_id.get(a.id, [])]
        if starts:
            first = min(starts)
            by_actor[a.actor].append((max(0.0, first - a.accepted), a.id))
            if a.actor in UNLIMITED:
                while_free.append((free.between(a.accepted, first), a.id))
    out: dict[str, Any] = {actor: _spread(waits, ev, accepted) for actor, waits in sorted(by_actor.items())}
    out["unlimited_while_a_worker_was_free"] = _spread(while_free, ev, accepted)
    return out


def finish_times(accepted: list[Accepted], ev: Evidence) -> dict[str, Any]:
    """Time from `accepted` to the end of the first successful run (lost leases and retries included)."""
    times = []
    for a in accepted:
        ends = [r.end for r in ev.runs_by_id.get(a.id, []) if r.outcome == "ok" and r.end is not None]
        if ends:
            times.append((max(0.0, min(ends) - a.accepted), a.id))
    return _spread(times, ev, accepted)


def _spread(waits: list[tuple[float, str]], ev: Evidence, accepted: list[Accepted]) -> dict[str, Any]:
    if not waits:
        return {"n": 0}
    waits = sorted(waits)
    worst, worst_id = waits[-1]
    at = next(a.accepted for a in accepted if a.id == worst_id)
    return {"n": len(waits), "max_s": round(worst, 3), "p99_s": round(_pct([w for w, _ in waits], 0.99), 3),
            "p50_s": round(_pct([w for w, _ in waits], 0.5), 3), "max_task": worst_id, "max_accepted_at": ev.at(at),
            "faults_before_max": [f["kind"] for f in ev.before(at + worst)]}


def compare_digests(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each node's (applied_batches -> digest) and (state mark -> state digest), compared where two
    nodes stand at the same point: equal, or a list of mismatches."""
    by_point: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for s in samples:
        if s.get("applied_batches") is not None and s.get("digest") is not None:
            by_point[("log", int(s["applied_batches"]))].setdefault(s["node"], str(s["digest"]))
        state = s.get("state_digest")
        if isinstance(state, dict) and state.get("mark") is not None:
            by_point[("state", int(state["mark"]))].setdefault(s["node"], str(state.get("digest")))
    compared = {"log": 0, "state": 0}
    mismatches = []
    for (kind, point), digests in sorted(by_point.items()):
        if len(digests) < 2:
            continue
        compared[kind] += 1
        if len(set(digests.values())) > 1:
            mismatches.append({"kind": kind, "at": point, "digests": digests})
    nodes = {s["node"] for s in samples}
    has_state = any(isinstance(s.get("state_digest"), dict) for s in samples)
    # A replica that found its own digest different from the leader's claim says so (runtime/checkpoints.py).
    diverged = {s["node"]: s["state_digest"]["diverged"] for s in samples
                if isinstance(s.get("state_digest"), dict) and s["state_digest"].get("diverged")}
    return {"nodes": len(nodes), "points_compared": compared, "state_digest_reported": has_state,
            "equal": not mismatches and not diverged and compared["log"] > 0, "mismatches": mismatches[:10],
            "diverged_reported": diverged}


def _run_view(run: Run, ev: Evidence) -> dict[str, Any]:
    return {"pid": run.pid, "attempt": run.attempt, "start": ev.at(run.start),
            "end": None if run.end is None else ev.at(run.end), "outcome": run.outcome}


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


def runs_by_id(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        out[r.id].append(r)
    return dict(out)
