"""The client against fake coordinators (real ZeroMQ ROUTERs answered by hand): following the
leader, retrying, failing over, reading typed replies, refusing work once closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import qrt
from qrt import defaults, protocol
from qrt.errors import ClientClosed, InvalidArgument, NoLeader, ProtocolError, RemoteError, TaskFailed
from qrt.protocol import ErrorCode
from qrt.requester import ClientState

from .fake_coordinator import fake_nodes

STATUS: dict[str, Any] = {"node": "", "is_leader": True, "term": 1, "commit_index": 5, "applied_batches": 5,
                          "digest": "d", "nodes": [], "workers": [], "queues": {}, "dead_letters": 0, "now": 1.0}


async def test_submit_returns_handles_from_the_typed_accepted_reply() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url]) as client:
        submit = asyncio.create_task(client.submit("app.add", 1, 2))
        identity, msg = await node.expect("submit")
        task = msg["tasks"][0]
        assert (task["actor"], task["args"], task["kwargs"]) == ("app.add", [1, 2], {})
        node.send(identity, protocol.Accepted(msg["rid"], [task["id"]]))
        handle = await submit
        assert handle.id == task["id"]


async def test_result_repeats_waits_until_the_task_ends() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url]) as client:
        result = asyncio.create_task(client.task("t1").result())
        identity, wait = await node.expect("wait")
        assert (wait["id"], wait["timeout"]) == ("t1", defaults.WAIT_CHUNK)
        node.send(identity, protocol.Result(wait["rid"], "t1", "pending"))
        identity, again = await node.expect("wait")
        assert again["rid"] != wait["rid"]  # a new request, not a resend
        node.send(identity, protocol.Result(again["rid"], "t1", "succeeded", value={"sum": 3}))
        assert await result == {"sum": 3}

        failed = asyncio.create_task(client.task("t2").result())
        identity, wait = await node.expect("wait")
        node.send(identity, protocol.Result(wait["rid"], "t2", "failed",
                                            error={"type": "ValueError", "message": "no", "traceback": "tb"}))
        with pytest.raises(TaskFailed) as info:
            await failed
        assert (info.value.error_type, info.value.message, info.value.traceback) == ("ValueError", "no", "tb")


async def test_operator_replies_keep_their_public_shapes() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url]) as client:
        status = asyncio.create_task(client.status())
        identity, msg = await node.expect("status")
        node.send(identity, protocol.StatusReply(msg["rid"], STATUS))
        assert (await status)["commit_index"] == 5

        page = asyncio.create_task(client.dlq_list(10))
        identity, msg = await node.expect("dlq_list")
        assert msg["limit"] == 10
        node.send(identity, protocol.DlqPage(msg["rid"], 1, [{"id": "t1"}], False))
        assert await page == {"total": 1, "entries": [{"id": "t1"}], "arguments_truncated": False}

        replay = asyncio.create_task(client.dlq_replay(None))
        identity, msg = await node.expect("dlq_replay")
        assert msg["all"] is True
        node.send(identity, protocol.Counted(msg["rid"], 2, ["t1", "t2"]))
        assert await replay == 2


async def test_a_redirect_moves_to_the_leader_and_a_later_failover_goes_on_from_there() -> None:
    async with fake_nodes(3) as (a, b, c), qrt.AsyncClient([a.url, b.url, c.url]) as client:
        status = asyncio.create_task(client.status())
        identity, msg = await a.expect("status")
        a.send(identity, protocol.Redirect(c.url, msg["rid"]))
        identity, again = await c.expect("status")
        assert again["rid"] == msg["rid"]  # the same request, sent again to the leader
        c.send(identity, protocol.StatusReply(again["rid"], {**STATUS, "node": c.url}))
        assert (await status)["node"] == c.url

        # The leader falls silent: the next node after it in the list is asked, not b (the next after a).
        cancel = asyncio.create_task(client.cancel("t1"))
        await c.expect("cancel")
        identity, msg = await a.expect("cancel", timeout=defaults.SILENCE_BEFORE_FAILOVER + 2)
        a.send(identity, protocol.Counted(msg["rid"], 1))
        assert await cancel is True
        await b.expect_nothing(0.05)


async def test_a_silent_node_is_left_for_the_next_after_the_silence() -> None:
    async with fake_nodes(2) as (a, b), qrt.AsyncClient([a.url, b.url]) as client:
        cancel = asyncio.create_task(client.cancel("t1"))
        _, first = await a.expect("cancel")
        sent = time.monotonic()
        identity, msg = await b.expect("cancel", timeout=defaults.SILENCE_BEFORE_FAILOVER + 2)
        assert time.monotonic() - sent >= defaults.SILENCE_BEFORE_FAILOVER - 0.1
        assert msg["rid"] == first["rid"]
        b.send(identity, protocol.Counted(msg["rid"], 0))
        assert await cancel is False


@pytest.mark.parametrize("code", [ErrorCode.NO_LEADER, ErrorCode.UNAVAILABLE])
async def test_no_leader_is_asked_again_a_little_later_on_the_same_node(code: str) -> None:
    async with fake_nodes(2) as (a, b), qrt.AsyncClient([a.url, b.url]) as client:
        cancel = asyncio.create_task(client.cancel("t1"))
        identity, msg = await a.expect("cancel")
        a.send(identity, protocol.Error(code, "electing", msg["rid"]))
        answered = time.monotonic()
        identity, again = await a.expect("cancel", timeout=1.0)
        assert again["rid"] == msg["rid"]
        assert time.monotonic() - answered >= defaults.NO_LEADER_RETRY - 0.05  # at its time, not at once
        a.send(identity, protocol.Counted(again["rid"], 1))
        assert await cancel is True
        await b.expect_nothing(0.05)


async def test_a_node_that_keeps_knowing_no_leader_is_left_for_the_next() -> None:
    async with fake_nodes(2) as (a, b), qrt.AsyncClient([a.url, b.url]) as client:
        cancel = asyncio.create_task(client.cancel("t1"))
        identity, msg = await a.expect("cancel")
        started = time.monotonic()
        a.send(identity, protocol.Error(ErrorCode.NO_LEADER, "electing", msg["rid"]))
        receive_b = asyncio.create_task(b.expect("cancel", timeout=defaults.SILENCE_BEFORE_FAILOVER + 2))
        while not receive_b.done():  # a minority node: it answers no_leader, always
            try:
                identity, msg = await a.receive(timeout=0.05)
            except TimeoutError:
                continue
            a.send(identity, protocol.Error(ErrorCode.NO_LEADER, "electing", msg["rid"]))
        identity, msg = await receive_b
        assert time.monotonic() - started >= defaults.SILENCE_BEFORE_FAILOVER - 0.1
        b.send(identity, protocol.Counted(msg["rid"], 1))
        assert await cancel is True


async def test_an_invalid_reply_fails_its_request_at_once() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url]) as client:
        submit = asyncio.create_task(client.submit("app.add", 1, 2))
        identity, msg = await node.expect("submit")
        node.send(identity, {"t": "accepted", "rid": msg["rid"], "ids": 5})
        with pytest.raises(ProtocolError, match=r"answer to 'submit' is not valid: field 'ids' must be array"):
            async with asyncio.timeout(1.0):
                await submit

        cancel = asyncio.create_task(client.cancel("t1"))  # a reply of the wrong type
        identity, msg = await node.expect("cancel")
        node.send(identity, {"t": "result", "rid": msg["rid"], "id": "t1", "state": "pending"})
        with pytest.raises(ProtocolError, match=r"expected a 'ok' reply, got 'result'"):
            async with asyncio.timeout(1.0):
                await cancel


async def test_an_error_reply_fails_its_request_with_the_coordinators_words() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url]) as client:
        show = asyncio.create_task(client.dlq_show("t1"))
        identity, msg = await node.expect("dlq_show")
        node.send(identity, protocol.Error(ErrorCode.NOT_FOUND, "no dead letter with id 't1'", msg["rid"]))
        with pytest.raises(RemoteError) as info:
            await show
        assert (info.value.code, info.value.message) == (ErrorCode.NOT_FOUND, "no dead letter with id 't1'")


async def test_no_leader_at_all_fails_after_the_clients_timeout() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url], timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(NoLeader, match=r"within 0\.5 s"):
            await client.cancel("t1")
        assert time.monotonic() - started < 2.0
        await node.expect("cancel")  # it was sent, and never answered


async def test_limits_and_cron_entries_are_checked_before_anything_is_sent() -> None:
    async with fake_nodes(1) as [node], qrt.AsyncClient([node.url]) as client:
        with pytest.raises(InvalidArgument, match="rate 'fast' is not N/PERIOD"):
            await client.set_limits("app.add", rate="fast")
        with pytest.raises(InvalidArgument, match="give 'rate', 'concurrency' or 'weight'"):
            await client.set_limits("app.add")
        with pytest.raises(InvalidArgument, match="field 'key' needs 'rate' or 'weight'"):
            await client.set_limits("app.add", key="tenant-1")
        with pytest.raises(InvalidArgument, match="field 'concurrency' must be an int of at least 1"):
            await client.set_limits("app.add", concurrency=0)
        with pytest.raises(InvalidArgument):
            await client.cron_add("nightly", "app.add", "not a cron expression")
        with pytest.raises(InvalidArgument, match="Mars/Base"):
            await client.cron_add("nightly", "app.add", "0 3 * * *", tz="Mars/Base")
        assert client.state is ClientState.UNOPENED
        await node.expect_nothing(0.1)

        set_limits = asyncio.create_task(client.set_limits("app.add", rate="5/s", concurrency=2))
        identity, msg = await node.expect("limits_set")
        assert (msg["actor"], msg["rate"], msg["concurrency"]) == ("app.add", [5, 1.0], 2)
        node.send(identity, protocol.Counted(msg["rid"], 1))
        await set_limits


async def test_a_closed_client_refuses_requests_and_sends_nothing() -> None:
    async with fake_nodes(1) as [node]:
        client = qrt.AsyncClient([node.url])
        pending = asyncio.create_task(client.cancel("t1"))
        await node.expect("cancel")
        await client.close()
        with pytest.raises(ClientClosed):
            await pending  # closed while it waited
        with pytest.raises(ClientClosed):
            await client.cancel("t2")
        with pytest.raises(ClientClosed):
            async with client:
                pass
        assert client.state is ClientState.CLOSED
        await node.expect_nothing(0.2)  # no silent reconnection


async def test_the_sync_client_answers_as_the_async_one_and_refuses_once_closed() -> None:
    async with fake_nodes(1) as [node]:
        client = qrt.Client([node.url], timeout=2.0)
        try:
            cancel = asyncio.ensure_future(asyncio.to_thread(client.cancel, "t1"))
            identity, msg = await node.expect("cancel")
            node.send(identity, protocol.Counted(msg["rid"], 1))
            assert await cancel is True
        finally:
            await asyncio.to_thread(client.close)
        with pytest.raises(RuntimeError, match="closed"):  # ClientClosed is a RuntimeError too
            client.status()
        with pytest.raises(ClientClosed):
            client.submit("app.add", 1, 2)
        client.close()  # a second close is harmless
        await node.expect_nothing(0.1)


def test_the_request_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        qrt.AsyncClient("tcp://127.0.0.1:9", timeout=0)
