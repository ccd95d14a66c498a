"""Actors the benchmarks' worker processes serve (`qrt worker bench.actors`)."""

from __future__ import annotations

import asyncio
import time

import qrt


@qrt.actor(name="bench.noop")
async def noop() -> None:
    """Does nothing: what is measured is qrt's own cost per task."""
    return None


@qrt.actor(name="bench.noop_sync")
def noop_sync() -> None:
    """The same in a worker thread: adds the cost of the handler thread pool."""
    return None


# No worker ever serves this name: tasks submitted to it stay queued (the memory benchmark).
UNSERVED = "bench.unserved"


# -- flow control (bench.flow_control) ------------------------------------------------------------

# The rate limit measured: every start of `rate50` is counted by the leader, across both workers.
RATE_LIMIT_N = 50
RATE_LIMIT = f"{RATE_LIMIT_N}/s"
# The fairness actors' work per task: long enough that slots, not qrt's own overhead, are scarce.
FAIR_WORK_S = 0.02
# A keyed limit that never binds (above any number of slots a benchmark starts): it only makes the
# client put `tenant` in the envelope's `keys`, so each tenant gets its own lane (state/lanes.py) and
# the choice between tenants is the round-robin alone.
UNBINDING = 1_000_000


@qrt.actor(name="bench.rate50", rate_limit=RATE_LIMIT)
async def rate50() -> float:
    """Returns its own start stamp: the benchmark counts starts per window from these."""
    return time.time()


@qrt.actor(name="bench.fair_rr", concurrency=qrt.Concurrency(UNBINDING, key="tenant"))
async def fair_rr(tenant: int) -> float:
    """One lane per tenant, slots scarce: tenants are served round-robin. Returns its start stamp."""
    started = time.time()
    await asyncio.sleep(FAIR_WORK_S)
    return started


@qrt.actor(name="bench.fair_cap1", concurrency=qrt.Concurrency(1, key="tenant"))
async def fair_cap1(tenant: int) -> float:
    """At most one running task per tenant, cluster-wide. Returns its start stamp."""
    started = time.time()
    await asyncio.sleep(FAIR_WORK_S)
    return started


@qrt.actor(name="bench.fair_fifo")
async def fair_fifo(tenant: int) -> float:
    """The control: no keyed limit, so no lanes: one FIFO queue for every tenant."""
    started = time.time()
    await asyncio.sleep(FAIR_WORK_S)
    return started
