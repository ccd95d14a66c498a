"""The state digest: equal for equal states (a snapshot's copy included), different otherwise; and a
replica whose digest differs from the leader's says so."""

from __future__ import annotations

import os
import pickle

import pytest

from qrt.checkpoints import Checkpoints
from qrt.local import wait_until
from qrt.protocol import Envelope
from qrt.state import StateMachine
from qrt.state import commands as C
from qrt.state.digest import state_digest


def machine_with_work() -> StateMachine:
    m = StateMachine()
    m.apply_batch(C.pack_batch(1, 1000.0, [C.RegisterActors({"a": {"rate_limits": [[5, 1.0, None]]}})]))
    m.apply_batch(C.pack_batch(1, 1000.0, [C.Submit([Envelope(f"t{i}", "a", [i], {}, keys={"k": i % 3})
                                                     for i in range(20)])]))
    m.apply_batch(C.pack_batch(1, 1001.0, [C.Dispatch([C.Offer("w1", ["a"], 3)])]))
    m.apply_batch(C.pack_batch(1, 1002.0, [C.CronAdd("c", "a", "* * * * *", "Europe/Paris", [], {})]))
    return m


def test_equal_states_have_equal_digests_and_a_snapshot_keeps_it() -> None:
    a, b = machine_with_work(), machine_with_work()
    assert state_digest(a) == state_digest(b)
    assert state_digest(pickle.loads(pickle.dumps(a))) == state_digest(a)


def test_any_difference_in_state_changes_the_digest() -> None:
    a, b = machine_with_work(), machine_with_work()
    b.tasks["t7"].priority = 1
    assert state_digest(a) != state_digest(b)
    c = machine_with_work()
    c.flow.windows.clear()
    assert state_digest(a) != state_digest(c)


def test_what_is_not_state_does_not_count() -> None:
    a, b = machine_with_work(), machine_with_work()
    b.digest = "another log"
    b.checkpoint = (1, 2, "x")
    assert state_digest(a) == state_digest(b)


def test_a_replica_whose_digest_differs_from_the_leaders_says_so() -> None:
    mine = Checkpoints()
    mine.begin(machine_with_work(), 5, 0, "")  # digested in a forked child
    wait_until(lambda: mine.latest()[0] == 5, 10, 0.01, "the child's digest")
    mark, digest = mine.latest()
    assert (mark, digest) == (5, state_digest(machine_with_work()))
    mine.begin(machine_with_work(), 9, 5, digest)  # the leader found the same at 5
    assert mine.diverged is None
    mine.begin(machine_with_work(), 12, 5, "0" * 32)  # ... or not
    assert mine.diverged is not None and "batch 5" in mine.diverged


def test_a_checkpoint_that_cannot_fork_leaves_its_batch_applied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # An exception out of the replicated `apply` makes pysyncobj apply the same entry again on
    # its next tick (seen: one batch applied four times while fork failed): the replica diverges
    # and the proposer never hears back.
    from qrt.replication import ReplicatedLog

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    log = ReplicatedLog()
    log.live = lambda: True
    applied = log.apply(C.pack_batch(1, 1000.0, [C.Checkpoint(0, "")]), _doApply=True)
    assert log.machine.applied == 1 and applied is not None and log.checkpoints.latest() == (0, "")


def test_a_snapshot_of_an_earlier_version_gets_the_fields_it_lacks() -> None:
    m = machine_with_work()
    state = dict(m.__dict__)
    del state["ops"], state["registered_by"]
    restored = StateMachine.__new__(StateMachine)
    restored.__setstate__(state)
    assert restored.ops == {} and restored.registered_by == {} and restored.tasks.keys() == m.tasks.keys()
