"""The cost of observability: throughput with the history, metrics and traces on and off, and the history's queries.

    python -m bench.observability [--repeats 3] [--tasks 20000] [--nodes 1|3] [--trace-ratio 0.01] [--split]
                                  [--history-tasks 1000000]

1. `bench.throughput`'s workload (no-op tasks, 2 workers x 8 slots) on 1 and 3 nodes, interleaved
   (on, off, off, on, ...) so that the machine's drift hits both alike; medians, and the cost:
   1 - on / off. Target: <= 10 %.
   - off: `--no-history`, no metrics endpoint, no tracer provider anywhere;
   - on: every node keeps its task history and serves `--metrics` (scraped every second, as
     Prometheus would), and the client, the nodes and the workers trace with OpenTelemetry's SDK,
     sampling `--trace-ratio` of the traces (`parentbased_traceidratio`, as production tracing
     does) and exporting OTLP over HTTP to a receiver in this process;
   - and, for the record, `on` with every trace sampled (`--trace-ratio 1` costs what it costs);
   - with `--split`, each part alone against none, interleaved: where the cost comes from.
2. A history of `--history-tasks` finished tasks (10 actors, 5 % dead, keyed by tenant), written
   through the same projection the nodes run (runtime/history/recorder.py), then: a filtered
   `tasks list` page (state and actor; state alone; a key value), `task show` of one, and `stats
   --since 24h` by actor, worker and minute, each timed (median of 5) on the file a node would read.
   Targets: a page <= 100 ms, stats <= 1 s. And the file's size per task.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvloop

from qrt.history import queries
from qrt.history.recorder import Recorder
from qrt.history.schema import connect

from . import harness, throughput
from .actors import noop

TARGET_COST = 0.10
TARGET_PAGE_S = 0.1
TARGET_STATS_S = 1.0


class SpanSink(ThreadingHTTPServer):
    """An OTLP/HTTP receiver that counts what it is sent and keeps nothing."""

    def __init__(self) -> None:
        self.exports = 0
        super().__init__(("127.0.0.1", 0), _Drop)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _Drop(BaseHTTPRequestHandler):
    server: SpanSink

    def do_POST(self) -> None:  # (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.exports += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def client_tracing(ratio: float, endpoint: str) -> Iterator[None]:
    """This process (the benchmark's client) traces as the nodes do, while the block runs."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    from opentelemetry.util._once import Once

    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(ratio))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]


