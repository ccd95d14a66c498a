"""The state machine's rules, one behaviour per test, without sockets or clocks."""

from __future__ import annotations

import msgpack
import pytest

from qrt import defaults
from qrt.protocol import Envelope
from qrt.state import commands as C
from qrt.state import views
from qrt.state.backoff import backoff_delay
from qrt.state.model import Accepted, CancelRunning, Count, Finished, Internal, Leased, Retrying

from .statehelp import Driver


def test_submitted_task_is_leased_to_a_free_slot_and_its_result_kept() -> None:
    d = Driver()
    d.submit("t1", args=[1, 2])
    [run] = d.dispatch()
    assert run.id == "t1" and run.attempt == 1 and run.args == [1, 2]
    assert run.timeout == defaults.TASK_TIMEOUT
    assert d.state("t1") == "running"
    effects = d.finish(run, value=3)
    assert isinstance(effects[0], Finished) and effects[0].summary["value"] == 3
    assert d.machine.tasks["t1"].result == 3


def test_a_resubmitted_id_is_accepted_once_and_runs_once() -> None:
    d = Driver()
    d.submit("t1")
    effects = d.apply(C.Submit([Envelope("t1", "a", [], {})]))
    assert effects[0] == [Accepted(["t1"])]
    assert len(d.dispatch(n=5)) == 1


def test_dispatch_never_leases_more_than_the_offered_slots() -> None:
    d = Driver()
    for i in range(5):
        d.submit(f"t{i}")
    assert len(d.dispatch(n=2)) == 2
    assert d.machine.queued_count["a"] == 3


def test_dispatch_spreads_a_batch_over_the_offers_in_turn() -> None:
    d = Driver()
    for i in range(5):
        d.submit(f"t{i}")
    effects = d.apply(C.Dispatch([C.Offer("w1", ["a"], 4), C.Offer("w2", ["a"], 4)]))[0]
    leased = [(e.worker, e.task.id) for e in effects if isinstance(e, Leased)]
    assert leased == [("w1", "t0"), ("w2", "t1"), ("w1", "t2"), ("w2", "t3"), ("w1", "t4")]


def test_dispatch_only_leases_actors_the_worker_serves() -> None:
    d = Driver()
    d.submit("t1", actor="b")
    assert d.dispatch(actors=["a"], n=1) == []
    assert [r.id for r in d.dispatch(actors=["a", "b"])] == ["t1"]


def test_higher_priority_first_then_oldest() -> None:
    d = Driver()
    d.submit("low")
    d.submit("high", priority=5)
    d.submit("low2")
    assert [r.id for r in d.dispatch(n=3)] == ["high", "low", "low2"]


def test_delayed_task_is_not_leased_before_its_eta() -> None:
    d = Driver()
    d.submit("t1", delay=10)
    assert d.state("t1") == "delayed"
    d.now += 9.9
    assert d.dispatch() == []
    d.now += 0.2
    assert [r.id for r in d.dispatch()] == ["t1"]


def test_failure_retries_with_backoff_then_dead_letters() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"retries": 2}}))
    d.submit("t1")
    for failure in (1, 2):
        [run] = d.dispatch()
        [effect] = d.finish(run, ok=False)
        assert isinstance(effect, Retrying)
        assert effect.delay == backoff_delay("t1", failure)
        assert d.state("t1") == "delayed"
        d.now += effect.delay
    [run] = d.dispatch()
    assert run.attempt == 3
    [effect] = d.finish(run, ok=False)
    assert isinstance(effect, Finished) and effect.summary["state"] == "failed"
    assert "t1" in d.machine.dlq and d.machine.tasks["t1"].error.type == "ValueError"


def test_backoff_grows_exponentially_is_capped_and_jittered_deterministically() -> None:
    assert 1.0 <= backoff_delay("x", 1) <= 1.5
    assert 2.0 <= backoff_delay("x", 2) <= 3.0
    assert backoff_delay("x", 30) == defaults.BACKOFF_CAP
    assert backoff_delay("x", 3) == backoff_delay("x", 3)
    assert len({backoff_delay(f"t{i}", 1) for i in range(20)}) > 1


def test_non_retryable_failure_goes_straight_to_the_dlq() -> None:
    d = Driver()
    d.submit("t1")
    [run] = d.dispatch()
    d.finish(run, ok=False, error_type="NonRetryable", retryable=False)
    assert d.state("t1") == "failed" and d.machine.tasks["t1"].attempt == 1


