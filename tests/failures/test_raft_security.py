"""The Raft port against a stranger (issue #11): no unauthenticated byte reaches pickle, a frame's
claimed length is capped before it is buffered, and there is always a secret.

Each attack is made on a default cluster, as `LocalCluster` starts it without a password, on
127.0.0.1: the node refuses it and goes on serving tasks.
"""

from __future__ import annotations

import os
import pickle
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qrt
from qrt import raft_guard
from qrt.local import LocalCluster, free_port, wait_until
from qrt.protocol import Envelope
from qrt.replication import Replication
from qrt.state import commands as C
from tests import actors
from tests.conftest import serving


class Exploit:
    """Unpickling this creates `path`: proof that a stranger's bytes ran inside the node."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


def raft_address(c: LocalCluster, i: int = 0) -> tuple[str, int]:
    host, port = c.coordinator_nodes[i].raft.rsplit(":", 1)
    return host, int(port)


def node_pid(c: LocalCluster, i: int = 0) -> int:
    proc = c.coordinator_nodes[i].proc
    assert proc is not None
    return proc.pid


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """Whether the other side closes the connection within `timeout` (what it sends is read and dropped)."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def serves_a_task(c: LocalCluster) -> None:
    with c.client() as client:
        assert client.submit(actors.add, 2, 3).result(timeout=20) == 5


@pytest.fixture(params=[1, 3], ids=["one-node", "three-nodes"])
def default_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster as LocalCluster starts it by default (no password), with one worker."""
    (tmp_path / "cluster").mkdir()
    with serving(LocalCluster(nodes=request.param, base_dir=str(tmp_path / "cluster")), workers=1, concurrency=2) as c:
        yield c


def test_a_pickle_sent_to_the_raft_port_runs_nothing(default_cluster: LocalCluster, tmp_path: Path) -> None:
    c = default_cluster
    marker = tmp_path / "pwned"
    payload = zlib.compress(pickle.dumps(Exploit(str(marker))), 3)
    # As pysyncobj frames a plaintext message (the first frame of an incoming connection is the
    # peer's address when there is no password); then the same pickle behind a forged cipher header.
    forged = b"\x01" + bytes(8) + os.urandom(16) + os.urandom(12) + payload + bytes(16)
    closed = []
    for i in range(len(c.coordinator_nodes)):
        for frame in (payload, forged):
            with socket.create_connection(raft_address(c, i)) as s:
                s.sendall(struct.pack("i", len(frame)) + frame)
                closed.append(closed_by_peer(s, 10))
    assert not marker.exists(), "a stranger's pickle ran inside a coordinator"
    assert all(closed), "the Raft port kept a connection that sent garbage"
    serves_a_task(c)
    assert all(n.proc is not None and n.proc.poll() is None for n in c.coordinator_nodes)


def test_an_oversized_length_claim_is_refused_before_it_is_buffered(tmp_path: Path) -> None:
    with LocalCluster(nodes=1, base_dir=str(tmp_path)) as c:
        c.start_worker(["tests.actors"], concurrency=2)
        c.wait_for_workers(1)
        pid = node_pid(c)
        before = peak_rss(pid)
        streamed = 32 * 1024 * 1024  # what the stranger sends of the 2 GiB it claims
        refused = threading.Event()

        def stream() -> None:
            with socket.create_connection(raft_address(c)) as s:
                try:
                    s.sendall(struct.pack("i", 2**31 - 1))
                    chunk = os.urandom(1 << 20)
                    for _ in range(streamed // len(chunk)):
                        s.sendall(chunk)
                except (ConnectionResetError, BrokenPipeError):
                    refused.set()
                    return
                if closed_by_peer(s, 30):
                    refused.set()

        sender = threading.Thread(target=stream)
        sender.start()
        sender.join(60)
        assert not sender.is_alive()
        grown = peak_rss(pid) - before
        assert grown < 8 * 1024 * 1024, f"the node's peak memory grew by {grown / 2**20:.0f} MiB"
        assert refused.is_set(), "the Raft port kept a connection claiming a 2 GiB frame"
        serves_a_task(c)


def test_a_multi_node_coordinator_without_a_secret_refuses_to_start(tmp_path: Path) -> None:
    raft, *peers = (f"127.0.0.1:{free_port()}" for _ in range(3))
    args = [sys.executable, "-m", "qrt.cli", "coordinator", "--listen", f"tcp://127.0.0.1:{free_port()}",
            "--raft", raft, "--peer", peers[0], "--peer", peers[1], "--data-dir", str(tmp_path / "node")]
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        pytest.fail("a 3-node coordinator without a Raft secret started")
    assert result.returncode != 0
    assert "--raft-password-file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_one_node_secret_is_private_and_reused_after_a_restart(tmp_path: Path) -> None:
    c = LocalCluster(nodes=1, base_dir=str(tmp_path))
    try:
        c.start()
        path = Path(c.coordinator_nodes[0].data_dir) / raft_guard.SECRET_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = path.read_text()
        assert len(secret) >= 32
        c.start_worker(["tests.actors"], concurrency=2)
        serves_a_task(c)
        c.kill_node(0)
        c.start_node(0)
        c.wait_for_leader()
        assert path.read_text() == secret
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        serves_a_task(c)
    finally:
        c.stop()
        print(c.dump_logs())


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / raft_guard.SECRET_FILE
    path.write_text("x" * 43)
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        raft_guard.node_secret(str(tmp_path))


def test_entries_far_above_the_handshake_limit_still_replicate(tmp_path: Path) -> None:
    """The caps stop strangers, not the cluster: a 12 MiB entry reaches both followers (pysyncobj
    sends it in 64 KiB pieces, or whole behind smaller entries), and so does a snapshot that a
    follower restarted after a log compaction receives."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [Replication(a, [p for p in addresses if p != a], str(tmp_path / f"n{i}"), password="s3cret")
             for i, a in enumerate(addresses)]
    try:
        leader = wait_until(lambda: next((n for n in nodes if n.is_leader()), None), 20, what="a leader")
        big = "x" * (12 << 20)

        def commit(*envelopes: Envelope) -> None:
            done = threading.Event()
            leader.propose(C.pack_batch(leader.term, leader.machine.now + 1, [C.Submit(list(envelopes))]),
                           lambda applied, error: done.set())
            assert done.wait(30), "the batch did not commit"

        commit(Envelope("small", "a", [1], {}))
        commit(Envelope("big", "a", [big], {}))
        commit(*(Envelope(f"s{i}", "a", [i], {}) for i in range(50)))
        wait_until(lambda: all(len(n.machine.tasks) == 52 for n in nodes), 30, what="every replica has all tasks")
        assert all(n.machine.tasks["big"].args == [big] for n in nodes)
    finally:
        for n in nodes:
            n.destroy()


