"""The leader's account of a worker's free slots never exceeds what the worker can run."""

from __future__ import annotations

from qrt.coordinator.roster import WorkerConn


def test_credit_never_exceeds_concurrency_less_the_leases_held() -> None:
    # A `run` from a deposed leader arrives after the hello, is started, cancelled and reported
    # with credit 1: that slot was never taken from the new leader's account.
    conn = WorkerConn("w", b"w", ["a"], credit=2, concurrency=2)
    conn.give_credit(1, held=0)
    assert conn.credit == 2
    conn.credit = 0
    conn.give_credit(1, held=1)
    assert conn.credit == 1


def test_a_draining_worker_gets_no_credit() -> None:
    conn = WorkerConn("w", b"w", ["a"], credit=0, concurrency=2, draining=True)
    conn.give_credit(1, held=0)
    assert conn.credit == 0
