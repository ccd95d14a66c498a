"""Kill things for real and check that no accepted task is lost."""

from __future__ import annotations

import signal

import qrt
from qrt.local import LocalCluster, wait_until
from tests import actors


def test_task_of_a_killed_worker_runs_again_elsewhere(fresh_cluster: LocalCluster) -> None:
    c = fresh_cluster.start()
    doomed = c.start_worker(["tests.actors"], concurrency=1)
    with qrt.Client(c.urls) as client:
        c.wait_for_workers(1)
        task = client.submit(actors.sleep_then, 3.0, "survived")
        c.wait_running("tests.actors.sleep_then", 1)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        rescuer = c.start_worker(["tests.actors"], concurrency=1)
        result = task.result(timeout=30)
        assert result["value"] == "survived" and result["pid"] == rescuer.pid and result["attempt"] == 2


def test_accepted_tasks_survive_a_restart_of_the_one_node_coordinator(fresh_cluster: LocalCluster) -> None:
    c = fresh_cluster.start()
    with qrt.Client(c.urls) as client:
        handles = client.submit_many(actors.add, [(i, 1) for i in range(200)])
        delayed = client.submit_with(actors.add, (5, 5), delay=1.0)
    c.kill_node(0, signal.SIGKILL)
    c.start_node(0)
    c.wait_for_leader()
    c.start_worker(["tests.actors"])
    with qrt.Client(c.urls) as client:
        assert [client.task(h.id).result(timeout=30) for h in handles] == [i + 1 for i in range(200)]
        assert client.task(delayed.id).result(timeout=30) == 10


def test_draining_worker_finishes_its_task_and_takes_no_new_ones(fresh_cluster: LocalCluster) -> None:
    c = fresh_cluster.start()
    worker = c.start_worker(["tests.actors"], concurrency=1)
    with qrt.Client(c.urls) as client:
        c.wait_for_workers(1)
        first = client.submit(actors.sleep_then, 1.0, "first")
        c.wait_running("tests.actors.sleep_then", 1)
        worker.send_signal(signal.SIGTERM)
        second = client.submit(actors.add, 1, 1)
        assert first.result(timeout=10)["value"] == "first"
        assert worker.wait(timeout=15) == 0
        status = client.status()
        assert status["queues"]["tests.actors.add"]["queued"] == 1  # left for another worker
        c.start_worker(["tests.actors"])
        assert second.result(timeout=20) == 2


def test_worker_cut_off_from_the_leader_fences_itself_and_the_task_runs_again(fresh_cluster: LocalCluster) -> None:
    c = fresh_cluster.start()
    c.start_worker(["tests.actors"], concurrency=2, name="worker.log")
    node = c.coordinator_nodes[0].proc
    assert node is not None
    with qrt.Client(c.urls) as client:
        c.wait_for_workers(1)
        task = client.submit(actors.sleep_then, 6.0, "fenced")
        c.wait_running("tests.actors.sleep_then", 1)
        node.send_signal(signal.SIGSTOP)  # the leader goes silent, its process intact
        try:
            wait_until(lambda: "fenced" in c.log("worker.log"), 15, 0.1, "the worker fencing itself")
        finally:
            node.send_signal(signal.SIGCONT)
        result = task.result(timeout=40)
        assert result["value"] == "fenced" and result["attempt"] == 2
