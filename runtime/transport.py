"""A DEALER connection driven by the event loop: the socket I/O that clients and workers share.

ZeroMQ's FD is edge-triggered: readiness must be re-checked after every send and after every
drain, or a frame that arrived meanwhile would wait for the next, unrelated event. `Link` does
that in one place (the coordinator's ROUTER does the same in its server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

from . import defaults

log = logging.getLogger("qrt.transport")

MAX_FRAMES_PER_PASS = 5000


def new_dealer(ctx: zmq.Context[zmq.Socket[bytes]], identity: bytes | None) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, 4 * defaults.MAX_FRAME_BYTES)
    # ZMTP heartbeats notice a dead TCP peer even when we have nothing to say.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    return sock


class Link:
    """One DEALER socket to one coordinator at a time; `on_frame(frame)` runs on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_frame: Callable[[bytes], None],
                 identity: bytes | None = None) -> None:
        self._loop = loop
        self._on_frame = on_frame
        self._identity = identity
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._fd = -1
        self._scheduled = False
        self.url = ""

    def connect(self, url: str) -> None:
        """(Re)connect to `url`; frames queued on the old socket are dropped (callers resend)."""
        self._close_socket()
        self.url = url
        sock = new_dealer(self._ctx, self._identity)
        try:
            sock.connect(url)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ValueError(f"cannot connect to {url!r}: {exc}") from None
        self._sock = sock
        self._fd = int(self._sock.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._schedule)
        self._schedule()

    def send(self, frame: bytes) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("send queue to %s is full; frame dropped (it will be resent)", self.url)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        if sock is None:
            return
        for _ in range(MAX_FRAMES_PER_PASS):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_frame(frame)
            if sock is not self._sock:
                return  # the handler reconnected elsewhere
        else:
            self._schedule()
            return
        if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._schedule()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        self._close_socket()
        self._ctx.term()
