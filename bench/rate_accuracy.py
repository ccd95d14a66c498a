"""Rate-limit accuracy: `bench.rate50` (rate_limit="50/s") saturated, counted from its own stamps.

`bench.rate50` is an async no-op returning time.time() as its own start stamp; --rate-tasks are
submitted at once. From the handlers' stamps: the 1 s windows (closed, [t, t+1], anchored at each
start) holding more than 50 starts, strictly and with --tolerance for the lease-to-handler delay
(the limit counts lease commits, on the leader's clock; a handler starts a little later, by a
varying delay, so a window of 1 s - tolerance of handler stamps maps into 1 s of lease stamps); the
busiest window; the achieved rate and utilisation = the time a perfect limiter needs for these
tasks (bursts of 50 at 0, 1, 2 ... s) / the time taken (target >= 95 %). The same windows are
counted on the lease commits' own stamps, where any excess is a broken limit.

Part `rate` of `python -m bench.flow_control`.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_right
from collections import Counter
from typing import Any

import uvloop

import qrt
from qrt import protocol

from . import harness
from .actors import RATE_LIMIT, RATE_LIMIT_N, rate50
from .stats import percentiles

RATE_PERIOD = 1.0
TARGET_UTILISATION = 0.95


async def _rate_run(urls: list[str], n: int, deadline: harness.Deadline) -> tuple[float, list[Any], list[float]]:
    async with qrt.AsyncClient(urls) as client:
        t_submit = time.time()
        handles = await client.submit_many(rate50, [()] * n)
        expected = n / RATE_LIMIT_N * RATE_PERIOD + 30.0
        async with asyncio.timeout(min(expected, deadline.remaining())):
            results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        # The lease commits' own stamps (what the limit counts, DESIGN.md): from the raw `wait`
        # reply's task summary, which the public handle does not return.
        summaries = await asyncio.gather(*(client._request(protocol.Wait(h.id, 5.0), protocol.Result, 5.0)
                                           for h in handles))
    leases = [s.started_at for s in summaries if s.started_at is not None]
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


def measure(args: Any, deadline: harness.Deadline, report: dict[str, Any]) -> None:
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
        harness.fail_check(report, f"rate: {at_leases['violations']} windows of {RATE_PERIOD} s hold more than "
                                   f"{RATE_LIMIT_N} lease commits")
    if stamps:
        out["submit_to_first_start_ms"] = round((min(stamps) - t_submit) * 1000, 3)
    if failed:
        harness.fail_check(report, f"rate: {len(stamps)} of {args.rate_tasks} tasks succeeded ({dict(failed)})")
    if out.get("violations_with_tolerance"):
        harness.fail_check(report, f"rate: {out['violations_with_tolerance']} windows of "
                                   f"{RATE_PERIOD - args.tolerance:.3f} s hold more than {RATE_LIMIT_N} handler starts")
    if out.get("utilisation") is not None:
        out["meets_target"] = out["utilisation"] >= TARGET_UTILISATION
        if not out["meets_target"]:
            harness.miss_target(report, f"rate: utilisation {out['utilisation']:.1%} < {TARGET_UTILISATION:.0%}")
