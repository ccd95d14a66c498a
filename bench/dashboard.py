"""The dashboard's speed: its pages over a million stored tasks, and what an open overview costs dispatch.

    python -m bench.dashboard [--history-tasks 1000000] [--workers 1000] [--tasks 20000] [--repeats 3]

1. A one-node coordinator whose history holds `--history-tasks` finished tasks (bench/observability.py's
   fill: 10 actors, 5 % dead, keyed by tenant), a `qrt dashboard` in front of it; then the task list's
   first page (unfiltered, and by state and actor), a task's page and the overview, each requested 10
   times (the overview once per refresh, past its cache); the figure is the server's own time (its
   `Server-Timing` header: the cluster's answers included, the network to the browser not), median
   and worst. Target: <= 300 ms.
2. The same node with `--workers` simulated workers connected (bench/sim_workers.py), `bench.throughput`'s
   push of `--tasks` no-op tasks, with the overview open and refreshing (its live stream: the tables
   every 2 s, the charts every 10 s) and without, interleaved `--repeats` times; the cost is
   1 - with / without.
   Target: no measurable cost (within the runs' own spread).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import uvloop

from qrt.dashboard.app import REFRESH
from qrt.local import LocalCluster, free_port, wait_until

from . import harness
from .observability import fill
from .sim_workers import ACTOR, Simulation
from .throughput import push

TARGET_PAGE_MS = 300.0


def start_dashboard(c: LocalCluster) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    assert c.base_dir is not None
    log = open(os.path.join(c.base_dir, "dashboard.log"), "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, "-m", "qrt.cli", "dashboard", "--listen", f"127.0.0.1:{port}",
                             *[a for url in c.urls for a in ("--coordinator", url)]], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ok(url + "/signin"), 30, 0.1, "the dashboard answering")
    return proc, url


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def server_ms(url: str) -> float:
    """The dashboard's own time for one page (its Server-Timing header), in ms."""
    with urllib.request.urlopen(url, timeout=60) as reply:
        reply.read()
        timing = reply.headers["server-timing"]
    return float(timing.split("dur=")[1])


def page_times(c: LocalCluster, n: int, report: dict[str, Any]) -> None:
    assert c.base_dir is not None
    node_dir = c.coordinator_nodes[0].data_dir
    os.makedirs(node_dir, exist_ok=True)
    took = fill(os.path.join(node_dir, "history.sqlite3"), n)
    report["fill_s"] = round(took, 1)
    # (The node starts on a history that holds batches its own log does not: its reads are what is measured.)
    c.start()
    proc, url = start_dashboard(c)
    try:
        import qrt
        with qrt.Client(c.urls) as client:
            some = client.list_tasks(state="dead", limit=1)["tasks"][0]["id"]
        pages = {"tasks_first_page": "/tasks", "tasks_dead_of_one_actor": "/tasks?state=dead&actor=bench.actor3",
                 "tasks_by_key": "/tasks?key=tenant%3Dt7", "task_page": f"/tasks/{some}", "overview": "/",
                 "dead_letter_groups": "/dead"}
        figures: dict[str, Any] = {}
        for name, path in pages.items():
            times = []
            for _ in range(10):
                times.append(server_ms(url + path))
                if name == "overview":  # its parts are read once per refresh for every page open: a miss
                    time.sleep(REFRESH + 0.1)
            median = statistics.median(times)
            figures[name] = {"median_ms": round(median, 1), "max_ms": round(max(times), 1)}
            if name.startswith("task") and median > TARGET_PAGE_MS:
                harness.miss_target(report, f"{name}: {median:.0f} ms (target <= {TARGET_PAGE_MS:.0f})")
        report["pages"] = figures
    finally:
        proc.terminate()
        proc.wait(10)


class OpenOverview:
    """What a browser with the overview open asks: its live stream."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.events = 0
        threading.Thread(target=self._stream, daemon=True).start()

    def _stream(self) -> None:
        with urllib.request.urlopen(self.url + "/events/overview?range=1h", timeout=60) as reply:
            for line in reply:
                if line.startswith(b"event:"):
                    self.events += 1
                if self.stop.is_set():
                    return

    def close(self) -> None:
        self.stop.set()


def dispatch_cost(workers: int, tasks: int, repeats: int, deadline: harness.Deadline,
                  report: dict[str, Any]) -> None:
    with harness.cluster(1) as c:
        sim = Simulation(c.urls, workers, 250, harness.REPO_ROOT)
        proc, url = start_dashboard(c)
        try:
            wait_until(lambda: sim.counters().get("welcomed", 0) >= workers, min(120.0, deadline.remaining()), 0.1,
                       f"{workers} simulated workers welcomed")
            rates: dict[bool, list[float]] = {True: [], False: []}
            refreshes = 0
            for i in range(repeats):
                for open_ in ((True, False) if i % 2 == 0 else (False, True)):
                    viewer = OpenOverview(url) if open_ else None
                    run: dict[str, Any] = {}
                    try:
                        uvloop.run(push(c.urls, ACTOR, tasks, 1000, 4, deadline, run))
                    finally:
                        if viewer is not None:
                            viewer.close()
                            refreshes += viewer.events
                    rates[open_].append(run["end_to_end_rate"])
            with_, without = statistics.median(rates[True]), statistics.median(rates[False])
            spread = (max(rates[False]) - min(rates[False])) / without
            report["dispatch"] = {"workers": workers, "with_overview_open": rates[True],
                                  "without": rates[False], "median_with": with_, "median_without": without,
                                  "cost": round(1 - with_ / without, 3), "spread_without": round(spread, 3),
                                  "live_updates_received": refreshes}
            if 1 - with_ / without > max(spread, 0.03):
                harness.miss_target(report, f"an open overview costs {1 - with_ / without:.1%} of dispatch "
                                            f"(the runs' own spread: {spread:.1%})")
        finally:
            proc.terminate()
            proc.wait(10)
            sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--history-tasks", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1000, help="simulated workers connected (part 2)")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        c = LocalCluster(nodes=1)
        try:
            page_times(c, args.history_tasks, report)
        finally:
            c.stop()
        dispatch_cost(args.workers, args.tasks, args.repeats, deadline, report)

    report = harness.run_benchmark("dashboard", vars(args), args.timeout, body)
    return harness.emit(report, save=not args.no_save)


if __name__ == "__main__":
    sys.exit(main())