def test_retry_request_uses_its_own_delay() -> None:
    d = Driver()
    d.submit("t1")
    [run] = d.dispatch()
    [effect] = d.finish(run, ok=False, error_type="Retry", retry_delay=30.0)
    assert isinstance(effect, Retrying) and effect.delay == 30.0
    assert d.machine.tasks["t1"].eta == d.now + 30.0


def test_lost_worker_requeues_without_using_a_retry_even_with_zero_retries() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"retries": 0}}))
    d.submit("t1")
    for loss in range(1, defaults.MAX_WORKER_LOSSES + 1):
        assert len(d.dispatch(worker=f"w{loss}")) == 1
        d.apply(C.Lost(f"w{loss}"))
        assert d.state("t1") == "queued"
        assert d.machine.tasks["t1"].failures == 0
    assert len(d.dispatch(worker="last")) == 1
    d.apply(C.Lost("last"))
    assert d.state("t1") == "failed"
    assert d.machine.tasks["t1"].error.type == "worker_lost"


def test_drained_tasks_go_back_without_counting_as_lost() -> None:
    d = Driver()
    d.submit("t1")
    [run] = d.dispatch()
    d.apply(C.Lost("w1", [("t1", run.attempt)], counts=False))
    assert d.state("t1") == "queued" and d.machine.tasks["t1"].losses == 0


def test_a_stale_report_after_the_lease_moved_is_ignored() -> None:
    d = Driver()
    d.submit("t1")
    [first] = d.dispatch(worker="w1")
    d.apply(C.Lost("w1"))
    [second] = d.dispatch(worker="w2")
    assert d.finish(first, worker="w1", value="stale") == []
    assert d.state("t1") == "running"
    d.finish(second, worker="w2", value="fresh")
    assert d.machine.tasks["t1"].result == "fresh"
    assert d.finish(second, worker="w2", value="twice") == []  # a resend after failover
    assert d.machine.tasks["t1"].result == "fresh"


def test_result_expires_after_its_ttl_and_ttl_zero_keeps_none() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"result_ttl": 60}, "b": {"result_ttl": 0}}))
    d.submit("t1")
    d.submit("t2", actor="b")
    d.finish(d.dispatch()[0])
    d.finish(d.dispatch(actors=["b"])[0])
    assert "t2" not in d.machine.tasks
    d.now += 59
    d.apply(C.Tick())
    assert "t1" in d.machine.tasks
    d.now += 2
    d.apply(C.Tick())
    assert "t1" not in d.machine.tasks


def test_cancel_queued_delayed_and_running() -> None:
    d = Driver()
    d.submit("q")
    d.submit("later", delay=5)
    d.submit("r", actor="b")
    [run] = d.dispatch(actors=["b"])
    d.apply(C.Cancel("q"), C.Cancel("later"))
    assert d.state("q") == d.state("later") == "cancelled"
    assert d.dispatch(n=5) == []
    d.now += 10
    assert d.dispatch(n=5) == []
    [effects] = d.apply(C.Cancel("r"))
    assert any(isinstance(e, CancelRunning) and e.worker == "w1" for e in effects)
    d.finish(run, ok=False, error_type="cancelled")
    assert d.state("r") == "cancelled"


def test_dlq_replay_and_purge() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"retries": 0}}))
    for tid in ("t1", "t2"):
        d.submit(tid)
        d.finish(d.dispatch()[0], ok=False)
    assert list(d.machine.dlq) == ["t1", "t2"]
    d.apply(C.DlqReplay(["t1"]))
    assert d.state("t1") == "queued" and list(d.machine.dlq) == ["t2"]
    d.apply(C.DlqPurge(None))
    assert "t2" not in d.machine.tasks and not d.machine.dlq


