"""A fake coordinator for unit tests of the client and the worker session: a real ZeroMQ ROUTER on
127.0.0.1 that the test answers by hand, frame by frame, on the test's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import zmq
import zmq.asyncio

from qrt import protocol


class FakeCoordinator:
    """One node: `receive()` the next message (decoded), `send()` an answer (a message or a raw map,
    which may be invalid on purpose). Always `close()` it (the `fakes` fixtures do)."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as the coordinator: a reconnecting worker keeps its id
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"

    async def receive(self, timeout: float = 5.0, skip: tuple[str, ...] = ()) -> tuple[bytes, dict[str, Any]]:
        """The next message whose type is not in `skip`, with the sender's routing id; TimeoutError after `timeout`."""
        async with asyncio.timeout(timeout):
            while True:
                identity, frame = await self.sock.recv_multipart()
                message = protocol.decode(frame)
                if message["t"] not in skip:
                    return identity, message

    async def expect(self, kind: str, timeout: float = 5.0, skip: tuple[str, ...] = ()) -> tuple[bytes, dict[str, Any]]:
        """The next message (not in `skip`), which must be of type `kind`."""
        identity, message = await self.receive(timeout, skip)
        assert message["t"] == kind, f"expected {kind!r}, got {message}"
        return identity, message

    async def expect_nothing(self, seconds: float, skip: tuple[str, ...] = ()) -> None:
        """Assert that no message (other than those in `skip`) arrives for `seconds`."""
        try:
            _, message = await self.receive(seconds, skip)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing for {seconds} s, got {message}")

    def send(self, identity: bytes, message: protocol.Message | dict[str, Any]) -> None:
        frame = message.encode() if isinstance(message, protocol.Message) else protocol.encode(dict(message))
        self.sock.send_multipart([identity, frame])

    def close(self) -> None:
        self.sock.close(linger=0)


@asynccontextmanager
async def fake_nodes(n: int) -> AsyncIterator[list[FakeCoordinator]]:
    """`n` fake coordinator nodes, closed (and their ZeroMQ context terminated) whatever happens."""
    ctx = zmq.asyncio.Context()
    nodes: list[FakeCoordinator] = []
    try:
        for _ in range(n):
            nodes.append(FakeCoordinator(ctx))
        yield nodes
    finally:
        for node in nodes:
            node.close()
        ctx.term()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "the condition") -> None:
    """Wait until `condition()` holds, looking every 10 ms; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.01)
