"""A client's requests in flight: sent to the leader, resent when they must be, answered typed.

docs/protocol.md §4: every request carries a `rid` and is idempotent, so after a redirect, a dead
or silent node or a `no_leader` it is simply sent again, with the same frame. The `LeaderLink`
follows the leader; this matches replies to requests, reads them with `protocol.parse_reply`, and
gives up on a request that no leader answered within the client's timeout.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from . import defaults, protocol
from .curve import PeerKeys
from .errors import ClientClosed, InvalidArgument, NoLeader, ProtocolError, RemoteError
from .protocol import ErrorCode
from .transport import LeaderLink

R = TypeVar("R", bound=protocol.Reply)

# How often deadlines are looked at: retries after `no_leader` are late by at most this.
TIMER_INTERVAL = 0.1


class ClientState(enum.Enum):
    """A client's life, as httpx's: it opens on its first request and, once closed, sends nothing."""

    UNOPENED = "unopened"  # no request yet: no socket
    OPENED = "opened"  # connected to a coordinator; requests go out
    CLOSED = "closed"  # close() was called: requests fail with ClientClosed


@dataclass(slots=True, eq=False)
class _Pending:
    kind: str  # the request's type, for messages
    frame: bytes  # sent again as is: same rid, same task ids
    expected: type[protocol.Reply]
    future: asyncio.Future[Any]
    hold: float  # how long the coordinator may keep it before answering (a wait's timeout)
    started: float
    asked_at: float  # first sent to the current node: its silence counts from here
    retry_at: float | None = None  # the node knew no leader: send it again then


class Requester:
    """Sends typed requests to the leader among `coordinators` and returns their typed replies."""

    def __init__(self, coordinators: list[str], timeout: float, keys: PeerKeys | None = None) -> None:
        self.coordinators = coordinators
        self.timeout = timeout  # how long a request may go without any leader answering
        self.keys = keys  # CURVE keys, or None
        self.state = ClientState.UNOPENED
        self._rids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._link: LeaderLink | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def request(self, message: protocol.Request, expected: type[R], hold: float = 0.0) -> R:
        """Send `message`, and return its `expected` reply once a leader gives it.

        Raises RemoteError when the coordinator refuses it, ProtocolError when the reply is not
        valid, NoLeader when no leader answered in time, ClientClosed when the client is closed.
        """
        if self.state is ClientState.CLOSED:
            raise ClientClosed("the client is closed; make a new one to send requests")
        loop = asyncio.get_running_loop()
        if self._link is None:
            self._open(loop)
        assert self._link is not None
        message.rid = next(self._rids)
        frame = message.encode()
        if len(frame) > defaults.MAX_FRAME_BYTES:
            raise InvalidArgument(f"request of {len(frame)} bytes exceeds the frame limit of "
                                  f"{defaults.MAX_FRAME_BYTES} bytes; pass large data by reference")
        now = time.monotonic()
        pending = _Pending(message.TYPE, frame, expected, loop.create_future(), hold, now, now)
        self._pending[message.rid] = pending
        self._link.send(frame)
        try:
            reply: R = await pending.future
            return reply
        finally:
            self._pending.pop(message.rid, None)

    def close(self) -> None:
        """Refuse further requests, and fail those still waiting for an answer."""
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.CLOSED
        if self._timer is not None:
            self._timer.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ClientClosed("the client was closed before the coordinator answered"))
        self._pending.clear()
        if self._link is not None:
            self._link.close()
            self._link = None

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        link = LeaderLink(loop, self.coordinators, self._on_message, self._on_connect, keys=self.keys)
        try:
            link.start()
        except ValueError:
            link.close()
            raise
        self._link = link
        self.state = ClientState.OPENED
        self._timer = loop.call_later(TIMER_INTERVAL, self._tick, loop)

    def _live(self) -> list[_Pending]:
        return [p for p in self._pending.values() if not p.future.done()]

    def _on_connect(self) -> None:
        """A new socket (a redirect, or failover): every pending request goes there."""
        now = time.monotonic()
        for pending in self._live():
            pending.asked_at, pending.retry_at = now, None
            self._send(pending.frame)

    def _send(self, frame: bytes) -> None:
        if self._link is not None:
            self._link.send(frame)

    def _on_message(self, message: dict[str, Any]) -> None:
        pending = self._pending.get(protocol.request_id(message) or 0)
        if pending is None or pending.future.done():
            return  # a late answer to a request already answered (or resent and answered)
        try:
            reply = protocol.parse_reply(message, pending.expected)
        except ProtocolError as exc:
            pending.future.set_exception(ProtocolError(
                exc.code, f"the coordinator's answer to {pending.kind!r} is not valid: {exc.message}",
                exc.rid, exc.field))
            return
        if isinstance(reply, protocol.Redirect):
            assert self._link is not None
            self._link.follow(reply.leader)  # then _on_connect sends every pending request there
        elif isinstance(reply, protocol.Error) and reply.code in (ErrorCode.NO_LEADER, ErrorCode.UNAVAILABLE):
            pending.retry_at = time.monotonic() + defaults.NO_LEADER_RETRY
        elif isinstance(reply, protocol.Error):
            pending.future.set_exception(RemoteError(reply.code, reply.message))
        else:
            pending.future.set_result(reply)

    def _curve_hint(self) -> str:
        """A refused CURVE key looks like silence (ZeroMQ closes the connection unanswered): say so."""
        if self.keys is None:
            return ""
        return (f"; with CURVE keys: check that the coordinator allows the key of {self.keys.secret_file} and "
                f"that {self.keys.server_file} is the coordinator's public key")

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(TIMER_INTERVAL, self._tick, loop)
        now = time.monotonic()
        expecting = math.inf  # the oldest answer due, for the link's failover
        for pending in self._live():  # (every pending request, ten times a second: kept lean)
            if now - pending.started > self.timeout + pending.hold:
                pending.future.set_exception(NoLeader(
                    f"no coordinator leader answered within {self.timeout:g} s (tried {', '.join(self.coordinators)})"
                    + self._curve_hint()))
                continue
            if pending.retry_at is not None and now >= pending.retry_at:
                pending.retry_at = None
                self._send(pending.frame)
            due = pending.asked_at + pending.hold
            if due < expecting:
                expecting = due
        assert self._link is not None
        self._link.tick(None if expecting == math.inf else expecting)
