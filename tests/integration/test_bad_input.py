"""Hostile or malformed frames get an error naming the problem, and the node keeps serving."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq

import qrt
from qrt import defaults
from qrt.local import LocalCluster
from tests import actors


@pytest.fixture
def raw(cluster: LocalCluster):  # type: ignore[no-untyped-def]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(cluster.urls[0])
    yield sock
    sock.close()
    ctx.term()


def ask(sock: zmq.Socket, frame: bytes) -> dict[str, Any]:  # type: ignore[type-arg]
    sock.send(frame)
    reply: dict[str, Any] = msgpack.unpackb(sock.recv(), raw=False)
    return reply


def test_a_malformed_frame_gets_an_error_naming_the_field_and_the_node_keeps_serving(
        raw: zmq.Socket, cluster: LocalCluster) -> None:  # type: ignore[type-arg]
    # Which frames are refused, and how, is the protocol's decision: tests/unit/test_protocol.py
    # checks them all without a node. This proves the coordinator sends that error and goes on.
    reply = ask(raw, msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": 5}]}))
    assert (reply["t"], reply["code"], reply.get("rid")) == ("error", "bad_field", 7), reply
    assert "field 'tasks[0].actor' must be str, not int" in reply["message"]
    assert ask(raw, b"\xc1garbage")["code"] == "bad_frame"
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.add, 2, 3).result(timeout=10) == 5


def test_oversized_frame_is_refused_and_the_node_keeps_serving(raw: zmq.Socket, cluster: LocalCluster) -> None:  # type: ignore[type-arg]
    # ZeroMQ's MAXMSGSIZE is the frame limit: the node drops the connection without reading the
    # frame into memory, and answers nothing (docs/protocol.md §3).
    frame = msgpack.packb({"v": 1, "t": "submit", "rid": 1,
                           "tasks": [{"id": "big", "actor": "a", "args": ["x" * (17 * 1024 * 1024)]}]})
    raw.send(frame)
    assert not raw.poll(1000)
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.add, 2, 2).result(timeout=10) == 4


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # peak RSS


def test_a_frame_of_empty_arrays_costs_memory_in_proportion_to_its_size(raw: zmq.Socket,  # type: ignore[type-arg]
                                                                         cluster: LocalCluster) -> None:
    # 16 MiB of `submit` made of empty arrays (one byte each) raised the leader's peak memory by
    # 1.17 GiB before it was refused or stored: each array costs ~60 bytes unpacked.
    node = cluster.coordinator_nodes[0].proc
    assert node is not None
    before = rss_mib(node.pid)
    n = 16 * 1024 * 1024 - 64
    head = msgpack.packb({"v": 1, "t": "submit", "rid": 3, "tasks": []})[:-1]  # all but the empty array
    frame = head + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n  # then an array of n empty arrays
    reply = ask(raw, frame)
    assert (reply["code"], reply.get("rid")) == ("bad_frame", 3), reply
    assert "arrays and maps" in reply["message"]
    grew = rss_mib(node.pid) - before
    assert grew < 200, f"the node's peak memory grew by {grew:.0f} MiB for a 16 MiB frame"
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.add, 1, 2).result(timeout=10) == 3


def test_worker_messages_before_hello_are_refused(raw: zmq.Socket) -> None:  # type: ignore[type-arg]
    assert ask(raw, msgpack.packb({"v": 1, "t": "heartbeat"}))["code"] == "not_hello"


def test_a_report_for_a_task_never_leased_changes_nothing(cluster: LocalCluster) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.setsockopt(zmq.ROUTING_ID, b"rogue-worker")
    sock.connect(cluster.urls[0])
    try:
        with qrt.Client(cluster.urls) as client:
            task = client.submit_with("nobody.serves.this", (1,))
            welcome = ask(sock, msgpack.packb({"v": 1, "t": "hello", "worker_id": "rogue-worker", "actors": [],
                                               "slots": 0, "concurrency": 1}))
            assert welcome["t"] == "welcome"
            ack = ask(sock, msgpack.packb({"v": 1, "t": "done", "credit": 0, "outcomes": [
                {"id": task.id, "attempt": 1, "ok": True, "value": "forged"}]}))
            assert ack["t"] == "ack"
            with pytest.raises(qrt.ResultTimeout):
                task.result(timeout=0.3)
            client.cancel(task.id)
    finally:
        sock.close()
        ctx.term()


def test_a_result_nested_near_msgpacks_limit_fails_its_task_and_nothing_else(cluster: LocalCluster) -> None:
    # It used to pass the edge, then make its `finish` command unpackable: the Raft batch around it
    # was dropped (other tasks' submits and acks too), again each time the worker resent it.
    with qrt.Client(cluster.urls) as client:
        deep = client.submit(actors.nested, 1020)
        after = [client.submit(actors.add, i, 1) for i in range(10)]
        with pytest.raises(qrt.TaskFailed) as failed:
            deep.result(timeout=10)
        assert failed.value.error_type == "ResultTooDeep"
        assert [h.result(timeout=10) for h in after] == [i + 1 for i in range(10)]


def test_a_connection_that_never_reads_its_answers_holds_a_bounded_share_of_the_leader(
        raw: zmq.Socket, cluster: LocalCluster) -> None:  # type: ignore[type-arg]
    # Each `wait` on a task that does not end is held until its timeout: without a budget per
    # connection, a peer that keeps sending them grows the leader's memory without end. Past 4
    # frame limits' worth (a request counts at least 512 bytes), the leader answers `unavailable`
    # at once and holds nothing more; other connections are served as before.
    with qrt.Client(cluster.urls) as client:
        stuck = client.submit_with("tests.no_worker_serves_this", delay=3600).id
        limit = defaults.HELD_FRAMES_PER_PEER * defaults.MAX_FRAME_BYTES // defaults.REQUEST_FLOOR_BYTES
        for rid in range(1, limit + 101):
            raw.send(msgpack.packb({"v": 1, "t": "wait", "rid": rid, "id": stuck, "timeout": 20}))
        refused = ask(raw, msgpack.packb({"v": 1, "t": "wait", "rid": 0, "id": stuck, "timeout": 20}))
        assert (refused["code"], refused["rid"]) == ("unavailable", limit + 1), refused
        assert "resend once some are answered" in refused["message"]
        assert client.submit(actors.add, 2, 3).result(timeout=10) == 5
        assert client.cancel(stuck)
