"""The pre-vote qrt adds to pysyncobj keeps a returning node from forcing an election, but never
strands a node whose term is ahead of the leader's: it campaigns once, as Raft without pre-vote
would (real pysyncobj nodes on 127.0.0.1, in this process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt.local import free_port, wait_until
from qrt.replication import Replication
from qrt.state import commands as C


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[Replication]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [Replication(a, [b for b in addresses if b != a], str(tmp_path / a.replace(":", "_")), "prevote-test")
             for a in addresses]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.destroy()


def commit(leader: Replication) -> None:
    done = threading.Event()
    leader.propose(C.join_batch(leader.term, time.time(), [C.pack_command(C.Tick())], [1]),
                   lambda applied, error: done.set())
    done.wait(2)


def test_a_node_whose_term_is_ahead_rejoins(three: list[Replication]) -> None:
    # Its term rose without any peer hearing of it (a campaign whose request_vote never left a
    # partition). pysyncobj ignores the leader's appends of a lower term; with pre-vote alone the
    # leader and the other follower refused its campaign: it stayed out for good (seen for 10 s
    # while the leader committed).
    leader = wait_until(lambda: next((n for n in three if n.is_leader()), None), 15, what="a leader")
    follower = next(n for n in three if n is not leader)
    follower.sync._SyncObj__setCurrentTerm(follower.term + 1, follower.sync._SyncObj__selfNode.id)

    def caught_up() -> bool:
        current = next((n for n in three if n.is_leader()), None)
        if current is None:
            return False
        applied = current.machine.applied
        commit(current)
        return follower.machine.applied >= applied > 0  # the follower applies what the leader had
    wait_until(caught_up, 15, 0.2, what="the follower back in the cluster")
