"""A step of the leader's wall clock neither freezes nor hastens delays and limits: replicated time
follows the leader's monotonic clock (DESIGN.md, "Commands are stamped by the leader")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import qrt
from qrt.clock import WALL_OFFSET_ENV
from qrt.local import LocalCluster, wait_until
from tests import actors


@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    """One node whose wall clock the test steps (seconds written to a file), and one worker."""
    offset = tmp_path / "wall-offset"
    offset.write_text("0")
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), env={WALL_OFFSET_ENV: str(offset)})
    try:
        c.start()
        c.start_worker(["tests.actors"], concurrency=4)
        c.wait_for_workers(1)
        yield c, offset
    finally:
        c.stop()
        print(c.dump_logs())


def step(cluster: LocalCluster, offset: Path, seconds: float) -> None:
    """Step the node's wall clock, and wait until the node reads it (its status shows the skew)."""
    skew = float(offset.read_text()) + seconds
    offset.write_text(str(skew))
    with qrt.Client(cluster.urls) as client:
        wait_until(lambda: abs(client.status()["clock_skew"] - skew) < 1.0, 5, 0.02, what="the stepped clock")


def test_a_step_back_freezes_no_delay_and_no_rate_limit(stepped: tuple[LocalCluster, Path]) -> None:
    cluster, offset = stepped
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.add, 1, 1).result(timeout=10) == 2
        step(cluster, offset, -60.0)  # NTP steps the leader's clock back a minute
        started = time.monotonic()
        delayed = client.submit_with(actors.add, (40, 2), delay=1.0)
        limited = [client.submit(actors.rate_limited, i) for i in range(10)]  # 5/s
        assert delayed.result(timeout=10) == 42  # it used to wait for the wall clock: 60 s
        for handle in limited:
            handle.result(timeout=10)
        assert time.monotonic() - started < 8.0


def test_a_step_forward_hastens_no_delay(stepped: tuple[LocalCluster, Path]) -> None:
    cluster, offset = stepped
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.add, 1, 1).result(timeout=10) == 2
        delayed = client.submit_with(actors.add, (40, 2), delay=3.0)
        submitted = time.monotonic()
        step(cluster, offset, 60.0)  # the clock jumps a minute ahead
        assert delayed.result(timeout=10) == 42
        waited = time.monotonic() - submitted
        assert waited >= 2.5, f"a 3 s delay ran after {waited:.1f} s: the step forward fired it early"


def test_a_new_leader_whose_wall_clock_is_ahead_does_not_move_time_forward(tmp_path: Path) -> None:
    # A new leader started replicated time from the later of its wall clock and replicated time: a
    # node 60 s ahead fired every delay due in the next minute at once, and emptied rate windows.
    # Now it goes on from the replicated time it last saw, advanced by its monotonic clock.
    offsets = [tmp_path / f"wall-offset-{i}" for i in range(3)]
    for path in offsets:
        path.write_text("0")
    c = LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path),
                     node_env={i: {WALL_OFFSET_ENV: str(path)} for i, path in enumerate(offsets)})
    try:
        c.start()
        c.start_worker(["tests.actors"], concurrency=2)
        c.wait_for_workers(1)
        leader = c.wait_for_leader()
        followers = [i for i in range(3) if i != leader]
        for i in followers:  # whichever of them leads next is a minute ahead
            offsets[i].write_text("60")
        for i in followers:  # a follower measures its skew against leader time too
            with qrt.Client([c.urls[i]]) as one:
                wait_until(lambda one=one: abs(one.status(local=True)["clock_skew"] - 60) < 2, 5, 0.05,
                           what="a follower's skew")
        with qrt.Client(c.urls) as client:
            before = client.status()["now"]
            submitted = time.monotonic()
            delayed = client.submit_with(actors.add, (40, 2), delay=10.0)
            c.kill_node(leader)
            new_leader = c.wait_for_leader()
            assert new_leader in followers
            elapsed = time.monotonic() - submitted
            now = client.status()["now"]
            assert now - before < elapsed + 2, f"leader time jumped {now - before - elapsed:.1f} s at the failover"
            assert delayed.result(timeout=30) == 42
            waited = time.monotonic() - submitted
            assert waited >= 9.0, f"a 10 s delay ran after {waited:.1f} s"
    finally:
        c.stop()
        print(c.dump_logs())


def test_a_cluster_restarted_after_an_outage_catches_up_with_it(tmp_path: Path) -> None:
    # A restarted node re-applies its journal: those batches are not leader time seen live. Taken
    # as such, a node down for an hour came back an hour behind, for good (its delays, ETAs and
    # cron an hour late). The outage is an hour of wall clock, stepped while the node is down.
    offset = tmp_path / "wall-offset"
    offset.write_text("0")
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), env={WALL_OFFSET_ENV: str(offset)})
    try:
        c.start()
        with qrt.Client(c.urls) as client:
            client.submit("nobody.serves", 1)
        c.stop()
        offset.write_text("3600")
        c.start()
        with qrt.Client(c.urls) as client:
            status = client.status()
        assert abs(status["clock_skew"]) < 5, f"leader time is {status['clock_skew']:.0f} s behind the wall clock"
    finally:
        c.stop()
        print(c.dump_logs())
