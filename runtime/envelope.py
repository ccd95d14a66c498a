"""A call as a task envelope: every argument and option checked here, so that a bad one fails at
submit, naming it, before anything is sent.
"""

from __future__ import annotations

import datetime
import math
import uuid
from dataclasses import dataclass
from typing import Any

from . import protocol
from .actor import Actor
from .errors import InvalidArgument
from .protocol import check_packable

ActorRef = Actor[Any, Any] | str


def new_task_id() -> str:
    return uuid.uuid4().hex


def _actor_name(actor: ActorRef) -> str:
    if isinstance(actor, Actor):
        return actor.name
    if isinstance(actor, str):
        if actor and len(actor) <= 200:
            return actor
        raise InvalidArgument(f"an actor name must be 1 to 200 characters, not {actor!r}")
    raise InvalidArgument(f"actor must be a @qrt.actor function or its name, not {type(actor).__name__}")


def _seconds(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative number of seconds, not {value!r}")
    return float(value)


def _epoch(value: Any, name: str) -> float:
    """An aware datetime or epoch seconds, as epoch seconds; a naive datetime is ambiguous."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(f"{name} is a naive datetime; give it a timezone (e.g. datetime.now(timezone.utc))")
        return value.timestamp()
    return _seconds(value, name)


@dataclass(slots=True)
class SubmitOptions:
    """The keyword options of submit_with, checked once."""

    delay: float | None = None
    eta: float | datetime.datetime | None = None
    expires: float | datetime.datetime | None = None
    priority: int = 0
    idempotency_key: str | None = None

    def apply_to(self, envelope: protocol.Envelope) -> None:
        if self.delay is not None and self.eta is not None:
            raise InvalidArgument("give delay or eta, not both")
        if self.delay is not None:
            envelope.delay = _seconds(self.delay, "delay")
        if self.eta is not None:
            envelope.eta = _epoch(self.eta, "eta")
        if isinstance(self.expires, datetime.datetime):
            envelope.expires_at = _epoch(self.expires, "expires")
        elif self.expires is not None:
            envelope.expires_in = _seconds(self.expires, "expires")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise InvalidArgument(f"priority must be an int (higher runs first), not {self.priority!r}")
        envelope.priority = self.priority
        if self.idempotency_key is not None:
            if not isinstance(self.idempotency_key, str) or not self.idempotency_key:
                raise InvalidArgument("idempotency_key must be a non-empty str")
            envelope.idempotency_key = self.idempotency_key


def make_envelope(actor: ActorRef, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any] | None,
                  options: SubmitOptions | None = None) -> protocol.Envelope:
    """Validate a call here, so that a bad argument fails at submit with its name."""
    name = _actor_name(actor)
    kwargs = dict(kwargs or {})
    if not isinstance(args, (tuple, list)):
        raise InvalidArgument(f"args must be a tuple or list, not {type(args).__name__}")
    keys: dict[str, Any] = {}
    try:
        if isinstance(actor, Actor):
            keys = actor.check_arguments(tuple(args), kwargs)
        else:
            for i, value in enumerate(args):
                check_packable(value, f"args[{i}] of {name}")
            for key, value in kwargs.items():
                check_packable(value, f"argument {key!r} of {name}")
    except TypeError as exc:
        raise InvalidArgument(str(exc)) from None
    envelope = protocol.Envelope(new_task_id(), name, list(args), kwargs, keys)
    if options is not None:
        options.apply_to(envelope)
    return envelope
