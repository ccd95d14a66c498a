"""Hostile or malformed frames get an error naming the problem, and the node keeps serving."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq

import qrt
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


@pytest.mark.parametrize(("frame", "code", "text"), [
    (b"\xc1garbage", "bad_frame", "not valid msgpack"),
    (msgpack.packb([1, 2]), "bad_frame", "must be a msgpack map"),
    (msgpack.packb({"t": "submit"}), "bad_version", "version"),
    (msgpack.packb({"v": 1, "t": "fly"}), "unknown_type", "fly"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7}), "bad_field", "'tasks'"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": 5}]}), "bad_field",
     "'tasks[0].actor' must be str"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": "a", "args": 3}]}),
     "bad_field", "'tasks[0].args'"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": "a", "delay": -1}]}),
     "bad_field", "must not be negative"),
    (msgpack.packb({"v": 1, "t": "wait", "rid": "seven", "id": "x"}), "bad_field", "'rid'"),
    (msgpack.packb({"v": 1, "t": "hello", "worker_id": "w", "actors": [{"name": "a", "options": {"retires": 1}}],
                    "slots": 1, "concurrency": 1}), "bad_field", "unknown option 'retires'"),
    (msgpack.packb({"v": 1, "t": "done", "outcomes": [{"id": "x"}]}), "bad_field", "'outcomes[0].ok'"),
])
def test_malformed_frame_gets_an_error_naming_the_problem(raw: zmq.Socket, frame: bytes, code: str,  # type: ignore[type-arg]
                                                          text: str, cluster: LocalCluster) -> None:
    reply = ask(raw, frame)
    assert reply["t"] == "error" and reply["code"] == code, reply
    assert text in reply["message"]


def test_oversized_frame_is_refused_and_the_node_keeps_serving(raw: zmq.Socket, cluster: LocalCluster) -> None:  # type: ignore[type-arg]
    frame = msgpack.packb({"v": 1, "t": "submit", "rid": 1,
                           "tasks": [{"id": "big", "actor": "a", "args": ["x" * (17 * 1024 * 1024)]}]})
    reply = ask(raw, frame)
    assert reply["code"] == "too_large"
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.add, 2, 2).result(timeout=10) == 4


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
