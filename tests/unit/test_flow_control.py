"""Rate limits, concurrency limits and fairness, decided in the pure state machine."""

from __future__ import annotations

import pytest

import qrt
from qrt.protocol import Envelope, RunTask
from qrt.state import commands as C
from qrt.state import views
from qrt.state.limits import parse_rate

from .statehelp import Driver


def submit_keyed(d: Driver, task_id: str, tenant: str, actor: str = "a", priority: int = 0) -> None:
    d.apply(C.Submit([Envelope(task_id, actor, [], {}, keys={"tenant": tenant}, priority=priority)]))


@pytest.mark.parametrize(("text", "expected"), [
    ("5/s", (5, 1.0)), ("100/m", (100, 60.0)), ("10/2s", (10, 2.0)), ("1000/h", (1000, 3600.0)),
    ("3/day", (3, 86400.0)), (" 7 / min ", (7, 60.0)),
])
def test_rates_parse(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["5 per s", "0/s", "5/", "/s", "5/fortnight", "-1/s"])
def test_malformed_rates_are_refused_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_actor_definition_checks_limits() -> None:
    with pytest.raises(ValueError, match="'5 per s'"):
        qrt.actor(rate_limit="5 per s")(lambda: None)
    with pytest.raises(ValueError, match="positive int"):
        qrt.actor(concurrency=qrt.Concurrency(-1))(lambda: None)
    with pytest.raises(ValueError, match="'tenant', which is not an argument"):
        @qrt.actor(concurrency=qrt.Concurrency(2, key="tenant"))
        def no_tenant(x: int) -> None: ...

    @qrt.actor(rate_limit=[qrt.RateLimit("100/m", key="tenant"), "1000/m"], concurrency=3)
    def fine(tenant: str, x: int = 0) -> None: ...
    assert fine.options()["rate_limits"] == [[100, 60.0, "tenant"], [1000, 60.0, None]]
    assert fine.options()["concurrency"] == [[3, None]]
    assert fine.check_arguments(("acme",), {}) == {"tenant": "acme"}


def test_rate_limit_allows_n_starts_per_window_across_workers() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"rate_limits": [[5, 1.0, None]]}}))
    for i in range(20):
        d.submit(f"t{i}")
    assert len(d.dispatch(worker="w1", n=3)) == 3
    assert len(d.dispatch(worker="w2", n=10)) == 2  # the same budget, another worker
    assert views.has_ready(d.machine, ["a"], d.now) is False  # no point dispatching before the window moves
    # The window reopens after its period and the guard (2 % of the period): 1.02 s.
    assert views.next_due(d.machine) == pytest.approx(d.now + 1.02, abs=1e-3)
    d.now += 1.019
    assert d.dispatch(n=10) == []
    d.now += 0.002
    assert len(d.dispatch(n=10)) == 5


def test_concurrency_limit_counts_leases_and_frees_on_finish_and_loss() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"concurrency": [[2, None]]}}))
    for i in range(5):
        d.submit(f"t{i}")
    runs = d.dispatch(worker="w1", n=5)
    assert len(runs) == 2 and d.dispatch(worker="w2", n=5) == []
    d.finish(runs[0], worker="w1")
    assert len(d.dispatch(worker="w2", n=5)) == 1
    d.apply(C.Lost("w1"))  # the other unit comes free when its worker is lost
    assert len(d.dispatch(worker="w3", n=5)) == 1


def test_per_key_concurrency_and_round_robin_between_tenants() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"concurrency": [[2, "tenant"]]}}))
    for i in range(100):
        submit_keyed(d, f"big{i}", "big")
    for i in range(3):
        submit_keyed(d, f"small{i}", "small")
    runs = d.dispatch(n=10)
    assert sorted(r.id for r in runs) == ["big0", "big1", "small0", "small1"]


def test_a_tenant_with_a_large_backlog_delays_a_small_one_by_at_most_one_turn() -> None:
    d = Driver()
    for i in range(1000):
        submit_keyed(d, f"big{i}", "big")
    submit_keyed(d, "small0", "small")
    order = []
    for _ in range(4):
        [run] = d.dispatch(n=1)
        order.append(run.id)
        d.finish(run)
    assert order.index("small0") <= 1


def test_priority_goes_first_then_tenants_alternate() -> None:
    d = Driver()
    submit_keyed(d, "a1", "a")
    submit_keyed(d, "a2", "a")
    submit_keyed(d, "b1", "b")
    submit_keyed(d, "urgent", "a", priority=5)
    assert [r.id for r in d.dispatch(n=4)] == ["urgent", "b1", "a1", "a2"]


