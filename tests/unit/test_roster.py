"""The leader's account of a worker's free slots never exceeds what the worker can run."""

from __future__ import annotations

from qrt.coordinator.roster import WorkerConn, WorkerTable


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


def test_a_worker_is_found_by_the_connection_of_its_latest_hello() -> None:
    # With CURVE the router names connections: a reconnected worker says hello on a new one, and
    # its old connection no longer speaks for it (nor does any after it left).
    table = WorkerTable()
    table.hello("w@f", b"\x00old", ["a"], 1, 1)
    assert table.on(b"\x00old") is table.by_id["w@f"]
    table.hello("w@f", b"\x00new", ["a"], 1, 1)
    assert table.on(b"\x00old") is None and table.on(b"\x00new") is table.by_id["w@f"]
    table.remove("w@f")
    assert table.on(b"\x00new") is None and not table.by_identity

