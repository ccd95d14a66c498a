"""The timing inequalities of docs/reliability.md, checked against the constants the code uses."""

from __future__ import annotations

from qrt import defaults
from qrt.worker import isolation, session

# What the inequality keeps in hand for what it does not model: a loop late under load, clock rates.
MARGIN = 0.5


def stale_answers_for() -> float:
    """How long after a new leader is elected a deposed one may still answer a worker's heartbeat:
    until it steps down (cut off: its fallback timeout after its last contact), or until the
    worker, hearing nothing, moves to another node (paused: the failover silence); an election
    takes at least the minimum election timeout after the leader's last contact."""
    return max(defaults.RAFT_LEADER_FALLBACK_TIMEOUT, defaults.SILENCE_BEFORE_FAILOVER) - defaults.RAFT_MIN_TIMEOUT


def test_a_worker_has_stopped_its_tasks_before_any_leader_can_expire_their_leases() -> None:
    # The fence counts from the send time of the last answered heartbeat, at most `stale_answers_for`
    # after the new leader's lease timers started; it is checked every TIMER_INTERVAL, and a
    # process-isolated handler is dead within KILL_GRACE of its SIGTERM.
    stopped_by = (defaults.WORKER_FENCE_AFTER + stale_answers_for() + session.TIMER_INTERVAL
                  + isolation.KILL_GRACE)
    assert stopped_by + MARGIN <= defaults.LEASE_TIMEOUT, stopped_by


def test_a_leader_failover_does_not_fence_a_healthy_worker() -> None:
    # Its last answered heartbeat was sent up to a heartbeat interval before the leader died; it
    # moves on after the failover silence, and says hello again until a leader is elected.
    reconnected_by = (defaults.HEARTBEAT_INTERVAL + max(defaults.SILENCE_BEFORE_FAILOVER, defaults.RAFT_MAX_TIMEOUT)
                      + defaults.HELLO_RETRY)
    assert reconnected_by < defaults.WORKER_FENCE_AFTER, reconnected_by


def test_elections_wait_longer_than_the_leaders_heartbeats_and_step_down_follows() -> None:
    assert defaults.RAFT_MIN_TIMEOUT < defaults.RAFT_MAX_TIMEOUT <= defaults.SILENCE_BEFORE_FAILOVER
    assert defaults.RAFT_MIN_TIMEOUT < defaults.RAFT_LEADER_FALLBACK_TIMEOUT
