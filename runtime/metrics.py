"""Prometheus metrics: `qrt coordinator --metrics HOST:PORT` and `qrt worker --metrics HOST:PORT`
serve the text format (prometheus-client's HTTP server, on a thread of its own).

Collected at each scrape, never on the dispatch path. A coordinator's task counters and
histograms come from the replicated state (state/tallies.py): every node reports the same totals,
and neither a failover nor a restart resets them. Gauges are what the answering node sees now:
queue depth and the oldest queued task's age (from its replica), workers and free slots (the
leader's view; a follower knows none), Raft. README ("Metrics") lists every metric and its labels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .defaults import METRICS_TOP_KEYS
from .state import views
from .state.tallies import BUCKETS, OTHER, KeyTally, Tally

if TYPE_CHECKING:
    from .coordinator.server import Coordinator
    from .worker.session import Worker

log = logging.getLogger("qrt.metrics")

COUNTERS = (("submitted", "qrt_tasks_submitted", "Tasks accepted."),
            ("started", "qrt_tasks_started", "Leases granted: attempts started."),
            ("succeeded", "qrt_tasks_succeeded", "Attempts that succeeded."),
            ("failed", "qrt_tasks_failed", "Attempts that failed (retried or dead-lettered)."),
            ("retried", "qrt_tasks_retried", "Failed attempts given another."),
            ("dead_lettered", "qrt_tasks_dead_lettered", "Tasks that went to the dead-letter queue."),
            ("lost", "qrt_tasks_lost", "Leases lost with their worker (the task runs again)."),
            ("rate_limited", "qrt_rate_limited", "Starts a rate limit held back."))


def serve(address: str, collector: Collector) -> None:
    """Serve `collector`'s metrics on HOST:PORT (a thread); OSError when the port is taken."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--metrics {address!r} is not HOST:PORT")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    log.info("metrics on http://%s:%s/metrics", host, port)