def test_a_resent_operators_change_acts_once() -> None:
    # A client resends after a lost reply or a failover: a second `dlq_purge --all` used to purge
    # letters that died since the first, and a second `queue purge`, tasks submitted since.
    d = Driver()
    d.apply(C.RegisterActors({"a": {"retries": 0}}))
    d.submit("t1")
    d.finish(d.dispatch()[0], ok=False)
    [[first]] = d.apply(C.DlqPurge(None, "op-purge"))
    d.submit("t2")
    d.finish(d.dispatch()[0], ok=False)
    [[again]] = d.apply(C.DlqPurge(None, "op-purge"))
    assert again == first and first.ids == ["t1"] and list(d.machine.dlq) == ["t2"]
    d.submit("q1", delay=60)
    [[*_, purged]] = d.apply(C.PurgeQueue("a", "op-queue"))  # its Finished effects, then its Count
    d.submit("q2", delay=60)
    [[repeat]] = d.apply(C.PurgeQueue("a", "op-queue"))
    assert purged == repeat and purged.n == 1 and d.state("q2") == "delayed"
    [[replayed]] = d.apply(C.DlqReplay(None, "op-replay"))
    d.finish(d.dispatch()[0], ok=False)  # t2 runs and dies again
    [[replayed_again]] = d.apply(C.DlqReplay(None, "op-replay"))
    assert replayed == replayed_again and list(d.machine.dlq) == ["t2"]


def test_dlq_is_bounded_by_age() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"retries": 0}}))
    d.submit("t1")
    d.finish(d.dispatch()[0], ok=False)
    d.now += defaults.DLQ_MAX_AGE + 1
    d.apply(C.Tick())
    assert not d.machine.dlq and "t1" not in d.machine.tasks


def test_a_command_that_cannot_be_read_fails_alone_with_an_internal_effect() -> None:
    d = Driver()
    submit = C.Submit([Envelope("t1", "a", [], {})]).to_wire()
    payload = msgpack.packb([d.term, d.now, [["no_such_command"], ["cancel"], submit]], use_bin_type=True)
    unknown, malformed, accepted = d.machine.apply_batch(payload).effects()
    [unknown_failed], [malformed_failed] = unknown, malformed
    assert isinstance(unknown_failed, Internal) and "no_such_command" in unknown_failed.message
    assert isinstance(malformed_failed, Internal) and malformed_failed.command == "cancel"
    assert "'cancel'" in malformed_failed.message and "do not fit" in malformed_failed.message
    assert accepted == [Accepted(["t1"])] and d.state("t1") == "queued"


def test_time_never_goes_backwards_across_leaders() -> None:
    d = Driver()
    d.submit("t1", delay=10)
    d.now -= 100  # a new leader whose clock is behind
    d.apply(C.Tick())
    assert d.machine.now == 1000.0


@pytest.mark.parametrize("seed", range(3))
def test_replicas_applying_the_same_batches_agree(seed: int) -> None:
    d = Driver()
    for i in range(20):
        d.submit(f"t{i}", delay=(i * seed) % 3)
    d.now += 5
    runs = d.dispatch(n=7)
    d.apply(C.Lost("w1", [(r.id, r.attempt) for r in runs[:3]]))
    replica = Driver()
    for payload in d.log:
        replica.machine.apply_batch(payload)
    assert replica.machine.digest == d.machine.digest
    assert {k: v.state for k, v in replica.machine.tasks.items()} == {k: v.state for k, v in d.machine.tasks.items()}


def test_eta_is_absolute_and_respected() -> None:
    d = Driver()
    d.apply(C.Submit([Envelope("t1", "a", [], {}, eta=d.now + 30)]))
    assert d.state("t1") == "delayed"
    d.now += 29
    assert d.dispatch() == []
    d.now += 1
    assert [r.id for r in d.dispatch()] == ["t1"]


def test_a_task_not_started_before_it_expires_never_runs_and_waiters_hear_it() -> None:
    d = Driver()
    d.apply(C.Submit([Envelope("t1", "a", [], {}, expires_in=10)]))
    d.apply(C.Submit([Envelope("t2", "a", [], {}, expires_at=d.now + 100)]))
    d.now += 11
    d.apply(C.Tick())
    assert d.state("t1") == "expired" and d.machine.queued_count["a"] == 1
    assert any(isinstance(e, Finished) and e.id == "t1" and e.summary["state"] == "expired" for e in d.time_effects)
    [run] = d.dispatch(n=5)
    assert run.id == "t2"
    d.now += 200
    d.apply(C.Tick())
    assert d.state("t2") == "running"  # started in time: expiry no longer applies


