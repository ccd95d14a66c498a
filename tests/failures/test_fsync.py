"""`qrt coordinator --fsync`: an accepted task is on disk, not only in the kernel's page cache.

A SIGKILL cannot tell the two apart (the page cache outlives the process: the one-node restart
test of test_worker_and_coordinator_death.py passes without --fsync), and a test cannot cut the
power. So the kill test also asks the kernel, with cachestat(2) (Linux 6.5+), whether any page of
the journal is still dirty at the moment of the kill, i.e. would be lost with the power: without
--fsync the accepted task's entry is (it is written back ~30 s later), with it none is.
"""

from __future__ import annotations

import ctypes
import glob
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

import qrt
from qrt.local import LocalCluster
from qrt.raft_journal import DurableJournal
from tests import actors

SYS_CACHESTAT = 451  # the same number on every Linux architecture (added in 6.5)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def unwritten_pages(path: str) -> int:
    """Pages of `path` in the page cache not yet on disk (dirty or being written): cachestat(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = _Stat()
        if libc.syscall(SYS_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(stat), 0) != 0:
            raise OSError(ctypes.get_errno(), f"cachestat({path})")
        return int(stat.dirty + stat.writeback)
    finally:
        os.close(fd)


def require_dirty_page_accounting(directory: Path) -> None:
    """Skip where cachestat is missing or the filesystem keeps no dirty pages to flush (tmpfs)."""
    probe = str(directory / "probe")
    with open(probe, "wb") as f:
        f.write(b"x" * 4096)
        f.flush()
        try:
            written = unwritten_pages(probe)
        except OSError as exc:
            pytest.skip(f"cachestat(2) unavailable ({exc}); needs Linux 6.5+")
        os.fsync(f.fileno())
    synced = unwritten_pages(probe)
    os.unlink(probe)
    if not (written > 0 and synced == 0):
        pytest.skip(f"the filesystem of {directory} shows no dirty pages before fsync (tmpfs?)")


@pytest.fixture
def fsync_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), fsync=True)
    try:
        yield c
    finally:
        c.stop()
        print(c.dump_logs())


def test_a_task_accepted_with_fsync_is_on_disk_when_the_coordinator_is_killed(
        fsync_cluster: LocalCluster, tmp_path: Path) -> None:
    require_dirty_page_accounting(tmp_path)
    c = fsync_cluster.start()
    with qrt.Client(c.urls) as client:
        handle = client.submit(actors.add, 20, 22)  # returns on `accepted`
    c.kill_node(0, signal.SIGKILL)

    (journal,) = glob.glob(os.path.join(c.coordinator_nodes[0].data_dir, "raft-*.journal"))
    assert unwritten_pages(journal) == 0, "the journal holds pages that a power cut would lose"

    c.start_node(0)
    c.wait_for_leader()
    with qrt.Client(c.urls) as client:
        assert client.status()["queues"]["tests.actors.add"]["queued"] == 1
        c.start_worker(["tests.actors"])
        assert client.task(handle.id).result(timeout=30) == 42


def entries(journal: FileJournal | DurableJournal) -> list[tuple[bytes, int, int]]:
    return [(bytes(command), idx, term) for command, idx, term in journal[:]]


def test_the_durable_journal_keeps_pysyncobjs_format_across_compaction(tmp_path: Path) -> None:
    # A data directory moves between --fsync and not: each journal reads what the other wrote,
    # also after the durable one cut its head (compaction) or cleared itself (a snapshot loaded).
    path, dump = str(tmp_path / "raft.journal"), str(tmp_path / "raft.dump")
    theirs = FileJournal(path)
    for i in range(1, 6):
        theirs.add(b"cmd%d" % i, i, 1)
    theirs.setCurrentTerm(3, "127.0.0.1:1")
    theirs._destroy()

    ours = DurableJournal(path, dump)
    assert entries(ours) == [(b"cmd%d" % i, i, 1) for i in range(1, 6)]
    assert (ours.getCurrentTerm(), ours.getVotedForNodeId()) == (3, "127.0.0.1:1")
    ours.deleteEntriesTo(2)  # the snapshot now holds entries 1 and 2
    ours.add(b"cmd6", 6, 4)
    ours.deleteEntriesFrom(3)  # a follower drops entries that conflict with its leader's (6)
    ours.add(b"cmd6'", 6, 5)
    ours.setCurrentTerm(5, None)
    ours._destroy()
    expected = [(b"cmd3", 3, 1), (b"cmd4", 4, 1), (b"cmd5", 5, 1), (b"cmd6'", 6, 5)]

    theirs = FileJournal(path)
    assert entries(theirs) == expected and theirs.getCurrentTerm() == 5
    theirs._destroy()
    ours = DurableJournal(path, dump)
    assert entries(ours) == expected
    ours.clear()
    ours._destroy()
    assert entries(DurableJournal(path, dump)) == []
