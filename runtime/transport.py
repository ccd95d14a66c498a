"""ZeroMQ sockets on the event loop: reading them right, and the link to the leader.

ZeroMQ's FD is edge-triggered: it signals that the socket's state changed, not that a frame waits,
and a send can consume the edge of an arrival. So readiness must be re-checked after every send and
after every pass over the socket, or a frame that arrived meanwhile waits for the next, unrelated
event (measured: pauses up to 1 s). `EdgeReader` does that for any socket (the coordinator's ROUTER,
the DEALERs of clients and workers); `LeaderLink` is the DEALER that clients and workers share: it
follows redirects and fails over to the next coordinator when the one it talks to falls silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from . import defaults, protocol
from .curve import PeerKeys
from .errors import ProtocolError

log = logging.getLogger("qrt.transport")

# One pass over a socket reads at most this many messages, then lets the loop's other callbacks
# (timers, commits, handlers) run before the next: a flood cannot starve them, and a busy socket is
# still read in few passes (the whole pass costs a few ms at ~100k messages/s, measured).
MAX_FRAMES_PER_PASS = 5000


class EdgeReader:
    """Reads a ZeroMQ socket of any type from an asyncio loop, with its edge-triggered FD.

    `receive()` reads one message without blocking (a frame, or a multipart [identity, frame]) and
    hands it on, returning False when none was waiting; `after_pass()`, if given, runs after each
    pass (the coordinator proposes there what the pass gathered). `start()` begins; call
    `schedule()` after every send on the socket; `stop()` before closing the socket (a pass that
    is already scheduled then does nothing, and so does the rest of a pass that `receive` stopped).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[Any], receive: Callable[[], bool],
                 after_pass: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._sock = sock
        self._receive = receive
        self._after_pass = after_pass
        self._fd = int(sock.getsockopt(zmq.FD))
        self._active = False
        self._scheduled = False

    def start(self) -> None:
        self._active = True
        self._loop.add_reader(self._fd, self.schedule)
        self.schedule()  # frames may have arrived before the reader was added

    def schedule(self) -> None:
        """Look at the socket again soon (once, however often this is called before that)."""
        if self._active and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._pass)

    def stop(self) -> None:
        if self._active:
            self._active = False
            self._loop.remove_reader(self._fd)

    def _pass(self) -> None:
        self._scheduled = False
        try:
            for _ in range(MAX_FRAMES_PER_PASS):
                if not self._active or not self._receive():
                    break
            else:
                self.schedule()  # more may be waiting: come back after the others had a turn
        except Exception:  # a handler's bug must not leave the rest of the socket unread
            log.exception("handling a message failed")
            self.schedule()
        if not self._active:
            return
        if self._after_pass is not None:
            self._after_pass()
        if self._active and int(self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self.schedule()


def new_dealer(ctx: zmq.Context[zmq.Socket[bytes]], identity: bytes | None,
               keys: PeerKeys | None = None) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    if keys is not None:
        keys.apply(sock)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, defaults.MAX_PEER_FRAME_BYTES)
    # ZMTP heartbeats notice a dead TCP peer even when we have nothing to say.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    return sock


class LeaderLink:
    """One DEALER socket at a time, to the coordinator that leads among `urls`: the client's and the
    worker's link (docs/protocol.md §4, §6).

    `on_message(map)` gets every frame received, decoded (one that cannot be is dropped with a
    warning); the owner reads it typed, and asks the link to move:

    - `follow(url)` on a `redirect`: connect to the leader, whose URL becomes the current position
      in the list, so that a later failover moves on from there, not back to a node that may be dead;
    - `tick(expecting_since)`, from the owner's timer: when nothing was heard from a leader for
      SILENCE_BEFORE_FAILOVER since `expecting_since` (and since the link connected), the node may
      be dead: connect to the next URL. On `no_leader` or `unavailable` the owner just sends again
      later, to the same node: that is not hearing from a leader, so the silence goes on counting.

    `keys`: CURVE keys (curve.py), or None to speak in clear (a coordinator on loopback without keys).

    `on_connect()` runs after every connection, the first (`start()`) included. A new socket drops
    what the old one had queued, and replies go to the socket that asked: the owner sends what it
    must there (a client every pending request, a worker its hello).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, urls: Sequence[str],
                 on_message: Callable[[dict[str, Any]], None], on_connect: Callable[[], None],
                 identity: bytes | None = None, keys: PeerKeys | None = None) -> None:
        if not urls:
            raise ValueError("no coordinator address given")
        self.urls = list(urls)
        self.position = 0  # the index in `urls` of the node we talk to (or were last redirected from)
        self.url = ""
        self.connected_at = 0.0
        self._loop = loop
        self._on_message = on_message
        self._on_connect = on_connect
        self._identity = identity
        self._keys = keys
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._reader: EdgeReader | None = None
        self._closed = False

    def start(self) -> None:
        """Connect to the first URL; ValueError if it is not one ZeroMQ can connect to."""
        self._connect(self.urls[self.position])

    def send(self, frame: bytes) -> None:
        """Queue `frame` to the node; dropped when the queue is full (the owner resends on silence)."""
        if self._sock is None:
            return
        try:
            self._sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("send queue to %s is full; frame dropped (it will be resent)", self.url)
        assert self._reader is not None
        self._reader.schedule()

    def follow(self, leader: str) -> None:
        """A redirect: connect to `leader`, and move the position in the list there."""
        if self._closed:
            return
        if leader in self.urls:
            self.position = self.urls.index(leader)
        try:
            self._connect(leader)
        except ValueError as exc:
            log.warning("%s; trying the next coordinator", exc)
            self.failover()

    def failover(self) -> None:
        """Connect to the next URL in the list."""
        if self._closed:
            return
        self.position = (self.position + 1) % len(self.urls)
        self._connect(self.urls[self.position])

    def tick(self, expecting_since: float | None) -> bool:
        """Fail over when no leader answered for too long; True when it did.

        `expecting_since`: since when the owner has been waiting for an answer (its oldest
        unanswered request, allowance for a held wait included; or the last frame from a leader),
        None when it waits for nothing.
        """
        if self._closed or expecting_since is None:
            return False
        if time.monotonic() - max(expecting_since, self.connected_at) <= defaults.SILENCE_BEFORE_FAILOVER:
            return False
        log.info("no answer from a leader at %s for %.1f s: trying the next coordinator",
                 self.url, defaults.SILENCE_BEFORE_FAILOVER)
        self.failover()
        return True

    def close(self) -> None:
        self._closed = True
        self._close_socket()
        self._ctx.term()

    def _connect(self, url: str) -> None:
        self._close_socket()
        sock = new_dealer(self._ctx, self._identity, self._keys)
        try:
            sock.connect(url)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ValueError(f"cannot connect to {url!r}: {exc}") from None
        self._sock = sock
        self.url = url
        self.connected_at = time.monotonic()
        self._reader = EdgeReader(self._loop, sock, lambda: self._receive(sock))
        self._reader.start()
        self._on_connect()

    def _receive(self, sock: zmq.Socket[bytes]) -> bool:
        try:
            frame = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return False
        try:
            message = protocol.decode(frame, defaults.MAX_PEER_FRAME_BYTES)
        except ProtocolError as exc:
            log.warning("dropped a bad frame from %s: %s", self.url, exc.message)
            return True
        self._on_message(message)
        return True

    def _close_socket(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