def scrape_every_second(c: Any, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        for node in c.coordinator_nodes:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{node.metrics}/metrics", timeout=5) as r:
                r.read()


PARTS = ("history", "metrics", "tracing")


def observed_run(nodes: int, on: bool | str, ratio: float, tasks: int, sink: SpanSink, deadline: harness.Deadline,
                 report: dict[str, Any]) -> float:
    """One throughput run with everything observable on (True), off (False), or one part alone (its
    name, of PARTS); its end-to-end rate."""
    parts = set(PARTS) if on is True else set() if on is False else {on}
    tracing = "tracing" in parts
    env = {"OTEL_TRACES_EXPORTER": "otlp_proto_http", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint,
           "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)} if tracing else {}
    run: dict[str, Any] = {}
    with harness.cluster(nodes, history="history" in parts, metrics="metrics" in parts, env=env) as c:
        harness.start_workers(c, 2, 8, deadline)
        stop = threading.Event()
        scraper = threading.Thread(target=scrape_every_second, args=(c, stop), daemon=True)
        if "metrics" in parts:
            scraper.start()
        try:
            with client_tracing(ratio, sink.endpoint) if tracing else contextlib.nullcontext():
                uvloop.run(throughput.push(c.urls, noop, tasks, 1000, 4, deadline, run))
        finally:
            stop.set()
    if run.get("outcomes", {}).get("succeeded") != tasks:
        harness.fail_check(report, f"{nodes} node(s), observability {on}: {run.get('outcomes')}")
    return float(run["end_to_end_rate"])


def split_cost(nodes: int, repeats: int, tasks: int, ratio: float, deadline: harness.Deadline,
               report: dict[str, Any]) -> None:
    """Each part alone against none, interleaved: where the cost of `on` comes from."""
    sink = SpanSink()
    try:
        rates: dict[str, list[float]] = {"off": [], **{part: [] for part in PARTS}}
        for i in range(repeats):
            order = ["off", *PARTS] if i % 2 == 0 else [*reversed(PARTS), "off"]
            for name in order:
                rates[name].append(observed_run(nodes, False if name == "off" else name, ratio, tasks, sink,
                                                deadline, report))
        off = statistics.median(rates["off"])
        report.setdefault("split", []).append({
            "nodes": nodes, "trace_ratio": ratio, "runs": rates,
            "cost_alone": {part: round(1 - statistics.median(rates[part]) / off, 3) for part in PARTS}})
    finally:
        sink.shutdown()
        sink.server_close()


def throughput_cost(nodes: int, repeats: int, tasks: int, ratio: float, deadline: harness.Deadline,
                    report: dict[str, Any]) -> None:
    sink = SpanSink()
    try:
        rates: dict[bool, list[float]] = {True: [], False: []}
        for i in range(repeats):
            for observed in ((True, False) if i % 2 == 0 else (False, True)):
                rates[observed].append(observed_run(nodes, observed, ratio, tasks, sink, deadline, report))
        every_trace = observed_run(nodes, True, 1.0, tasks, sink, deadline, report)
        on, off = statistics.median(rates[True]), statistics.median(rates[False])
        cost = 1 - on / off
        report["throughput"].append({
            "nodes": nodes, "trace_ratio": ratio, "with_observability": rates[True], "without": rates[False],
            "median_with": on, "median_without": off, "cost": round(cost, 3),
            "every_trace_sampled": every_trace, "every_trace_cost": round(1 - every_trace / off, 3),
            "otlp_exports_received": sink.exports})
        if cost > TARGET_COST:
            harness.miss_target(report, f"{nodes} node(s): history, metrics and tracing cost {cost:.0%} of "
                                        f"throughput (target <= {TARGET_COST:.0%})")
    finally:
        sink.shutdown()
        sink.server_close()


def fill(path: str, n: int) -> float:
    """Write `n` finished tasks through the projection; the seconds it took."""
    recorder = Recorder(connect(path), 64 * 1024)
    rng = random.Random(7)
    actors = [f"bench.actor{i}" for i in range(10)]
    workers = [f"host-{i}-worker" for i in range(8)]
    now = time.time() - 23 * 3600  # spread over the last 23 hours
    step = 23 * 3600 / n
    batch = 0
    t0 = time.perf_counter()
    chunk = 1000
    for start in range(0, n, chunk):
        ids = [uuid.uuid4().hex for _ in range(min(chunk, n - start))]
        actor = [rng.choice(actors) for _ in ids]
        batch += 1
        recorder.add(batch, [(tid, "submitted", now, 0, "", (a, [start + i, "x"], {}, {"tenant": f"t{i % 50}"}, 0, 0.0))
                             for i, (tid, a) in enumerate(zip(ids, actor, strict=True))])
        batch += 1
        recorder.add(batch, [(tid, "leased", now + 0.01, 1, rng.choice(workers), None) for tid in ids])
        batch += 1
        recorder.add(batch, [(tid, "succeeded", now + 0.05, 1, "", {"ok": True}) if rng.random() > 0.05 else
                             (tid, "dead", now + 0.05, 1, "", {"type": "SMTPError", "message": "relay refused",
                                                               "traceback": "Traceback ..."}) for tid in ids])
        now += step * len(ids)
        if recorder.pending() >= 20_000:
            recorder.flush()
    recorder.flush()
    return time.perf_counter() - t0


def timed(fn: Any) -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def query_speed(n: int, report: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="qrt-bench-history-") as base:
        path = os.path.join(base, "history.sqlite3")
        took = fill(path, n)
        conn = connect(path, readonly=True)
        some_id = conn.execute("SELECT id FROM tasks ORDER BY seq LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
        now = time.time()
        figures = {
            "tasks": n,
            "fill_s": round(took, 1),
            "bytes_per_task": round(os.path.getsize(path) / n),
            "page_state_and_actor_s": timed(lambda: queries.list_tasks(
                conn, queries.Filters(actor="bench.actor3", state="dead"), 50)),
            "page_state_s": timed(lambda: queries.list_tasks(conn, queries.Filters(state="dead"), 50)),
            "page_key_s": timed(lambda: queries.list_tasks(conn, queries.Filters(key=("tenant", "t7")), 50)),
            "page_since_1h_dead_s": timed(lambda: queries.list_tasks(
                conn, queries.Filters(state="dead", since=now - 3600), 50)),
            "show_s": timed(lambda: queries.show_task(conn, some_id)),
            "stats_24h_by_actor_s": timed(lambda: queries.stats(conn, now - 86400, now, "actor")),
            "stats_24h_by_worker_s": timed(lambda: queries.stats(conn, now - 86400, now, "worker")),
            "stats_24h_by_minute_s": timed(lambda: queries.stats(conn, now - 86400, now, "minute")),
        }
        report["queries"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
        for name in ("page_state_and_actor_s", "page_state_s", "page_key_s", "show_s"):
            if figures[name] > TARGET_PAGE_S:
                harness.miss_target(report, f"{name} took {figures[name]:.3f} s (target <= {TARGET_PAGE_S} s)")
        for name in ("stats_24h_by_actor_s", "stats_24h_by_worker_s", "stats_24h_by_minute_s"):
            if figures[name] > TARGET_STATS_S:
                harness.miss_target(report, f"{name} took {figures[name]:.2f} s (target <= {TARGET_STATS_S} s)")


def main(argv: list[str] | None = None) -> int:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs with and without the history, each")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per throughput run")
    parser.add_argument("--nodes", type=int, choices=(1, 3), help="cluster size (default: 1, then 3)")
    parser.add_argument("--history-tasks", type=int, default=1_000_000, help="tasks in the queried history")
    parser.add_argument("--trace-ratio", type=float, default=0.01, help="share of traces sampled when on")
    parser.add_argument("--split", action="store_true", help="also each part alone against none (where the cost is)")
    args = parser.parse_args(argv)

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        report["throughput"] = []
        for nodes in [args.nodes] if args.nodes else [1, 3]:
            throughput_cost(nodes, args.repeats, args.tasks, args.trace_ratio, deadline, report)
            if args.split:
                split_cost(nodes, args.repeats, args.tasks, args.trace_ratio, deadline, report)
        if args.history_tasks:
            query_speed(args.history_tasks, report)

    report = harness.run_benchmark("observability", vars(args), args.timeout, body)
    return harness.emit(report, save=not args.no_save)


if __name__ == "__main__":
    raise SystemExit(main())