def test_operator_override_wins_until_reset() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"concurrency": [[1, None]]}}))
    d.apply(C.SetLimits("a", rate_limits=None, concurrency=[[3, None]]))
    for i in range(5):
        d.submit(f"t{i}")
    assert len(d.dispatch(n=5)) == 3
    d.apply(C.ResetLimits("a"))
    d.finish(RunTask("t0", "a", [], {}, 1, 60.0, 1))
    assert d.dispatch(n=5) == []  # back to the registered 1, and 2 still run


def test_actor_wide_override_keeps_keyed_limits_and_a_key_value_can_have_its_own_rate() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"rate_limits": [[1, 1.0, "tenant"], [100, 1.0, None]]}}))
    d.apply(C.SetLimits("a", rate=(3, 1.0), key_rate=("vip", 5, 1.0)))
    for i in range(10):
        submit_keyed(d, f"vip{i}", "vip")
        submit_keyed(d, f"std{i}", "std")
    runs = d.dispatch(n=20)
    assert len(runs) == 3  # the actor-wide override (3/s) binds first
    d.now += 1.1
    d.apply(C.SetLimits("a", rate=(100, 1.0)))
    assert sorted(r.id[:3] for r in d.dispatch(n=20)).count("std") == 1  # std keeps its 1/s


def test_paused_queue_keeps_its_tasks_and_purge_cancels_them() -> None:
    d = Driver()
    d.submit("t1")
    d.submit("later", delay=60)
    d.apply(C.Pause("a", True))
    assert d.dispatch(n=5) == [] and not views.has_ready(d.machine, ["a"], d.now)
    d.apply(C.Pause("a", False))
    d.submit("t2")
    [purged] = d.apply(C.PurgeQueue("a"))
    assert d.state("t1") == d.state("t2") == d.state("later") == "cancelled"
    assert purged[-1].n == 3 and d.machine.queued_count.get("a", 0) == 0


def test_keyed_concurrency_counts_tasks_without_the_key_in_one_bucket_and_types_stay_apart() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"concurrency": [[1, "tenant"]]}}))
    d.submit("no-key-1")
    d.submit("no-key-2")
    submit_keyed(d, "int", 1)  # type: ignore[arg-type]
    d.apply(C.Submit([Envelope("bool", "a", [], {}, keys={"tenant": True})]))
    assert sorted(r.id for r in d.dispatch(n=10)) == ["bool", "int", "no-key-1"]


def test_a_weighted_lane_gets_that_many_tasks_per_turn() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"weights": [["gold", 3]]}}))
    for i in range(6):
        submit_keyed(d, f"gold{i}", "gold")
        submit_keyed(d, f"std{i}", "std")
    order = [r.id[:-1] for r in d.dispatch(n=8)]
    assert order == ["gold", "gold", "gold", "std", "gold", "gold", "gold", "std"]
    d.apply(C.SetLimits("a", weight=("std", 2)))
    d.apply(C.Submit([Envelope("std-late", "a", [], {}, keys={"tenant": "std"})]))
    assert [r.id[:3] for r in d.dispatch(n=3)] == ["std", "std", "std"]  # gold has no tasks left


def test_the_limits_view_shows_each_limits_use_now() -> None:
    d = Driver()
    d.apply(C.RegisterActors({"a": {"rate_limits": [[5, 1.0, None], [2, 60.0, "tenant"]],
                                    "concurrency": [[4, None], [1, "tenant"]]}}))
    d.apply(C.Submit([Envelope(f"t{i}", "a", [], {}, keys={"tenant": t}) for i, t in enumerate("xxyzz")]))
    runs = d.dispatch("w1", ["a"], 5)
    assert sorted(r.id for r in runs) == ["t0", "t2", "t3"]  # one per tenant: the keyed cap
    use = views.limits_view(d.machine)["a"]["use"]
    assert use[0] == {"kind": "rate", "limit": 5, "period": 1.0, "used": 3}
    assert use[1]["key"] == "tenant" and sorted(map(tuple, use[1]["keys"])) == [("x", 1), ("y", 1), ("z", 1)]
    assert use[2] == {"kind": "concurrency", "limit": 4, "used": 3}
    assert sorted(map(tuple, use[3]["keys"])) == [("x", 1), ("y", 1), ("z", 1)] and use[3]["key_values"] == 3
    d.now += 1.5  # the 1-second window has emptied; the minute's has not
    d.finish(runs[0])
    use = views.limits_view(d.machine)["a"]["use"]
    assert use[0]["used"] == 0 and len(use[1]["keys"]) == 3 and use[2]["used"] == 2
