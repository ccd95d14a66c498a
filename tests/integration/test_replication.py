"""Real pysyncobj in this process: commits, snapshots, and state that survives a restart."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from qrt.local import free_port, wait_until
from qrt.protocol import Envelope
from qrt.replication import Replication
from qrt.state import commands as C
from qrt.state.model import Applied, Effect


def commit(replication: Replication, *commands: C.Command) -> list[list[Effect]]:
    done = threading.Event()
    out: list[list[list[Effect]] | None] = []

    def callback(applied: Applied | None, error: str | None) -> None:
        assert error is None, error
        out.append(None if applied is None else applied.effects())
        done.set()

    replication.propose(C.pack_batch(replication.term, replication.machine.now + 1, list(commands)), callback)
    assert done.wait(10), "the batch did not commit"
    assert out[0] is not None
    return out[0]


def test_state_survives_a_restart_after_a_snapshot(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = Replication(address, [], str(tmp_path), password=None)
    try:
        wait_until(first.is_leader, 10, what="leadership")
        for i in range(50):
            commit(first, C.Submit([Envelope(f"t{i}", "a", [i], {})]))
        first.sync.forceLogCompaction()
        wait_until(lambda: any(p.name.endswith(".dump") and p.stat().st_size > 0 for p in tmp_path.iterdir()),
                   10, what="a snapshot on disk")
        for i in range(50, 60):  # after the snapshot: only in the journal
            commit(first, C.Submit([Envelope(f"t{i}", "a", [i], {})]))
        digest = first.machine.digest
    finally:
        first.destroy()
    second = Replication(address, [], str(tmp_path), password=None)
    try:
        wait_until(second.is_leader, 10, what="leadership after restart")
        wait_until(lambda: len(second.machine.tasks) == 60, 10, what="all 60 tasks restored")
        assert second.machine.digest == digest
        assert second.machine.tasks["t55"].args == [55]
    finally:
        second.destroy()


def test_one_node_commit_is_fast(tmp_path: Path) -> None:
    """Regression guard for the tick that made each commit wait 50 ms (a generous bound)."""
    replication = Replication(f"127.0.0.1:{free_port()}", [], str(tmp_path), password=None)
    try:
        wait_until(replication.is_leader, 10, what="leadership")
        started = time.perf_counter()
        for _ in range(100):
            commit(replication, C.Tick())
        assert (time.perf_counter() - started) / 100 < 0.01
    finally:
        replication.destroy()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_forked_snapshot_child_dies_with_its_coordinator() -> None:
    """pysyncobj writes snapshots in a forked child; ours is armed to be killed with its parent."""
    import ctypes
    import os
    import signal

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the death signal it got from the at-fork hook
        death = ctypes.c_int()
        ctypes.CDLL(None).prctl(2, ctypes.byref(death))  # PR_GET_PDEATHSIG
        os.write(write, str(death.value).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert int(os.read(read, 16)) == signal.SIGKILL


def test_ticked_on_the_loop_three_nodes_commit_and_followers_learn_of_it_without_another_entry(
        tmp_path: Path) -> None:
    """The coordinator's shape (raft_loop.py): pysyncobj's sockets and ticks on one asyncio loop.
    After a commit, the leader tells the followers within COMMIT_NOTICE_DELAY of its own clock
    (pysyncobj's, CLOCK_MONOTONIC_RAW: a deadline from time.monotonic was off by the two clocks'
    drift, and the followers heard of the commit only at the next 100 ms heartbeat); and a follower
    that asks for entries again gets them at the next tick."""
    import asyncio

    from pysyncobj.monotonic import monotonic as raft_clock

    from qrt import raft_node as R

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        nodes = [Replication(a, [p for p in addresses if p != a], str(tmp_path / a.replace(":", "_")), "pw",
                             loop=loop) for a in addresses]
        try:
            async def until(condition: object, what: str) -> None:
                deadline = time.monotonic() + 10
                while not condition():  # type: ignore[operator]
                    assert time.monotonic() < deadline, f"{what} not reached within 10 s"
                    await asyncio.sleep(0.005)

            await until(lambda: any(n.is_leader() for n in nodes), "leadership")
            leader = next(n for n in nodes if n.is_leader())
            done: asyncio.Future[Applied | None] = loop.create_future()
            leader.propose(C.pack_batch(leader.term, time.time(), [C.Submit([Envelope("t1", "a", [], {})])]),
                           lambda applied, error: done.set_result(applied))
            assert await asyncio.wait_for(done, 10) is not None
            assert getattr(leader.sync, R._NEXT_APPEND) - raft_clock() <= R.COMMIT_NOTICE_DELAY
            await until(lambda: all("t1" in n.machine.tasks for n in nodes), "every replica applying it")

            # A follower that asks for entries again from an earlier index gets them at the next
            # tick, not at the next heartbeat (100 ms): nothing else would send them now.
            follower = next(node for node in leader.sync._SyncObj__otherNodes)
            setattr(leader.sync, R._NEXT_APPEND, raft_clock() + 60.0)
            leader.sync._SyncObj__onMessageReceived(follower, {
                "type": "next_node_idx", "reset": True, "success": False,
                "next_node_idx": leader.sync._SyncObj__getCurrentLogIndex()})
            assert getattr(leader.sync, R._NEXT_APPEND) <= raft_clock()

            # With a follower down, a commit still sends no AppendEntries of its own: the one down
            # lags for good, and counting it doubled the messages again.
            gone = next(n for n in nodes if n is not leader)
            gone.destroy()
            nodes.remove(gone)
            await until(lambda: len(leader.sync._SyncObj__connectedNodes) == 1, "the leader seeing it gone")
            done2: asyncio.Future[Applied | None] = loop.create_future()
            leader.propose(C.pack_batch(leader.term, time.time(), [C.Tick()]),
                           lambda applied, error: done2.set_result(applied))
            assert await asyncio.wait_for(done2, 10) is not None
            assert getattr(leader.sync, R._NEXT_APPEND) - raft_clock() <= R.COMMIT_NOTICE_DELAY
        finally:
            for node in nodes:
                node.destroy()

    asyncio.run(scenario())
