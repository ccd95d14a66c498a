"""Operators' requests, built and checked once in the library: a bad one raises InvalidArgument,
naming the problem, before anything is sent (the client, the CLI and qrt.testing all use these).
"""

from __future__ import annotations

from typing import Any

from . import protocol
from .envelope import ActorRef, make_envelope
from .errors import InvalidArgument, ProtocolError
from .state.limits import parse_rate


def limits_request(actor: str, rate: str | None = None, key: Any = None, concurrency: int | None = None,
                   weight: int | None = None) -> protocol.LimitsSet:
    """`qrt limits set`: `rate` ("10/s") actor-wide, or with `key` that value's rate; `weight` (with
    `key`) that value's tasks per round-robin turn; `concurrency` the actor-wide cap."""
    try:
        return protocol.LimitsSet(actor, None if rate is None else parse_rate(rate), key, concurrency, weight).check()
    except (ValueError, ProtocolError) as exc:
        raise InvalidArgument(str(exc)) from None


def cron_request(name: str, actor: ActorRef, expr: str, args: list[Any] | tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, tz: str = "UTC") -> protocol.CronAdd:
    """`qrt cron add`: `actor(*args, **kwargs)` at each time of `expr` in time zone `tz`."""
    envelope = make_envelope(actor, args, kwargs)
    try:
        return protocol.CronAdd(name, envelope.actor, expr, tz, envelope.args, envelope.kwargs).check()
    except ProtocolError as exc:
        raise InvalidArgument(str(exc)) from None
