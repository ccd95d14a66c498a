"""The worker's session against fake coordinators (real ZeroMQ ROUTERs answered by hand): hello,
welcome, run, done, ack, credit, resends, following the leader, fencing, drain and bye."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import qrt
from qrt import defaults, protocol
from qrt.actor import Actor
from qrt.protocol import ErrorCode
from qrt.worker.session import BYE_WAIT, Standing, Worker

from .fake_coordinator import FakeCoordinator, fake_nodes, wait_for

GATES: dict[str, asyncio.Event] = {}  # a gated task runs until the test opens its gate


@qrt.actor(name="unit.session.add")
def add(a: int, b: int) -> int:
    return a + b


@qrt.actor(name="unit.session.gated")
async def gated(gate: str) -> str:
    await GATES.setdefault(gate, asyncio.Event()).wait()
    return gate


ACTORS: dict[str, Actor[Any, Any]] = {a.name: a for a in (add, gated)}


@contextlib.asynccontextmanager
async def serving(urls: list[str],
                  concurrency: int = 2) -> AsyncIterator[tuple[Worker, asyncio.Event, asyncio.Task[None]]]:
    """A worker session on this loop; cancelled at the end unless the test saw it stop."""
    GATES.clear()
    worker = Worker(ACTORS, urls, concurrency, drain_timeout=2.0)
    stop = asyncio.Event()
    session = asyncio.create_task(worker.run(stop))
    try:
        yield worker, stop, session
    finally:
        session.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session


async def welcome(node: FakeCoordinator) -> tuple[bytes, dict[str, Any]]:
    identity, hello = await node.expect("hello")
    node.send(identity, protocol.Welcome(hello["worker_id"], defaults.HEARTBEAT_INTERVAL, defaults.LEASE_TIMEOUT))
    return identity, hello


def run(*tasks: tuple[str, str, list[Any], int]) -> protocol.Run:
    return protocol.Run([protocol.RunTask(task_id, actor, args, {}, attempt, 10.0, 1)
                         for task_id, actor, args, attempt in tasks])


async def test_hello_welcome_run_done_ack() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, hello = await welcome(node)
        assert identity == worker.id.encode() == hello["worker_id"].encode()
        assert (hello["slots"], hello["concurrency"], hello["running"]) == (2, 2, [])
        assert sorted(a["name"] for a in hello["actors"]) == ["unit.session.add", "unit.session.gated"]
        await node.expect("heartbeat", timeout=defaults.HEARTBEAT_INTERVAL + 1)

        node.send(identity, run(("t1", "unit.session.add", [1, 2], 1)))
        _, done = await node.expect("done", skip=("heartbeat",))
        assert done["credit"] == 1
        assert done["outcomes"] == [{"id": "t1", "attempt": 1, "ok": True, "value": 3}]
        node.send(identity, protocol.Ack(["t1"]))
        await wait_for(lambda: not worker.unacked, what="the ack to clear the outcome")
        await node.expect_nothing(defaults.RESEND_AFTER + 0.3, skip=("heartbeat", "hello"))  # acknowledged: no resend


async def test_the_acks_a_run_carries_clear_their_outcomes() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, hello = await welcome(node)
        assert hello["acks_in_run"] is True  # it says it reads them there
        node.send(identity, run(("t1", "unit.session.add", [1, 2], 1)))
        await node.expect("done", skip=("heartbeat",))
        node.send(identity, protocol.Run([protocol.RunTask("t2", "unit.session.gated", ["g2"], {}, 1, 10.0, 1)],
                                         acks=["t1"]))
        await wait_for(lambda: "t2" in worker.running, what="t2 to start")
        assert not worker.unacked  # t1's outcome acknowledged by the run
        await node.expect_nothing(defaults.RESEND_AFTER + 0.3, skip=("heartbeat", "hello"))  # so not sent again


async def test_a_run_for_a_task_already_running_takes_the_newest_attempt_and_gives_the_slot_back() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await welcome(node)
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
        await wait_for(lambda: "t1" in worker.running, what="t1 to start")
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 2)))
        _, credit = await node.expect("credit", skip=("heartbeat",))
        assert credit["n"] == 1
        assert len(worker.running) == 1  # one handler, not two

        GATES["g1"].set()
        _, done = await node.expect("done", skip=("heartbeat",))
        assert [(o["id"], o["attempt"], o["value"]) for o in done["outcomes"]] == [("t1", 2, "g1")]
        assert done["credit"] == 1
        node.send(identity, protocol.Ack(["t1"]))
        await wait_for(lambda: not worker.unacked, what="the ack to clear the outcome")


async def test_unacknowledged_outcomes_are_resent_without_credit_once_a_second() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await welcome(node)
        node.send(identity, run(("t1", "unit.session.add", [2, 2], 1)))
        _, first = await node.expect("done", skip=("heartbeat",))
        sent = time.monotonic()
        assert first["credit"] == 1
        _, again = await node.expect("done", timeout=defaults.RESEND_AFTER + 1, skip=("heartbeat",))
        assert time.monotonic() - sent >= defaults.RESEND_AFTER - 0.1
        assert (again["outcomes"], again["credit"]) == (first["outcomes"], 0)

        # A new leader (it does not know us): hello lists the unacknowledged task, so its lease stays;
        # after the welcome the outcome goes at once, and that resend counts as sent (not again at once).
        node.send(identity, protocol.Error(ErrorCode.NOT_HELLO, "say hello first"))
        identity, hello = await node.expect("hello", skip=("heartbeat",))
        assert hello["running"] == [["t1", 1]]
        # Not welcomed: nothing is resent (a hello again may come: this fake leader sends no `hb`).
        await node.expect_nothing(defaults.RESEND_AFTER + 0.2, skip=("hello",))
        node.send(identity, protocol.Welcome(worker.id, 1.0, 5.0))
        _, after_welcome = await node.expect("done", timeout=0.5, skip=("heartbeat",))
        assert (after_welcome["outcomes"], after_welcome["credit"]) == (first["outcomes"], 0)
        await node.expect_nothing(defaults.RESEND_AFTER - 0.2, skip=("heartbeat",))
        node.send(identity, protocol.Ack(["t1"]))
        await wait_for(lambda: not worker.unacked, what="the ack to clear the outcome")


async def test_slots_freed_while_a_hello_travels_are_offered_on_welcome() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await welcome(node)
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
        await wait_for(lambda: "t1" in worker.running, what="t1 to start")
        node.send(identity, protocol.Error(ErrorCode.NOT_HELLO, "say hello first"))
        identity, hello = await node.expect("hello", skip=("heartbeat",))
        assert (hello["slots"], hello["running"]) == (1, [["t1", 1]])

        GATES["g1"].set()  # t1 ends before the welcome: its outcome waits, and its slot is not offered yet
        await wait_for(lambda: "t1" in worker.unacked, what="t1 to end")
        await node.expect_nothing(0.3)
        node.send(identity, protocol.Welcome(worker.id, 1.0, 5.0))
        _, credit = await node.expect("credit")
        assert credit["n"] == 1
        _, done = await node.expect("done", skip=("heartbeat",))
        assert ([o["id"] for o in done["outcomes"]], done["credit"]) == (["t1"], 0)


async def test_no_leader_means_hello_again_later_and_no_heartbeat_before_welcome() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await node.expect("hello")
        node.send(identity, protocol.Error(ErrorCode.NO_LEADER, "electing"))
        answered = time.monotonic()
        await wait_for(lambda: worker.standing is Standing.NO_LEADER, what="the session to wait for a leader")
        await node.expect("hello", timeout=defaults.HELLO_RETRY + 1)  # nothing else comes first
        assert time.monotonic() - answered >= defaults.HELLO_RETRY - 0.1
        node.send(identity, protocol.Welcome(worker.id, 1.0, 5.0))
        await node.expect("heartbeat", timeout=defaults.HEARTBEAT_INTERVAL + 1)
        assert worker.standing is Standing.WELCOMED


async def test_a_redirect_moves_to_the_leader_and_silence_moves_on_from_there() -> None:
    async with fake_nodes(3) as (a, b, c), serving([a.url, b.url, c.url]):
        identity, _ = await a.expect("hello")
        a.send(identity, protocol.Redirect(c.url))
        await c.expect("hello")  # and c never answers: the next node after c is a, not b
        connected = time.monotonic()
        await a.expect("hello", timeout=defaults.SILENCE_BEFORE_FAILOVER + 1)
        assert time.monotonic() - connected >= defaults.SILENCE_BEFORE_FAILOVER - 0.1
        await b.expect_nothing(0.05)


async def test_a_worker_that_hears_no_leader_cancels_its_tasks_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "WORKER_FENCE_AFTER", 0.5)  # from 4 s, so the test is short
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await welcome(node)
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
        await wait_for(lambda: "t1" in worker.running, what="t1 to start")
        # The leader falls silent (no hb): fenced, the task is cancelled, reported to nobody, and
        # a hello tells whoever leads that the worker no longer holds it.
        _, hello = await node.expect("hello", timeout=2.0, skip=("heartbeat",))
        assert hello["running"] == [] and hello["slots"] == 2
        assert not worker.running and not worker.unacked


async def test_the_fence_counts_from_the_last_answered_heartbeat_not_the_last_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The leader's lease timer restarts only on what the worker sends: a `run` that reached the
    # worker said nothing of it, yet restarted the fence, which could then come after the leases
    # had expired and run elsewhere (two runs at once, over a concurrency limit).
    monkeypatch.setattr(defaults, "WORKER_FENCE_AFTER", 1.5)
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await welcome(node)
        welcomed = time.monotonic()
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
        await wait_for(lambda: "t1" in worker.running, what="t1 to start")
        while True:  # no heartbeat is answered; the same `run` keeps arriving (the worker ignores it)
            node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
            try:
                _, hello = await node.expect("hello", timeout=0.2, skip=("heartbeat",))
                break
            except TimeoutError:
                assert time.monotonic() - welcomed < 4.0, "no fence while `run` frames kept arriving"
        assert hello["running"] == [] and time.monotonic() - welcomed < 2.5


async def test_a_bad_frame_is_dropped_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (_, _, _):
        identity, _ = await welcome(node)
        bad = {"id": "t1", "actor": 5, "args": [], "kwargs": {}, "attempt": 1, "timeout": 10.0}
        node.send(identity, {"t": "run", "tasks": [bad]})
        node.send(identity, run(("t2", "unit.session.add", [1, 1], 1), ("t3", "nobody.serves.this", [], 1)))
        outcomes: dict[str, dict[str, Any]] = {}
        credit = 0
        while len(outcomes) < 2:
            _, done = await node.expect("done", skip=("heartbeat",))
            outcomes.update((o["id"], o) for o in done["outcomes"])
            credit += done["credit"]
        assert sorted(outcomes) == ["t2", "t3"] and credit == 2  # t1 never ran
        assert outcomes["t2"]["value"] == 2
        assert (outcomes["t3"]["error_type"], outcomes["t3"]["retryable"]) == ("UnknownActor", False)
        assert "field 'tasks[0].actor' must be str, not int" in caplog.text


async def test_drain_then_bye_and_no_heartbeat_or_task_after_bye() -> None:
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, stop, session):
        identity, _ = await welcome(node)
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
        await wait_for(lambda: "t1" in worker.running, what="t1 to start")
        stop.set()
        await node.expect("drain", skip=("heartbeat",))
        GATES["g1"].set()  # finishes within the drain timeout: reported without credit
        _, done = await node.expect("done", skip=("heartbeat",))
        assert ([o["id"] for o in done["outcomes"]], done["credit"]) == (["t1"], 0)
        node.send(identity, protocol.Ack(["t1"]))
        _, bye = await node.expect("bye", skip=("heartbeat",))
        assert bye["running"] == []

        node.send(identity, run(("t2", "unit.session.add", [1, 1], 1)))  # crossed the bye: the leader requeues it
        await node.expect_nothing(defaults.HEARTBEAT_INTERVAL + 0.5)  # no heartbeat, no done after bye
        assert "t2" not in worker.running
        left = time.monotonic()
        node.send(identity, protocol.Ack([], bye=True))
        async with asyncio.timeout(BYE_WAIT):
            await session
        assert time.monotonic() - left < 1.0  # it went as soon as the bye was acknowledged
        assert worker.standing is Standing.LEFT


async def test_a_bye_that_meets_a_new_leader_is_said_again_with_the_unacknowledged_outcomes() -> None:
    # The leader that got the bye lost leadership before acknowledging it or the last outcome: the
    # worker follows the redirect, says hello listing only that outcome (so the new leader gives the
    # rest back without counting a loss), and on welcome resends the outcome and its bye.
    async with fake_nodes(2) as [old, new], serving([old.url, new.url]) as (worker, stop, session):
        identity, _ = await welcome(old)
        old.send(identity, run(("t1", "unit.session.add", [2, 3], 1)))
        await old.expect("done", skip=("heartbeat",))  # never acknowledged
        stop.set()
        await old.expect("drain", skip=("heartbeat", "done"))
        await old.expect("bye", skip=("heartbeat", "done"))
        old.send(identity, protocol.Redirect(new.url))
        identity, hello = await new.expect("hello")
        assert (hello["slots"], hello["running"]) == (0, [["t1", 1]])
        new.send(identity, protocol.Welcome(worker.id, defaults.HEARTBEAT_INTERVAL, defaults.LEASE_TIMEOUT))
        _, done = await new.expect("done")
        assert ([o["id"] for o in done["outcomes"]], done["credit"]) == (["t1"], 0)
        _, bye = await new.expect("bye", skip=("done",))
        assert bye["running"] == []
        new.send(identity, protocol.Ack(["t1"]))
        new.send(identity, protocol.Ack([], bye=True))
        async with asyncio.timeout(BYE_WAIT):
            await session
        assert worker.standing is Standing.LEFT and not worker.unacked


async def test_heartbeats_list_what_it_holds_and_a_run_sent_again_is_not_run_twice() -> None:
    # The leader reconciles its leases with the heartbeat's list and sends a lacking `run` again;
    # one that crossed the heartbeat arrives twice, and must neither start twice nor free a slot.
    async with fake_nodes(1) as [node], serving([node.url]) as (worker, _, _):
        identity, _ = await welcome(node)
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))
        await wait_for(lambda: "t1" in worker.running, what="t1 to start")
        _, beat = await node.expect("heartbeat", timeout=defaults.HEARTBEAT_INTERVAL + 1)
        assert beat["running"] == [["t1", 1]]
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))  # the same lease, again
        await node.expect_nothing(0.3, skip=("heartbeat",))  # no credit: it took no new slot
        assert len(worker.running) == 1
        GATES["g1"].set()
        _, done = await node.expect("done", skip=("heartbeat",))
        assert [(o["id"], o["attempt"]) for o in done["outcomes"]] == [("t1", 1)]
        node.send(identity, run(("t1", "unit.session.gated", ["g1"], 1)))  # reported, not yet acknowledged
        await node.expect_nothing(0.3, skip=("heartbeat",))
        assert "t1" not in worker.running