def test_a_batch_above_the_raft_frame_limit_fails_alone_with_a_reason(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_guard, "MAX_ENTRY_BYTES", 1 << 20)
    replication = Replication(f"127.0.0.1:{free_port()}", [], str(tmp_path), password=None)
    try:
        wait_until(replication.is_leader, 10, what="leadership")
        outcome: list[str | None] = []
        done = threading.Event()

        def callback(applied: Any, error: str | None) -> None:
            outcome.append(error)
            done.set()

        batch = C.pack_batch(replication.term, replication.machine.now + 1,
                             [C.Submit([Envelope("big", "a", ["x" * (2 << 20)], {})])])
        replication.propose(batch, callback)
        assert done.wait(10)
        assert outcome[0] is not None and "too large" in outcome[0]
        assert "big" not in replication.machine.tasks
    finally:
        replication.destroy()


def test_clients_of_a_default_cluster_see_nothing_of_this(tmp_path: Path) -> None:
    """A default 3-node LocalCluster (no password given) generates one shared secret for its nodes."""
    with LocalCluster(nodes=3, base_dir=str(tmp_path)) as c:
        assert all("--raft-password-file" in n.args for n in c.coordinator_nodes)
        c.start_worker(["tests.actors"], concurrency=2)
        with qrt.Client(c.urls) as client:
            assert client.submit(actors.add, 1, 1).result(timeout=20) == 2


def test_strangers_that_never_finish_the_handshake_are_dropped_oldest_first(tmp_path: Path) -> None:
    """pysyncobj would keep a silent connection forever (its timeout is checked only on a socket
    event): a stranger could hold every descriptor of the node."""
    address = f"127.0.0.1:{free_port()}"
    replication = Replication(address, [], str(tmp_path), password=None)
    host, port = address.rsplit(":", 1)
    count = raft_guard.MAX_STRANGERS + 8
    sockets = [socket.create_connection((host, int(port))) for _ in range(count)]
    try:
        for s in sockets[:8]:
            assert closed_by_peer(s, 10), "a silent stranger's connection was kept"
        assert not any(closed_by_peer(s, 0.01) for s in sockets[8:])
        wait_until(replication.is_leader, 10, what="leadership")
    finally:
        for s in sockets:
            s.close()
        replication.destroy()
