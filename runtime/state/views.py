"""Read-only questions the coordinator asks the state machine (under the replication lock, except
where a caller says otherwise). Nothing here changes the machine."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from ..protocol import RunTask
from .limits import INFINITY
from .machine import StateMachine


def has_ready(m: StateMachine, actors: list[str], now: float) -> bool:
    """Whether a dispatch for `actors` at leader time `now` could lease anything."""
    return any(m.queued_count.get(a, 0) > 0 and m.blocked_until.get(a, 0.0) <= now and a not in m.paused
               for a in actors)


def ready_actors(m: StateMachine, now: float) -> set[str]:
    """The actors a dispatch at leader time `now` could lease a task of. Safe to call without the
    replication lock (one look at the counters): list(dict) and dict lookups are atomic under the
    GIL, and a batch applied meanwhile only makes the answer one batch old."""
    return {actor for actor in list(m.queued_count) if has_ready(m, [actor], now)}


def next_due(m: StateMachine) -> float | None:
    """When the earliest delayed task becomes due or queued task expires (may be early: stale entries)."""
    times = [heap[0][0] for heap in (m.delay_heap, m.start_deadlines) if heap]
    # Only blocks still ahead: a past one is lifted by the next dispatch (counting it would have
    # the leader propose empty ticks back to back: ~880 a second, measured).
    times += [t for a, t in m.blocked_until.items() if m.now < t != INFINITY and m.queued_count.get(a)]
    cron = m.cron.next_fire()
    if cron is not None:
        times.append(cron)
    return min(times) if times else None


def next_expiry(m: StateMachine) -> float | None:
    """When the earliest finished task's record (and result) is due to be dropped."""
    return m.expiry[0][0] if m.expiry else None


def leases_of(m: StateMachine, worker: str) -> list[tuple[str, int]]:
    """The (task id, attempt) of every lease `worker` holds."""
    return [(tid, m.tasks[tid].attempt) for tid in m.leases.get(worker, {})]


def overdue_leases(m: StateMachine, worker: str, now: float, grace: float) -> list[tuple[str, int]]:
    """The (task id, attempt) of `worker`'s leases granted longer ago than their timeout and `grace`."""
    overdue = []
    for tid in m.leases.get(worker, {}):
        task = m.tasks[tid]
        if task.lease is not None and task.lease.started_at + m.option(task, "timeout") + grace < now:
            overdue.append((tid, task.attempt))
    return overdue


def runs_of(m: StateMachine, worker: str, task_ids: list[str]) -> list[RunTask]:
    """The `run` entries of those of `task_ids` that `worker` holds a lease on."""
    held = m.leases.get(worker, {})
    return [m.run_task(m.tasks[tid]) for tid in task_ids if tid in held]


TOP_KEYS_IN_USE = 10  # per keyed limit, the key values `limits` shows the use of


def limits_view(m: StateMachine) -> dict[str, dict[str, Any]]:
    """Per actor with limits: what workers registered, the operator's override, what holds, and
    how much of each limit is in use now (`use`, in the order of rate_limits then concurrency)."""
    out: dict[str, dict[str, Any]] = {}
    for actor in sorted(set(m.actors) | set(m.overrides) | set(m.paused)):
        rates, caps = m.limits(actor)
        registered = m.actors.get(actor) or {}
        out[actor] = {
            "rate_limits": [[r.n, r.period, r.key] for r in rates],
            "concurrency": [[c.n, c.key] for c in caps],
            "registered": {k: registered.get(k, []) for k in ("rate_limits", "concurrency")},
            "options": {k: value for k, value in registered.items() if k not in ("rate_limits", "concurrency")},
            "override": m.overrides.get(actor, {}),
            "running": m.flow.running.get((actor, "", None), 0),
            "paused": actor in m.paused,
            "use": [_rate_use(m, actor, r) for r in rates] + [_cap_use(m, actor, c) for c in caps],
        }
    return out


def _rate_use(m: StateMachine, actor: str, rate: Any) -> dict[str, Any]:
    """Starts counted in the window ending now: actor-wide, or per key value (the fullest few)."""
    since = m.now - rate.period

    def inside(window: Any) -> int:
        return len(window) - bisect_left(window, since)
    if not rate.key:
        window = m.flow.windows.get((actor, "", None))
        return {"kind": "rate", "limit": rate.n, "period": rate.period, "used": inside(window) if window else 0}
    per_key = [(inside(w), b[2][1]) for b, w in list(m.flow.windows.items()) if b[0] == actor and b[1] == rate.key
               and b[2] is not None]
    top = sorted((p for p in per_key if p[0]), key=lambda p: -p[0])[:TOP_KEYS_IN_USE]
    return {"kind": "rate", "limit": rate.n, "period": rate.period, "key": rate.key,
            "keys": [[value, used] for used, value in top], "key_values": len(per_key)}


def _cap_use(m: StateMachine, actor: str, cap: Any) -> dict[str, Any]:
    """Tasks running against a concurrency cap: actor-wide, or per key value (the busiest few)."""
    if not cap.key:
        return {"kind": "concurrency", "limit": cap.n, "used": m.flow.running.get((actor, "", None), 0)}
    per_key = [(n, b[2][1]) for b, n in list(m.flow.running.items()) if b[0] == actor and b[1] == cap.key
               and b[2] is not None]
    top = sorted(per_key, key=lambda p: -p[0])[:TOP_KEYS_IN_USE]
    return {"kind": "concurrency", "limit": cap.n, "key": cap.key, "keys": [[value, n] for n, value in top],
            "key_values": len(per_key)}


def depth(m: StateMachine, registered: bool = False) -> dict[str, dict[str, int]]:
    """Per actor: queued, delayed and running counts, from counters (a scan of a million tasks
    under the apply lock took 300 ms, measured); with `registered`, every registered actor too."""
    running = {bucket[0]: n for bucket, n in m.flow.running.items() if not bucket[1]}
    actors = set(m.queued_count) | set(m.delayed_count) | set(running) | (set(m.actors) if registered else set())
    return {actor: {"queued": m.queued_count.get(actor, 0), "delayed": m.delayed_count.get(actor, 0),
                    "running": running.get(actor, 0)} for actor in sorted(actors)}


def oldest_queued(m: StateMachine) -> dict[str, float]:
    """Per actor with queued tasks: when its oldest one became due (submitted, or its ETA): each
    lane's head (entries of tasks no longer queued are skipped)."""
    oldest: dict[str, float] = {}
    for actor in list(m.queued_count):
        queue = m.queues.get(actor)
        if queue is None:
            continue
        for heap in list(queue.lanes.values()):
            for _, _, task_id in heap[:1]:
                task = m.tasks.get(task_id)
                if task is not None:
                    due = max(task.submitted_at, task.eta)
                    oldest[actor] = min(oldest.get(actor, due), due)
    return oldest