def test_idempotency_key_returns_the_first_task_while_it_is_kept() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"result_ttl": 60}}))
    [first] = d.apply(C.Submit([Envelope("t1", "a", [], {}, idempotency_key="order-7")]))
    [second] = d.apply(C.Submit([Envelope("t2", "a", [], {}, idempotency_key="order-7")]))
    [other_actor] = d.apply(C.Submit([Envelope("t3", "b", [], {}, idempotency_key="order-7")]))
    assert first == second == [Accepted(["t1"])] and other_actor == [Accepted(["t3"])]
    assert "t2" not in d.machine.tasks
    d.finish(d.dispatch()[0])
    d.now += 61
    d.apply(C.Tick())
    [third] = d.apply(C.Submit([Envelope("t4", "a", [], {}, idempotency_key="order-7")]))
    assert third == [Accepted(["t4"])]


def test_a_task_already_expired_at_submit_never_runs_and_counts_stay_exact() -> None:
    """Regression: a fresh task looked QUEUED to _expire, which then decremented a count it never
    incremented (a KeyError that wedged every replica, or a queue that looked empty)."""
    d = Driver()
    d.apply(C.Submit([Envelope("late", "never-seen", [], {}, expires_at=d.now - 1)]))
    d.submit("real", actor="a")
    d.apply(C.Submit([Envelope("late2", "a", [], {}, expires_at=d.now - 1)]))
    d.now += 1
    d.apply(C.Tick())
    assert d.state("late") == d.state("late2") == "expired"
    assert d.machine.queued_count["a"] == 1 and [r.id for r in d.dispatch()] == ["real"]


def test_a_past_stall_is_not_a_reason_to_wake() -> None:
    """Regression: a lifted rate-limit stall kept next_due() in the past: empty ticks back to back."""
    d = Driver()
    d.apply(C.RegisterActors({"a": {"rate_limits": [[1, 1.0, None]]}}))
    d.submit("t1")
    d.submit("t2")
    assert len(d.dispatch(n=2)) == 1  # t2 stalls for a second
    d.now += 2
    d.apply(C.Tick())  # no free slot: nothing dispatches, the stall's time has passed
    due = views.next_due(d.machine)
    assert due is None or due > d.now


def test_a_deposed_leaders_dispatch_grants_nothing() -> None:
    # A leader paused under load resumed and proposed a dispatch from its stale view; pysyncobj
    # forwarded it to the new leader, which committed it: leases no one would deliver or expire.
    d = Driver()
    d.submit("t1")
    d.term = 2
    d.apply(C.Tick())  # the new leader's first batch
    d.term = 1  # the deposed leader's leftover
    [effects] = d.apply(C.Dispatch([C.Offer("w1", ["a"], 1)]))
    assert effects == [] and d.state("t1") == "queued" and not d.machine.leases
    d.term = 2
    assert [run.id for run in d.dispatch()] == ["t1"]  # the current leader's dispatch does grant it


def test_a_deposed_leaders_lease_expiries_and_clock_change_nothing() -> None:
    # A leader paused past the lease timeout resumed, found every worker "silent" and expired them
    # all: forwarded to the new leader, that voided leases the new leader had granted (tasks ran
    # twice), and its clock could move replicated time.
    d = Driver()
    d.submit("t1")
    d.term = 2
    assert len(d.dispatch()) == 1
    before = d.machine.now
    d.term, d.now = 1, before + 3600.0  # the deposed leader's leftover, its clock an hour ahead
    d.apply(C.Lost("w1"))
    assert d.state("t1") == "running" and d.machine.tasks["t1"].losses == 0
    assert d.machine.now == before


def test_the_options_of_the_worker_started_last_are_in_force() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"rate_limits": [[5, 1.0, None]]}}, started=200.0))
    d.apply(C.RegisterActors({"a": {}}, started=100.0))  # an old worker reconnects
    assert d.machine.actors["a"] == {"rate_limits": [[5, 1.0, None]]}
    d.apply(C.RegisterActors({"a": {"retries": 1}}, started=300.0))  # a newer one
    assert d.machine.actors["a"] == {"retries": 1}


def test_an_alert_changes_state_once_whoever_proposes_it() -> None:
    # A new leader re-proposes what still fires: the machine counts 0 and nobody is told again.
    d = Driver()
    fire = C.Alert("backlog", "a", True, 5.0, "backlog: waited 5 s")
    assert d.apply(fire, fire) == [[Count(1)], [Count(0)]]
    assert d.machine.alerts["backlog\x1fa"]["since"] == d.now
    resolve = C.Alert("backlog", "a", False, 5.0, "resolved")
    assert d.apply(resolve, resolve) == [[Count(1)], [Count(0)]]
    assert d.machine.alerts == {}
