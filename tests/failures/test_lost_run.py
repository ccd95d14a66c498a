"""Every lease is delivered or expired, and every cancel arrives: what a worker lacks is sent again
(a `run` lost on its way, or with the socket a reconnecting worker replaced; a `cancel` lost in a
reconnect), and a lease its worker never lists has a deadline. Fake workers written from the
protocol (tests/fake_worker.py) lose what the tests want lost."""

from __future__ import annotations

from typing import Any

import pytest

import qrt
from qrt.local import LocalCluster
from tests.fake_worker import FakeWorker


def is_run(frame: dict[str, Any]) -> bool:
    return bool(frame["t"] == "run")


def test_a_run_the_worker_never_got_is_sent_again_when_its_heartbeats_lack_it(cluster: LocalCluster) -> None:
    # Before, the lease stayed with the live, heart-beating worker for good: the task never ran.
    actor = "fake.echo"
    with FakeWorker(cluster.urls[0], "fake-worker-lost-run", {actor: {}}) as worker, \
            qrt.Client(cluster.urls) as client:
        task = client.submit(actor, 7)
        [lost] = [f for f in worker.serve(5, lambda: None, is_run) if is_run(f)]  # read, then "lost"
        frames = worker.serve(10, lambda: {"t": "heartbeat", "running": []}, is_run)  # we run nothing
        [run] = frames[-1]["tasks"]
        assert (run["id"], run["attempt"]) == (lost["tasks"][0]["id"], 1)
        worker.report(run["id"], run["attempt"], value=run["args"][0])
        assert task.result(timeout=5) == 7


def test_a_run_lost_in_a_reconnect_is_sent_again_after_the_hello(cluster: LocalCluster) -> None:
    # The hello of the reconnected worker lists no task: the lease, granted since its previous
    # hello, was kept (its `run` might still be on its way) but its `run` was lost with the old
    # socket. It is sent again at once, without waiting for heartbeats (a worker written from the
    # protocol may send them without `running`): the worker ignores a `run` it already has.
    actor = "fake.echo_again"
    with FakeWorker(cluster.urls[0], "fake-worker-lost-run-hello", {actor: {}}) as worker, \
            qrt.Client(cluster.urls) as client:
        task = client.submit(actor, 9)
        cluster.wait_running(actor, 1)  # leased to us; its `run` sits unread
        worker.connect()
        frame = worker.receive(2.0)
        assert frame is not None and is_run(frame), "the lost run was not sent again after the hello"
        [run] = frame["tasks"]
        worker.report(run["id"], run["attempt"], value=run["args"][0])
        assert task.result(timeout=5) == 9


def test_a_lease_its_worker_never_lists_expires_after_its_timeout_and_a_grace(cluster: LocalCluster) -> None:
    # A worker written from the protocol may leave `running` out of its heartbeats: the leader
    # cannot reconcile with it, so each lease gets a deadline (its timeout, then LEASE_TIMEOUT's
    # grace). Before, the task stayed `running` for as long as the worker heart-beat.
    actor = "fake.slow_to_say"
    with FakeWorker(cluster.urls[0], "fake-worker-silent-lease", {actor: {"timeout": 0.5}}) as worker, \
            qrt.Client(cluster.urls) as client:
        task = client.submit(actor, 7)
        attempts: list[int] = []

        def second_run(frame: dict[str, Any]) -> bool:
            if is_run(frame):
                attempts.extend(run["attempt"] for run in frame["tasks"])  # never answered
            return len(attempts) == 2
        worker.serve(15, lambda: {"t": "heartbeat"}, second_run)  # alive, and says nothing of what it runs
        assert attempts == [1, 2], f"runs received: {attempts}"
        worker.report(task.id, 2, value=7)
        assert task.result(timeout=5) == 7


def test_a_cancel_lost_on_its_way_is_sent_again(cluster: LocalCluster) -> None:
    # A worker's `cancel` was sent once: lost in a reconnect or a leader change, the task ran on.
    actor = "fake.cancel_me"
    with FakeWorker(cluster.urls[0], "fake-worker-lost-cancel", {actor: {}}) as worker, \
            qrt.Client(cluster.urls) as client:
        task = client.submit(actor)
        [frame] = [f for f in worker.serve(5, lambda: None, is_run) if is_run(f)]
        running = [[run["id"], run["attempt"]] for run in frame["tasks"]]
        assert client.cancel(task.id)
        cancels = [f for f in worker.serve(10, lambda: {"t": "heartbeat", "running": running},
                                           lambda f: f["t"] == "cancel" and f["id"] == task.id)
                   if f["t"] == "cancel"]
        cancels += [f for f in worker.serve(10, lambda: {"t": "heartbeat", "running": running},
                                            lambda f: f["t"] == "cancel") if f["t"] == "cancel"]
        assert len(cancels) == 2, "the cancel was not sent again"  # the first one was "lost": we ran on
        worker.report(task.id, running[0][1], ok=False, error_type="cancelled", message="cancelled while running",
                      traceback="", retryable=True)
        with pytest.raises(qrt.TaskCancelled):
            task.result(timeout=5)
