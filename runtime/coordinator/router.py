"""The coordinator's ROUTER socket: every client and worker frame in, every reply and `run` out.

It knows frames and routing ids, nothing of what they mean: `on_frame(identity, frame)` is called
for each frame read, and `after_pass()` once each pass over the socket is done (the coordinator
then offers free slots and proposes all that the pass gathered as one Raft entry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

from .. import defaults
from ..transport import EdgeReader

log = logging.getLogger("qrt.coordinator")


class Router:
    def __init__(self, listen: str, max_frame: int, on_frame: Callable[[bytes, bytes], None],
                 after_pass: Callable[[], None]) -> None:
        self.max_frame = max_frame
        self._on_frame = on_frame
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # ZeroMQ drops frames to unknown peers silently otherwise
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting worker keeps its identity
        # Beyond this ZeroMQ drops the peer without reading the frame; up to it, a frame over
        # `max_frame` is read and answered `too_large` (the same ratio as MAX_PEER_FRAME_BYTES).
        self.sock.setsockopt(zmq.MAXMSGSIZE, defaults.PEER_FRAME_RATIO * max_frame)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        try:
            self.sock.bind(listen)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            self._ctx.term()
            raise OSError(f"cannot listen on {listen} ({exc})") from None
        self._reader = EdgeReader(asyncio.get_running_loop(), self.sock, self._receive, after_pass)

    def _receive(self) -> bool:
        """Read and hand on one frame; False when none is waiting."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        if len(frames) == 2:
            self._on_frame(frames[0], frames[1])
        return True

    def start(self) -> None:
        self._reader.start()

    def send(self, identity: bytes, frame: bytes) -> bool:
        """Send without blocking; False when the peer is gone or its queue is full."""
        sent = True
        try:
            self.sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer is gone; EAGAIN: its queue is full
            log.debug("could not send to %r: %s", identity, exc)
            sent = False
        # A send can consume the edge of the FD's readiness for a frame that just arrived (sends
        # from commit callbacks happen outside a pass): look again, or that frame waits (measured:
        # pauses up to 1 s, until the next unrelated arrival).
        self._reader.schedule()
        return sent

    def close(self) -> None:
        self._reader.stop()
        self.sock.close(linger=0)
        self._ctx.term()
