"""Where one round trip goes: a sequential submit + wait on 3 nodes, hop by hop, beside this machine's floors.

    python -m bench.anatomy [--nodes 3] [--tasks 1000] [--floor-rounds 2000]

One client submits a no-op task and waits for its result, `--tasks` times in a row (after a warm-up),
to a cluster whose nodes and worker (1 slot) note each hop of each task (runtime/anatomy.py:
QRT_ANATOMY) with the wall clock, which every process on one machine shares. The table: each span
between consecutive hops of the task's path, then of its submit's commit beside it ("submit: "),
median and p95 in µs, and its share of the median round trip. Beside it,
the floors on this machine: a raw ZeroMQ DEALER/ROUTER round trip (msgpack frames, an echo in
another process) and a bare 3-node pysyncobj commit (a replicated call with sync=True on the
leader, pysyncobj's own threads, entries not batched so a proposal wakes them, no encryption).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import msgpack
import zmq

import qrt
from qrt.local import LocalCluster, free_port

from . import harness
from .actors import noop

# The hops of one round trip, in order (runtime/anatomy.py); client_* are taken here. The task's own
# path; its `run` leaves before its submit and lease commit (a grant ahead of commit, state/grants.py),
# so the submit's commit is a path beside it, which the client waits for before it asks for the result.
HOPS = ("client_send", "received", "run_sent", "started", "ended", "done_sent", "done_received",
        "outcome_proposed", "outcome_applied", "outcome_committed", "result_sent", "client_received")
SUBMIT_HOPS = ("received", "proposed", "applied", "accepted")
WARMUP = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def round_trips(nodes: int, tasks: int, base: str) -> dict[str, Any]:
    """Run the sequential round trips with every process noting its hops; the spans between them."""
    prefix = os.path.join(base, "anatomy")
    c = LocalCluster(nodes=nodes, base_dir=base, log_level="warning",
                     env={"QRT_ANATOMY": prefix, "PYTHONPATH": harness.REPO_ROOT})
    client_marks: dict[str, dict[str, int]] = {}
    try:
        c.start()
        c.start_worker(["bench.actors"], concurrency=1)
        c.wait_for_workers(1)
        with qrt.Client(c.urls) as client:
            for i in range(WARMUP + tasks):
                sent = time.time_ns()
                handle = client.submit(noop)
                handle.result(timeout=30)
                if i >= WARMUP:
                    client_marks[handle.id] = {"client_send": sent, "client_received": time.time_ns()}
    finally:
        c.stop()  # SIGTERM: each process writes its marks as it exits
    marks: dict[str, dict[str, int]] = defaultdict(dict)
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                task_id, hop, ns = line.split()
                marks[task_id].setdefault(hop, int(ns))  # the first time (a resent `run` marks again)
    spans: dict[str, list[float]] = defaultdict(list)
    totals = []
    complete = 0
    for task_id, own in client_marks.items():
        hops = {**marks.get(task_id, {}), **own}
        if not all(h in hops for h in (*HOPS, *SUBMIT_HOPS)):
            continue
        complete += 1
        totals.append((hops["client_received"] - hops["client_send"]) / 1000)
        for route, named in ((HOPS, ""), (SUBMIT_HOPS, "submit: ")):
            for a, b in itertools.pairwise(route):
                spans[f"{named}{a} -> {b}"].append((hops[b] - hops[a]) / 1000)
    median_total = statistics.median(totals)
    table = [{"span": name, "median_us": round(statistics.median(v), 1), "p95_us": round(percentile(v, 0.95), 1),
              "share_of_median": round(statistics.median(v) / median_total, 3)} for name, v in spans.items()]
    return {"tasks": tasks, "complete": complete, "round_trip_median_us": round(median_total, 1),
            "round_trip_p95_us": round(percentile(totals, 0.95), 1), "spans": table}


ECHO = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    ident, body = s.recv_multipart()
    if body == b"stop":
        break
    s.send_multipart([ident, body])
"""


def zmq_floor(rounds: int) -> dict[str, float]:
    """A DEALER/ROUTER round trip of a small msgpack frame, to an echo in another process."""
    url = f"tcp://127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO, url], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(url)
        frame = msgpack.packb({"v": 1, "t": "submit", "rid": 1, "tasks": [{"id": "x" * 32, "actor": "a"}]})
        times = []
        for _ in range(rounds + 100):
            t0 = time.perf_counter_ns()
            sock.send(frame)
            msgpack.unpackb(sock.recv())
            times.append((time.perf_counter_ns() - t0) / 1000)
        sock.send(b"stop")
        sock.close()
        times = times[100:]
        return {"median_us": round(statistics.median(times), 1), "p95_us": round(percentile(times, 0.95), 1)}
    finally:
        echo.wait(10)


NODE = """
import json, sys, time
from pysyncobj import SyncObj, SyncObjConf, replicated
class Counter(SyncObj):
    def __init__(self, me, peers):
        # Without batching, a proposal wakes the tick thread (pysyncobj's pipe notifier); with it
        # (the default) it waits for the next append period: 100 ms a commit, measured.
        super().__init__(me, peers, SyncObjConf(connectionRetryTime=0.5, appendEntriesUseBatch=False))
        self.n = 0
    @replicated
    def incr(self):
        self.n += 1
        return self.n
me, peers, rounds = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
node = Counter(me, peers)
while node._getLeader() is None or not all(node.getStatus().get("partner_node_status_server_" + p) == 2
                                             for p in peers):
    time.sleep(0.05)
if node._isLeader():
    times = []
    for _ in range(rounds + 100):
        t0 = time.perf_counter_ns()
        node.incr(sync=True)
        times.append((time.perf_counter_ns() - t0) / 1000)
    print(json.dumps(times[100:]), flush=True)
else:
    print("[]", flush=True)
sys.stdin.read()  # until the benchmark is done
"""


def pysyncobj_floor(rounds: int) -> dict[str, float]:
    """A replicated call committed by a bare 3-node pysyncobj cluster (sync=True on the leader)."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", NODE, a, ",".join(x for x in addrs if x != a), str(rounds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for a in addrs]
    try:
        found: list[float] = []
        for proc in procs:
            assert proc.stdout is not None
            found += json.loads(proc.stdout.readline())
        return {"median_us": round(statistics.median(found), 1), "p95_us": round(percentile(found, 0.95), 1)}
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--floor-rounds", type=int, default=2000)
    args = parser.parse_args(argv)

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="qrt-anatomy-") as base:
            report["anatomy"] = round_trips(args.nodes, args.tasks, base)
        report["floor"] = {"zmq_round_trip": zmq_floor(args.floor_rounds),
                           "pysyncobj_3_node_commit": pysyncobj_floor(args.floor_rounds // 2)}

    report = harness.run_benchmark("anatomy", vars(args), args.timeout, body)
    return harness.emit(report, save=not args.no_save)


if __name__ == "__main__":
    sys.exit(main())
