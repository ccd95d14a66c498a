"""The longest pause a Raft snapshot causes: round trips streamed while the leader forks and writes one.

A steady stream of submit+result round trips of bench.noop (--stream-rate per second, open loop)
while a Raft snapshot is taken: its longest latency and the longest gap between results during the
snapshot (target <= 100 ms, million_delayed.py). pysyncobj compacts its log (forks, and the child
pickles the state to raft-*.dump) when the log holds more than logCompactionMinEntries = 5000
entries, or 300 s after the last one. Group commit makes the 1M tasks only ~500 entries, so after
them this benchmark adds the missing entries with sequential one-entry requests (a `cancel` of an
unknown id: no state), stopping just short of the threshold so that the stream's own entries cross
it: the snapshot happens at a known moment, on every run, with nothing but the stream going on. It
is seen in the data directory: raft-*.dump.tmp appears when the child starts writing (just after
the fork), and raft-*.dump is replaced when it is done. Latencies are split into phases (baseline,
filler, after it) and windows (around the fork, the whole snapshot, around the dump's
replacement), with the longest gaps between results and between sends: a gap in the sends is this
client not running, not the coordinator. A separate idle process notes machine-wide scheduling
stalls (> 20 ms) to tell them apart.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import qrt

from . import harness
from .snapshot_probes import DumpWatcher, StallProbe, Stream

# pysyncobj's SyncObjConf default: the log is compacted (a snapshot) once it holds more entries.
LOG_COMPACTION_MIN_ENTRIES = 5000
# The filler stops this many entries short of the threshold; the stream crosses it (~2 entries per
# round trip: the submit with its lease, then the outcome), in about a second at 200/s.
FILLER_HEADROOM = 300
BASELINE_S = 2.0  # the stream alone, before the filler: its latencies without a snapshot
AFTER_SNAPSHOT_S = 1.0  # the stream goes on this long after the dump is replaced
SNAPSHOT_START_TIMEOUT = 30.0


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


async def measure_under_stream(urls: list[str], commit_index: int, watcher: DumpWatcher, rate: float,
                               deadline: harness.Deadline, out: dict[str, Any]) -> None:
    """Stream round trips, bring the log to its compaction threshold, and put what the stream saw
    during the snapshot that follows (seen by `watcher`) into `out`."""
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