def _histogram(name: str, doc: str, label: str, rows: dict[str, tuple[list[int], float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, (counts, total) in sorted(rows.items()):
        cumulative, buckets = 0, []
        for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric([value], buckets, total)
    return family


KEY_COUNTERS = (("submitted", "qrt_key_tasks_submitted", "Tasks accepted, per key value."),
                ("started", "qrt_key_tasks_started", "Attempts started, per key value."),
                ("succeeded", "qrt_key_tasks_succeeded", "Attempts that succeeded, per key value."),
                ("failed", "qrt_key_tasks_failed", "Attempts that failed, per key value."),
                ("dead_lettered", "qrt_key_tasks_dead_lettered", "Tasks dead-lettered, per key value."))


def top_keys(by_key: dict[str, KeyTally], n: int, kept: list[str]) -> dict[str, KeyTally]:
    """Series for `n` key values, the rest summed under OTHER (with what the state counts there
    already): bounded cardinality however many values. `kept` (updated here) are the values
    shown so far: a value keeps its series once it has one, and free places go to the values with
    the most tasks submitted (ties: by name). So no series ever counts down: were the top n taken
    afresh, a value entering them would take its count out of OTHER, which Prometheus reads as a
    counter reset."""
    if len(kept) < n:
        ranked = sorted((label for label in by_key if label != OTHER and label not in kept),
                        key=lambda label: (-by_key[label].submitted, label))
        kept.extend(ranked[:n - len(kept)])
    shown = {label: KeyTally(*(getattr(by_key[label], what) for what in KeyTally.COUNTS))
             for label in kept if label in by_key}
    rest = [tally for label, tally in by_key.items() if label not in shown]
    if rest:
        shown[OTHER] = KeyTally(*(sum(getattr(t, what) for t in rest) for what in KeyTally.COUNTS))
    return shown


class CoordinatorCollector:
    def __init__(self, coordinator: Coordinator, key_series: int = METRICS_TOP_KEYS) -> None:
        self.coordinator = coordinator
        self.key_series = key_series  # per-key series: this many key values, the rest under key="other"
        self._kept_keys: list[str] = []  # the key values with a series (top_keys)

    def collect(self) -> Iterator[Metric]:
        family: Metric
        c = self.coordinator
        now = c.proposer.clock()
        with c.replication.reading() as m:
            tallies = {actor: _copy(t) for actor, t in m.tallies.by_actor.items()}
            keys = top_keys(m.tallies.by_key, self.key_series, self._kept_keys)
            depth = views.depth(m, registered=True)
            oldest = views.oldest_queued(m)
            dead = _dead_letters(m)
        for attribute, name, doc in COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["actor"])
            for actor, tally in sorted(tallies.items()):
                family.add_metric([actor], getattr(tally, attribute))
            yield family
        for attribute, name, doc in KEY_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["key"])
            for label, key_tally in sorted(keys.items()):
                family.add_metric([label], getattr(key_tally, attribute))
            yield family
        yield _histogram("qrt_task_queue_wait_seconds", "From due to started, per start.", "actor",
                         {a: (t.wait, t.wait_sum) for a, t in tallies.items()})
        yield _histogram("qrt_task_run_seconds", "From started to its outcome committed, per attempt.", "actor",
                         {a: (t.run, t.run_sum) for a, t in tallies.items()})
        for key, name, doc in (("queued", "qrt_queue_depth", "Tasks queued (due, waiting for a slot)."),
                               ("running", "qrt_tasks_running", "Tasks leased to a worker."),
                               ("delayed", "qrt_tasks_delayed", "Tasks waiting for their time.")):
            family = GaugeMetricFamily(name, doc, labels=["actor"])
            for actor, row in sorted(depth.items()):
                family.add_metric([actor], row[key])
            yield family
        family = GaugeMetricFamily("qrt_queue_oldest_age_seconds", "Age of the oldest queued task (since due).",
                                   labels=["actor"])
        for actor in sorted(depth):
            family.add_metric([actor], max(0.0, now - oldest[actor]) if actor in oldest else 0.0)
        yield family
        family = GaugeMetricFamily("qrt_dead_letters", "Tasks in the dead-letter queue.", labels=["actor"])
        for actor, n in sorted(dead.items()):
            family.add_metric([actor], n)
        yield family
        workers = list(c.workers.by_id.values())
        yield GaugeMetricFamily("qrt_workers_connected", "Workers connected to this node (the leader).",
                                value=sum(1 for w in workers if w.connected))
        family = GaugeMetricFamily("qrt_worker_free_slots", "Free slots the leader counts per worker.",
                                   labels=["worker"])
        for w in workers:
            if w.connected:
                family.add_metric([w.id], w.credit)
        yield family
        raft = c.replication.status()
        yield GaugeMetricFamily("qrt_raft_term", "This node's Raft term.", value=raft["term"])
        yield GaugeMetricFamily("qrt_raft_commit_index", "This node's Raft commit index.", value=raft["commit_index"])
        yield GaugeMetricFamily("qrt_raft_is_leader", "1 on the leader.", value=1 if c.leading else 0)
        if c.reader.history is not None:
            yield GaugeMetricFamily("qrt_history_lag_batches", "Batches applied that this node's task history "
                                    "has not written yet (it yields the CPU to dispatch).", value=c.reader.history.lag)
        yield CounterMetricFamily("qrt_leader_changes", "Times this node took or left office.",
                                  value=c.leader_changes)
        sizes = c.proposer.batch_sizes
        family = HistogramMetricFamily("qrt_batch_commands", "Commands per Raft entry this node proposed.")
        family.add_metric([], [("+Inf" if b == float("inf") else repr(b), n) for b, n in sizes.cumulative()],
                          sizes.total)
        yield family


def _copy(tally: Tally) -> Tally:
    return Tally(tally.submitted, tally.started, tally.succeeded, tally.failed, tally.retried, tally.dead_lettered,
                 tally.lost, tally.rate_limited, list(tally.wait), tally.wait_sum, list(tally.run), tally.run_sum)


def _dead_letters(m: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task_id in m.dlq:
        task = m.tasks.get(task_id)
        if task is not None:
            counts[task.actor] = counts.get(task.actor, 0) + 1
    return counts


class WorkerCollector:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        labels = ["worker"]
        busy = GaugeMetricFamily("qrt_worker_slots_busy", "Slots running a task (or held by one).", labels=labels)
        busy.add_metric([w.id], len(w.running) + w.held_slots)
        yield busy
        slots = GaugeMetricFamily("qrt_worker_slots", "Slots of this worker (--concurrency).", labels=labels)
        slots.add_metric([w.id], w.concurrency)
        yield slots
        lag = GaugeMetricFamily("qrt_worker_event_loop_lag_seconds", "How late the worker's timer last ran "
                                "(its event loop blocked, or the machine busy).", labels=labels)
        lag.add_metric([w.id], w.loop_lag)
        yield lag
        yield _histogram("qrt_handler_run_seconds", "Handler run time, per attempt, in this worker.", "actor",
                         {a: (t.run, t.run_sum) for a, t in list(w.ran.items())})

