"""A `run` lost on its way (a worker reconnecting drops what its old socket held) is sent again:
the leader reconciles its leases with what the worker lists in its heartbeats."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
import zmq

import qrt
from qrt.local import LocalCluster

ACTOR = "fake.echo"  # served by the test's fake worker alone


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": 1, **message}, use_bin_type=True)


def decode(frame: bytes) -> dict[str, Any]:
    message: dict[str, Any] = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    return message


def test_a_run_lost_in_a_reconnect_is_sent_again_and_the_task_finishes(cluster: LocalCluster) -> None:
    # Before, the lease stayed with the live, heart-beating worker for good: the task never ran.
    worker_id = "fake-worker-lost-run"
    hello = {"t": "hello", "worker_id": worker_id, "slots": 1, "concurrency": 1,
             "actors": [{"name": ACTOR, "options": {}}], "running": []}
    ctx = zmq.Context()

    def connect() -> zmq.Socket:  # type: ignore[type-arg]
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, worker_id.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cluster.urls[0])
        sock.send(encode(hello))
        assert sock.poll(5000) and decode(sock.recv())["t"] == "welcome"
        return sock

    sock = connect()
    try:
        with qrt.Client(cluster.urls) as client:
            task = client.submit(ACTOR, 7)
            cluster.wait_running(ACTOR, 1)  # leased to us; its `run` sits unread
            sock.close(linger=0)  # what a reconnecting worker does: the `run` is gone with the socket
            sock = connect()
            deadline = time.monotonic() + 10
            last_beat = 0.0
            while time.monotonic() < deadline:
                if time.monotonic() - last_beat > 1.0:
                    sock.send(encode({"t": "heartbeat", "running": []}))  # we run nothing
                    last_beat = time.monotonic()
                if sock.poll(100):
                    message = decode(sock.recv())
                    if message["t"] == "run":
                        [run] = message["tasks"]
                        sock.send(encode({"t": "done", "credit": 1, "outcomes": [
                            {"id": run["id"], "attempt": run["attempt"], "ok": True, "value": run["args"][0]}]}))
                        break
            assert task.result(timeout=5) == 7
    finally:
        sock.close(linger=0)
        ctx.term()


def test_a_lease_its_worker_never_lists_expires_after_its_timeout_and_a_grace(cluster: LocalCluster) -> None:
    # A worker written from the protocol may leave `running` out of its heartbeats: the leader
    # cannot reconcile with it, so each lease gets a deadline (its timeout, then LEASE_TIMEOUT's
    # grace). Before, the task stayed `running` for as long as the worker heart-beat.
    worker_id = "fake-worker-silent-lease"
    actor = "fake.slow_to_say"
    hello = {"t": "hello", "worker_id": worker_id, "slots": 1, "concurrency": 1,
             "actors": [{"name": actor, "options": {"timeout": 0.5}}], "running": []}
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, worker_id.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.urls[0])
    try:
        sock.send(encode(hello))
        assert sock.poll(5000) and decode(sock.recv())["t"] == "welcome"
        with qrt.Client(cluster.urls) as client:
            task = client.submit(actor, 7)
            attempts: list[int] = []
            deadline = time.monotonic() + 15
            last_beat = 0.0
            while time.monotonic() < deadline and len(attempts) < 2:
                if time.monotonic() - last_beat > 1.0:
                    sock.send(encode({"t": "heartbeat"}))  # alive, and says nothing of what it runs
                    last_beat = time.monotonic()
                if sock.poll(100):
                    message = decode(sock.recv())
                    if message["t"] == "run":
                        attempts += [run["attempt"] for run in message["tasks"]]  # never answered
            assert attempts == [1, 2], f"runs received: {attempts}"
            sock.send(encode({"t": "done", "credit": 1, "outcomes": [
                {"id": task.id, "attempt": 2, "ok": True, "value": 7}]}))
            assert task.result(timeout=5) == 7
    finally:
        sock.close(linger=0)
        ctx.term()


def test_a_cancel_lost_on_its_way_is_sent_again(cluster: LocalCluster) -> None:
    # A worker's `cancel` was sent once: lost in a reconnect or a leader change, the task ran on.
    worker_id = "fake-worker-lost-cancel"
    actor = "fake.cancel_me"
    hello = {"t": "hello", "worker_id": worker_id, "slots": 1, "concurrency": 1,
             "actors": [{"name": actor, "options": {}}], "running": []}
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, worker_id.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.urls[0])
    try:
        sock.send(encode(hello))
        assert sock.poll(5000) and decode(sock.recv())["t"] == "welcome"
        with qrt.Client(cluster.urls) as client:
            task = client.submit(actor)
            running: list[list[Any]] = []
            cancels = 0
            deadline = time.monotonic() + 10
            last_beat = 0.0
            while time.monotonic() < deadline and cancels < 2:
                if running and time.monotonic() - last_beat > 1.0:
                    sock.send(encode({"t": "heartbeat", "running": running}))
                    last_beat = time.monotonic()
                if sock.poll(100):
                    message = decode(sock.recv())
                    if message["t"] == "run":
                        running = [[run["id"], run["attempt"]] for run in message["tasks"]]
                        assert client.cancel(task.id)
                    elif message["t"] == "cancel":
                        cancels += 1  # the first one is "lost": we run on
            assert cancels == 2, "the cancel was not sent again"
            sock.send(encode({"t": "done", "credit": 1, "outcomes": [
                {"id": task.id, "attempt": running[0][1], "ok": False, "error_type": "cancelled",
                 "message": "cancelled while running", "traceback": "", "retryable": True}]}))
            with pytest.raises(qrt.TaskCancelled):
                task.result(timeout=5)
    finally:
        sock.close(linger=0)
        ctx.term()


def test_a_run_lost_in_a_reconnect_is_sent_again_after_the_hello(cluster: LocalCluster) -> None:
    # The hello of the reconnected worker lists no task: the lease, granted since its previous
    # hello, was kept (its `run` might still be on its way) but its `run` was lost with the old
    # socket. It is sent again at once, without waiting for heartbeats (a worker written from the
    # protocol may send them without `running`): the worker ignores a `run` it already has.
    worker_id = "fake-worker-lost-run-hello"
    actor = "fake.echo_again"
    hello = {"t": "hello", "worker_id": worker_id, "slots": 1, "concurrency": 1,
             "actors": [{"name": actor, "options": {}}], "running": []}
    ctx = zmq.Context()

    def connect() -> zmq.Socket:  # type: ignore[type-arg]
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, worker_id.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cluster.urls[0])
        sock.send(encode(hello))
        assert sock.poll(5000) and decode(sock.recv())["t"] == "welcome"
        return sock

    sock = connect()
    try:
        with qrt.Client(cluster.urls) as client:
            task = client.submit(actor, 9)
            cluster.wait_running(actor, 1)
            sock.close(linger=0)
            sock = connect()
            assert sock.poll(2000), "the lost run was not sent again after the hello"
            message = decode(sock.recv())
            assert message["t"] == "run"
            [run] = message["tasks"]
            sock.send(encode({"t": "done", "credit": 1, "outcomes": [
                {"id": run["id"], "attempt": run["attempt"], "ok": True, "value": run["args"][0]}]}))
            assert task.result(timeout=5) == 9
    finally:
        sock.close(linger=0)
        ctx.term()
