"""Fairness between keys: 10 tenants, one with a backlog, on 16 slots; who gets a slot, and when.

Tenant 0 submits --fair-big tasks first, then tenants 1-9 --fair-small each (one batch, tenant
after tenant), ~20 ms of async work each. Per tenant: starts in the window while every tenant has
work (from the first start of a small tenant's task to the first start that leaves some tenant
nothing queued), Jain's index of the 9 small tenants' throughput there (target >= 0.95), and the
wait from submit to start (handler stamp minus the client's clock before its submit), small
tenants vs the big one. Three actors: `fair_rr` (the target) has a keyed limit that never binds,
so lanes exist and the 16 slots are what is scarce: who gets a slot is the round-robin alone.
`fair_cap1` (Concurrency(1, key="tenant")): each tenant runs one task at a time, and with 16
slots >= 10 tenants the cap alone makes the shares equal, whatever the order of choice: it shows
the cap, not the round-robin (the big tenant's backlog is purged once the small tenants are done:
alone at one task at a time it would take ~25 s). `fair_fifo`: no key, hence one lane, the
control: small tenants wait behind the backlog.

Part `fairness` of `python -m bench.flow_control`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import uvloop

import qrt

from . import harness
from .actors import FAIR_WORK_S, fair_cap1, fair_fifo, fair_rr
from .stats import percentiles

TARGET_JAIN = 0.95


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


def measure(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
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
                harness.fail_check(report, f"fairness {name}: {entry['error']} ({entry['outcomes']})")
    rr = out["runs"]["round_robin"]
    if rr.get("jain_small_tenants") is not None:
        rr["meets_target"] = rr["jain_small_tenants"] >= TARGET_JAIN
        if not rr["meets_target"]:
            harness.miss_target(report, f"fairness: Jain index {rr['jain_small_tenants']} < {TARGET_JAIN}")
