"""A node left without a quorum answers `no_leader`, never a redirect to a leader that is gone."""

from __future__ import annotations

import signal
from typing import Any

import msgpack
import zmq

from qrt.local import LocalCluster, wait_until


def ask(url: str, body: dict[str, Any]) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    try:
        sock.connect(url)
        sock.send(msgpack.packb({"v": 1, **body}))
        reply: dict[str, Any] = msgpack.unpackb(sock.recv(), raw=False)
        return reply
    finally:
        sock.close()
        ctx.term()


def test_a_survivor_without_quorum_says_no_leader_instead_of_redirecting_to_the_dead_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A client written from the protocol doc bounced for 30 s between a redirect, the dead leader's
    # URL and silence: the survivor kept naming the leader it last knew.
    with LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path)) as c:
        leader = c.wait_for_leader()
        follower, survivor = [i for i in range(3) if i != leader]
        c.kill_node(leader, signal.SIGKILL)
        c.kill_node(follower, signal.SIGKILL)
        url = c.coordinator_nodes[survivor].url
        # Generous: the survivor notices within a few Raft timeouts (about 1-2 s).
        wait_until(lambda: ask(url, {"t": "status", "rid": 1})["t"] != "redirect", 10,
                   what="the survivor to stop redirecting to the dead leader")
        reply = ask(url, {"t": "status", "rid": 2})
        assert (reply["t"], reply.get("code")) == ("error", "no_leader"), reply
