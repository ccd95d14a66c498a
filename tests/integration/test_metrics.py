"""Prometheus metrics (issue 12, item 3): the counters match the work done exactly, on every node
alike, and a failover resets none; the gauges see a known backlog; a worker's own metrics."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import qrt
from qrt.local import LocalCluster, free_port, wait_until
from tests import actors
from tests.conftest import serving


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_match_the_work_on_every_node_and_survive_a_failover(tmp_path: Path) -> None:
    c = LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path), metrics=True)
    worker_metrics = f"127.0.0.1:{free_port()}"
    with serving(c, workers=0, concurrency=1):
        c.start_worker(["tests.actors"], concurrency=4, extra=["--metrics", worker_metrics])
        c.wait_for_workers(1)
        with c.client() as client:
            ok = client.submit_many(actors.add, [(i, 1) for i in range(10)])
            bad = [client.submit(actors.always_fails, "no") for _ in range(2)]  # retries=1: two attempts each
            client.results(ok, timeout=20)
            for h in bad:
                with pytest.raises(qrt.TaskFailed):
                    h.result(timeout=20)
            backlog = client.submit_many("tests.no_worker_serves_this", [(i,) for i in range(5)])
            time.sleep(1.1)  # ok-sleep: the backlog must be this old (the gauge's lower bound below)
        add, fails = "tests.actors.add", "tests.actors.always_fails"
        expected = {("qrt_tasks_submitted_total", add): 10, ("qrt_tasks_succeeded_total", add): 10,
                    ("qrt_tasks_started_total", add): 10, ("qrt_tasks_submitted_total", fails): 2,
                    ("qrt_tasks_failed_total", fails): 4, ("qrt_tasks_retried_total", fails): 2,
                    ("qrt_tasks_dead_lettered_total", fails): 2, ("qrt_task_run_seconds_count", add): 10}

        def counted(node: int) -> dict[tuple[str, str], float]:
            samples = scrape(c.coordinator_nodes[node].metrics)
            return {key: of(samples, key[0], actor=key[1]) for key in expected}
        for node in range(3):  # followers apply the same log: the same counts
            wait_until(lambda node=node: counted(node) == expected, 10, 0.2, f"node {node}'s counters")
        leader = c.wait_for_leader()
        samples = scrape(c.coordinator_nodes[leader].metrics)
        assert of(samples, "qrt_queue_depth", actor="tests.no_worker_serves_this") == 5
        assert of(samples, "qrt_queue_oldest_age_seconds", actor="tests.no_worker_serves_this") >= 1.0
        assert of(samples, "qrt_dead_letters", actor=fails) == 2
        assert of(samples, "qrt_raft_is_leader") == 1 and of(samples, "qrt_workers_connected") == 1
        wait_until(lambda: of(scrape(c.coordinator_nodes[leader].metrics), "qrt_history_lag_batches") == 0, 10, 0.2,
                   "the history caught up")
        assert ("qrt_history_lag_batches", ()) in samples
        assert of(samples, "qrt_batch_commands_bucket", le="+Inf") == of(samples, "qrt_batch_commands_count") > 0
        own = scrape(worker_metrics)
        assert own[next(k for k in own if k[0] == "qrt_handler_run_seconds_count"
                        and ("actor", add) in k[1])] == 10
        assert any(k[0] == "qrt_worker_slots" for k in own)

        c.kill_node(leader, signal.SIGKILL)
        new_leader = c.wait_for_leader()
        assert new_leader != leader
        assert counted(new_leader) == expected  # from the replicated state: nothing reset
        with c.client() as client:
            client.cancel_many([h.id for h in backlog])


def test_per_key_series_for_the_busiest_key_values_and_the_rest_under_other(tmp_path: Path) -> None:
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), metrics=True, node_args=["--metrics-top-keys", "2"])
    with serving(c, workers=1, concurrency=4), c.client() as client:
        volumes = {"acme": 5, "globex": 3, "initech": 2, "hooli": 1}
        handles = [client.submit(actors.one_per_tenant, tenant, 0.0)
                   for tenant, n in volumes.items() for _ in range(n)]
        client.results(handles, timeout=20)
        expected = {("tenant=acme", 5), ("tenant=globex", 3), ("other", 3)}

        def series(name: str) -> set[tuple[str, float]]:
            samples = scrape(c.coordinator_nodes[0].metrics)
            return {(dict(labels)["key"], value) for (metric, labels), value in samples.items() if metric == name}
        wait_until(lambda: series("qrt_key_tasks_succeeded_total") == expected, 10, 0.2, "the per-key counters")
        assert series("qrt_key_tasks_submitted_total") == series("qrt_key_tasks_started_total") == expected
        assert series("qrt_key_tasks_failed_total") == {("tenant=acme", 0), ("tenant=globex", 0), ("other", 0)}
