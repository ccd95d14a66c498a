"""What a connection's requests may hold in the leader (coordinator/budget.py)."""

from __future__ import annotations

from qrt.coordinator.budget import PeerBudget


def test_a_connection_is_charged_what_it_holds_and_refused_past_its_budget() -> None:
    budget = PeerBudget(limit=2048, floor=512)
    assert budget.take(b"c", 10) == 512  # a tiny request costs the floor
    assert budget.take(b"c", 1500) == 1500
    assert budget.take(b"c", 100) is None  # 2012 + 512 > 2048
    assert budget.take(b"other", 100) == 512  # another connection has its own
    budget.give(b"c", 1500)
    assert budget.take(b"c", 100) == 512
    assert budget.take(b"big", 10_000) == 10_000  # one request over the limit alone still passes
