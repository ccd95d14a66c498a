"""CURVE on the client/worker port: only allowed keys get in, each in its role, and a worker's
routing id cannot be taken by another key (issue 11, item 2; docs/protocol.md §1.1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from click.testing import CliRunner

import qrt
from qrt import curve
from qrt.cli.main import main
from qrt.local import LocalCluster
from tests import actors
from tests.conftest import serving


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One node with CURVE, one worker; and a second worker key ("thief") the node also allows."""
    c = LocalCluster(nodes=1, base_dir=str(tmp_path_factory.mktemp("curve")), curve=True)
    assert c.base_dir is not None
    root = os.path.join(c.base_dir, "curve")
    curve.generate(root, "thief")
    shutil.copy(os.path.join(root, "thief.key"), os.path.join(root, "workers"))
    with serving(c, workers=1, concurrency=4):
        yield c


def key_file(c: LocalCluster, name: str) -> str:
    assert c.base_dir is not None
    return os.path.join(c.base_dir, "curve", name)


def public_key(c: LocalCluster, name: str) -> bytes:
    return zmq.auth.load_certificate(key_file(c, f"{name}.key"))[0]


class Raw:
    """A DEALER written from docs/protocol.md, with the CURVE keys of pair `name`."""

    def __init__(self, c: LocalCluster, name: str, identity: bytes | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        keys = curve.peer_keys(key_file(c, f"{name}.key_secret"), key_file(c, "coordinator.key"))
        assert keys is not None
        keys.apply(self.sock)
        self.sock.connect(c.urls[0])

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(msgpack.packb({"v": 1, **message}, use_bin_type=True))

    def receive(self, timeout: float) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        reply: dict[str, Any] = msgpack.unpackb(self.sock.recv(), raw=False, strict_map_key=False)
        return reply

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def hello(worker_id: str) -> dict[str, Any]:
    return {"t": "hello", "worker_id": worker_id, "slots": 4, "concurrency": 4, "running": [], "started": 0.0,
            "actors": [{"name": "tests.actors.add", "options": {}}]}


def test_a_cluster_with_keys_runs_tasks_end_to_end(keyed: LocalCluster) -> None:
    with keyed.client() as client:
        assert client.submit(actors.add, 2, 3).result(timeout=10) == 5
        assert [h.result(timeout=10) for h in client.submit_many(actors.add, [(i, i) for i in range(20)])] \
            == [2 * i for i in range(20)]


def test_an_unknown_key_is_refused_and_the_client_says_why_it_timed_out(keyed: LocalCluster, tmp_path: Path) -> None:
    secret = curve.generate(str(tmp_path), "stranger")[1]
    with qrt.Client(keyed.urls, timeout=1.0, curve_secret_key=secret,
                    curve_server_key=key_file(keyed, "coordinator.key")) as client, \
            pytest.raises(qrt.QrtError, match="no coordinator leader answered") as refused:
        client.status()
    assert "check that the coordinator allows the key of" in str(refused.value)
    with qrt.Client(keyed.urls, timeout=1.0) as client, pytest.raises(qrt.QrtError):  # no keys at all
        client.status()
    assert "unknown CURVE key" in keyed.log("node0.log")


def test_a_client_key_cannot_say_hello_as_a_worker(keyed: LocalCluster) -> None:
    raw = Raw(keyed, "client", identity=b"client-posing-as-worker")
    try:
        raw.send(hello("client-posing-as-worker"))
        reply = raw.receive(5.0)
        assert reply is not None and (reply["t"], reply["code"]) == ("error", "forbidden"), reply
        assert "--curve-workers" in reply["message"]
    finally:
        raw.close()
    with keyed.client() as client:
        assert "client-posing-as-worker" not in [w["id"] for w in client.status()["workers"]]


def test_a_worker_key_cannot_submit(keyed: LocalCluster) -> None:
    raw = Raw(keyed, "worker")
    try:
        raw.send({"t": "submit", "rid": 9, "tasks": [{"id": "from-a-worker-key", "actor": "tests.actors.add",
                                                      "args": [1, 1]}]})
        reply = raw.receive(5.0)
        assert reply is not None and (reply["code"], reply.get("rid")) == ("forbidden", 9), reply
        assert "--curve-clients" in reply["message"]
    finally:
        raw.close()
    with keyed.client() as client, pytest.raises(qrt.TaskNotFound):
        client.task("from-a-worker-key").result(timeout=1)


def test_a_stolen_routing_id_gets_nothing(keyed: LocalCluster) -> None:
    with keyed.client() as client:
        victim = client.status()["workers"][0]["id"]  # `status` tells worker ids
        assert victim.endswith("@" + curve.fingerprint(public_key(keyed, "worker")))
        thief = Raw(keyed, "thief", identity=victim.encode())  # an allowed worker key, not the victim's
        try:
            thief.send(hello(victim))
            reply = thief.receive(5.0)  # no welcome: the id carries another key's fingerprint
            assert reply is not None and reply["code"] == "forbidden" and "fingerprint" in reply["message"], reply
            handles = client.submit_many(actors.add, [(i, 1) for i in range(20)])
            assert [h.result(timeout=10) for h in handles] == [i + 1 for i in range(20)]  # the victim ran them
            assert thief.receive(1.0) is None  # and no run: the victim's routing id is the router's
        finally:
            thief.close()
        assert [w["id"] for w in client.status()["workers"]] == [victim]


def test_a_worker_id_must_carry_its_keys_fingerprint(keyed: LocalCluster) -> None:
    own = f"raw-worker@{curve.fingerprint(public_key(keyed, 'thief'))}"
    raw = Raw(keyed, "thief")
    try:
        raw.send(hello("raw-worker"))
        reply = raw.receive(5.0)
        assert reply is not None and reply["code"] == "forbidden" and "fingerprint" in reply["message"], reply
        raw.send(hello(own))
        reply = raw.receive(5.0)
        assert reply is not None and reply["t"] == "welcome", reply
        raw.send({"t": "bye", "running": []})
    finally:
        raw.close()


def test_a_worker_on_a_new_connection_is_asked_to_say_hello_again(keyed: LocalCluster) -> None:
    # The router names each connection: a reconnected worker is a stranger until its hello, and
    # what it says before is answered `not_hello`, never taken for another worker's.
    own = f"reconnecting@{curve.fingerprint(public_key(keyed, 'thief'))}"
    first = Raw(keyed, "thief")
    try:
        first.send(hello(own))
        reply = first.receive(5.0)
        assert reply is not None and reply["t"] == "welcome", reply
    finally:
        first.close()
    second = Raw(keyed, "thief")
    try:
        second.send({"t": "heartbeat", "seq": 1, "running": []})
        reply = second.receive(5.0)
        assert reply is not None and reply["code"] == "not_hello", reply
        second.send(hello(own))
        reply = second.receive(5.0)
        assert reply is not None and reply["t"] == "welcome", reply
        second.send({"t": "bye", "running": []})
    finally:
        second.close()


def test_a_hello_in_another_workers_name_from_its_own_id_leaves_that_worker_served(keyed: LocalCluster) -> None:
    # It was refused, but set the real worker's credit to 0: an idle worker, which reports credit
    # only as slots free up, was sent nothing more until it reconnected.
    with keyed.client() as client:
        victim = client.status()["workers"][0]["id"]
        thief = Raw(keyed, "thief", identity=b"thief-own-id")
        try:
            thief.send(hello(victim))
            reply = thief.receive(2.0)
            assert reply is not None and reply["code"] == "forbidden"
        finally:
            thief.close()
        assert client.submit(actors.add, 2, 3).result(timeout=10) == 5


def test_keys_are_required_beyond_loopback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["coordinator", "--listen", "tcp://0.0.0.0:7799", "--data-dir",
                                       str(tmp_path / "data")])
    assert result.exit_code == 2 and "not on loopback" in result.output and "--curve-secret-key" in result.output
    result = CliRunner().invoke(main, ["coordinator", "--curve-clients", str(tmp_path), "--data-dir",
                                       str(tmp_path / "data")])
    assert result.exit_code == 2 and "need --curve-secret-key" in result.output


def test_keys_generate_writes_a_pyzmq_certificate_pair(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "generate", str(tmp_path), "node"])
    assert result.exit_code == 0, result.output
    public, secret = zmq.auth.load_certificate(str(tmp_path / "node.key_secret"))
    assert secret is not None and zmq.auth.load_certificate(str(tmp_path / "node.key")) == (public, None)
    assert (tmp_path / "node.key_secret").stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(main, ["keys", "generate", str(tmp_path), "node"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_a_client_with_one_key_of_two_is_refused_before_sending(tmp_path: Path) -> None:
    secret = curve.generate(str(tmp_path), "half")[1]
    with pytest.raises(ValueError, match="CURVE needs both keys"):
        qrt.Client(["tcp://127.0.0.1:7700"], curve_secret_key=secret)
