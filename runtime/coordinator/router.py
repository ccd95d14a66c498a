"""The coordinator's ROUTER socket: every client and worker frame in, every reply and `run` out.

It knows frames and routing ids, nothing of what they mean: `on_frame(identity, frame, key)` is
called for each frame read (`key`: the sender's CURVE public key in Z85 text, as pyzmq's ZAP
handler named it in the frame's "User-Id"; None without CURVE), and `after_pass()` once each
pass over the socket is done (the coordinator then offers free slots and proposes all that the
pass gathered as one Raft entry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

from ..curve import ServerKeys, serve_curve
from ..transport import EdgeReader

log = logging.getLogger("qrt.coordinator")

MAXMSGSIZE_MARGIN = 64 * 1024


class Router:
    def __init__(self, listen: str, max_frame: int, on_frame: Callable[[bytes, bytes, str | None], None],
                 after_pass: Callable[[], None], keys: ServerKeys | None = None) -> None:
        self.max_frame = max_frame
        self._on_frame = on_frame
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # ZeroMQ drops frames to unknown peers silently otherwise
        # Without CURVE a reconnecting worker keeps its identity: its new connection takes the
        # routing id over. With CURVE workers set none (the router names connections, with ids no
        # peer can claim), and handover stays off: no connection can take another's.
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 0 if keys is not None else 1)
        # ZeroMQ drops a peer whose frame exceeds the limit without reading it into memory; only
        # inbound frames count, so the coordinator still sends bigger ones (a `run` with large
        # arguments, a dead letter), which clients and workers accept up to MAX_PEER_FRAME_BYTES.
        # The margin: CURVE counts its own framing in the size (~40 bytes), and a frame just over the
        # limit should be answered `too_large` by the decoder rather than drop the connection.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_frame + MAXMSGSIZE_MARGIN)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self._auth = serve_curve(self._ctx, self.sock, keys) if keys is not None else None
        try:
            self.sock.bind(listen)
        except zmq.ZMQError as exc:
            self._close_all()
            raise OSError(f"cannot listen on {listen} ({exc})") from None
        receive = self._receive if keys is None else self._receive_keyed
        self._reader = EdgeReader(asyncio.get_running_loop(), self.sock, receive, after_pass)

    def _receive(self) -> bool:
        """Read and hand on one frame; False when none is waiting."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        if len(frames) == 2:
            self._on_frame(frames[0], frames[1], None)
        return True

    def _receive_keyed(self) -> bool:
        """`_receive` with CURVE: the sender's key comes with each frame (zero-copy frames carry it)."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        if len(frames) == 2:
            self._on_frame(frames[0].bytes, frames[1].bytes, str(frames[1].get("User-Id")))
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
        self._close_all()

    def _close_all(self) -> None:
        self.sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
