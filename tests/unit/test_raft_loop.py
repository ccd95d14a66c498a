"""pysyncobj's poller interface on a real asyncio loop (raft_loop.LoopPoller), over a socket pair."""

from __future__ import annotations

import asyncio
import socket

from pysyncobj.poller import POLL_EVENT_TYPE

from qrt.raft_loop import LoopPoller

READ, WRITE, ERROR = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE, POLL_EVENT_TYPE.ERROR


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_the_loop_calls_back_what_pysyncobj_subscribed_and_nothing_after_it_unsubscribed() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    poller = LoopPoller()
    events: list[int] = []
    ticks: list[None] = []
    poller.on_event = lambda: ticks.append(None)
    poller.subscribe(ours.fileno(), lambda fd, event: events.append(event), READ | ERROR)
    poller.attach(asyncio.get_running_loop())  # subscribed before the loop was known: watched now
    theirs.send(b"x")
    await turns()
    assert events and all(e == READ for e in events) and len(ticks) == len(events)
    ours.recv(10)

    events.clear()
    poller.subscribe(ours.fileno(), lambda fd, event: events.append(event), READ | WRITE | ERROR)
    await turns()
    assert WRITE in events  # an idle socket is writable: pysyncobj then flushes and drops WRITE
    poller.subscribe(ours.fileno(), lambda fd, event: events.append(event), READ | ERROR)
    events.clear()
    await turns()
    assert events == []

    fd = ours.fileno()
    ours.close()  # as pysyncobj's disconnect: the socket closed first, then unsubscribed
    poller.unsubscribe(fd)
    theirs.close()
    await turns()
    assert events == []


async def test_a_failing_callback_does_not_stop_the_loop_and_still_ticks() -> None:
    ours, theirs = socket.socketpair()
    poller = LoopPoller()
    ticks: list[None] = []
    poller.on_event = lambda: ticks.append(None)
    poller.attach(asyncio.get_running_loop())

    def fails(fd: int, event: int) -> None:
        ours.recv(10)
        raise RuntimeError("a connection's bug")

    poller.subscribe(ours.fileno(), fails, READ | ERROR)
    theirs.send(b"x")
    await turns()
    assert ticks
    poller.unsubscribe(ours.fileno())
    ours.close()
    theirs.close()


def test_the_same_on_uvloop_the_coordinators_loop() -> None:
    import uvloop

    uvloop.run(test_the_loop_calls_back_what_pysyncobj_subscribed_and_nothing_after_it_unsubscribed())
    uvloop.run(test_a_failing_callback_does_not_stop_the_loop_and_still_ticks())
