"""Bounded state: memory and the leader's post-commit cost after one-off actors and expiring tasks.

    python -m bench.bounded_state [--actors 200000] [--tasks 1000000] [--no-tracemalloc]

Pure state machine, no processes (issue #11, item 4): the batches the leader would commit are
applied to one `StateMachine`, stamped with a virtual clock (1 s per batch of `BATCH`).
  1. `--actors` one-off actor names (never registered by a worker), one task each, leased by a
     worker serving that actor alone and finished;
  2. `--tasks` tasks of a registered actor submitted with `expires_in` (one day): a third run,
     a third cancelled while queued, a third delayed then cancelled.
Then time passes beyond every result's TTL. Reported before and after: the per-actor entries of
the state, the sizes of its heaps, its tasks, the memory Python holds for it (tracemalloc: the
traced heap of this process, of which the state is nearly all) and VmRSS, and the leader's
post-commit cost: `views.ready_actors` (after every commit) and `views.next_due` (the timer,
after every commit). Before issue #11 the one-off actors' queues stayed (one per name ever seen)
and the deadline and delay heaps kept an entry per task until its time (a day).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from qrt.protocol import Envelope, Outcome
from qrt.state import StateMachine, views
from qrt.state import commands as C
from qrt.state.model import Leased

from .machine import machine_info

BATCH = 1000  # commands' tasks per batch, as the leader's group commit makes them
STEADY = "steady"  # the registered actor of the expiring tasks
STEADY_TTL = 60.0  # its result TTL (DESIGN.md's default is 10 min; shorter keeps the peak small)
EXPIRES_IN = 86400.0  # a day: before the fix, every entry stayed in the deadline heap that long
LATER = 3600.0  # the delay of the delayed third


class Workload:
    """Drives a `StateMachine` as a leader would: one stamped batch per call, time in seconds."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.now = 1000.0
        self.apply(C.RegisterActors({STEADY: {"result_ttl": STEADY_TTL}}))

    def apply(self, *commands: C.Command) -> list[list[Any]]:
        return self.machine.apply_batch(C.pack_batch(1, self.now, list(commands))).effects()

    def run(self, offers: list[C.Offer]) -> None:
        """Lease what `offers` take, and report each lease a success."""
        leased = [e for e in self.apply(C.Dispatch(offers))[0] if isinstance(e, Leased)]
        by_worker: dict[str, list[Outcome]] = {}
        for e in leased:
            by_worker.setdefault(e.worker, []).append(Outcome(e.task.id, e.task.attempt, True, None, "", "", "",
                                                              None, True))
        self.apply(*(C.Finish(worker, outcomes) for worker, outcomes in by_worker.items()))

    def one_off_actors(self, n: int) -> None:
        """`n` actors no worker registered, one task each, each run by a worker serving only it."""
        for start in range(0, n, BATCH):
            names = [f"oneoff.{i}" for i in range(start, min(n, start + BATCH))]
            self.apply(C.Submit([Envelope(f"o{name}", name, [], {}) for name in names]))
            self.run([C.Offer(f"w.{name}", [name], 1) for name in names])
            self.now += 1.0

    def expiring_tasks(self, n: int) -> None:
        """`n` tasks of STEADY with `expires_in`: a third run, a third cancelled, a third delayed then cancelled."""
        for start in range(0, n, BATCH):
            ids = [f"e{i}" for i in range(start, min(n, start + BATCH))]
            envelopes = [Envelope(tid, STEADY, [], {}, expires_in=EXPIRES_IN, delay=LATER if i % 3 == 2 else 0.0)
                         for i, tid in enumerate(ids)]
            self.apply(C.Submit(envelopes))
            self.apply(*(C.Cancel(tid) for i, tid in enumerate(ids) if i % 3))
            self.run([C.Offer("w.steady", [STEADY], len(ids))])
            self.now += 1.0

    def let_results_expire(self) -> None:
        self.now += 601.0  # past the default result TTL (10 min) and STEADY's
        self.apply(C.Tick())


def per_actor_entries(m: StateMachine) -> int:
    """Entries keyed by actor (or by an actor's key value) in the replicated state."""
    return sum(len(d) for d in (m.queues, m.queued_count, m.delayed_count, m.blocked_until, m.actors,
                                m.registered_by, m.overrides, m.paused, m.flow.running, m.flow.windows))


def heap_entries(m: StateMachine) -> dict[str, int]:
    return {"delay_heap": len(m.delay_heap), "start_deadlines": len(m.start_deadlines), "expiry": len(m.expiry),
            "actor_queue_entries": sum(len(h) for q in m.queues.values() for h in q.lanes.values())}


def post_commit_seconds(m: StateMachine, repeat: int = 200) -> float:
    """The median time of what the leader runs after every commit: ready_actors and next_due."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        views.ready_actors(m, m.now)
        views.next_due(m)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def snapshot(w: Workload, traced: bool) -> dict[str, Any]:
    m = w.machine
    out: dict[str, Any] = {"tasks": len(m.tasks), "per_actor_entries": per_actor_entries(m),
                           "heaps": heap_entries(m), "post_commit_us": round(post_commit_seconds(m) * 1e6, 2),
                           "vm_rss_bytes": _vm_rss()}
    if traced:
        out["traced_bytes"] = tracemalloc.get_traced_memory()[0]
    return out


def _vm_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _timed(step: Callable[[], None]) -> float:
    t = time.perf_counter()
    step()
    return round(time.perf_counter() - t, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, default=200_000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--no-tracemalloc", action="store_true", help="faster; no traced memory figure")
    args = parser.parse_args()
    traced = not args.no_tracemalloc
    if traced:
        tracemalloc.start()
    w = Workload()
    w.expiring_tasks(3 * BATCH)  # warm-up: the first batches allocate what any load does
    w.let_results_expire()
    report: dict[str, Any] = {"benchmark": "bounded_state", "actors": args.actors, "tasks": args.tasks,
                              "machine": machine_info(), "baseline": snapshot(w, traced)}
    report["one_off_actors_seconds"] = _timed(lambda: w.one_off_actors(args.actors))
    report["after_actors"] = snapshot(w, traced)
    report["expiring_tasks_seconds"] = _timed(lambda: w.expiring_tasks(args.tasks))
    report["after_tasks"] = snapshot(w, traced)
    w.let_results_expire()
    report["after_results_expired"] = snapshot(w, traced)
    if traced:
        report["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
