"""The messages a client sends (docs/protocol.md §5), typed both ways, and what all messages share.

Each class has `to_wire()` (a map ready for `codec.encode`) and `from_wire(map)`, which checks
every field and raises `ProtocolError` naming the first bad one. The coordinator reads requests
with `from_wire`, and a client reads replies the same way: what arrives is checked on both sides.
The replies are in `replies.py`, the worker's messages in `work.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from ..defaults import MAX_TASKS_PER_SUBMIT
from ..errors import ProtocolError
from . import validate as v
from .codec import ErrorCode, encode


class Message:
    """A message: `TYPE` is its "t" on the wire."""

    __slots__ = ()
    TYPE: ClassVar[str]
    # How `from_wire` reads each field (validate.py's readers); a message with more to check than
    # its fields one by one writes its own `from_wire`.
    READERS: ClassVar[dict[str, v.Reader]] = {}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(**{name: read(m, name) for name, read in cls.READERS.items()})

    def to_wire(self) -> dict[str, Any]:
        """Every field that is not None."""
        wire: dict[str, Any] = {"t": self.TYPE}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        return wire

    def encode(self) -> bytes:
        return encode(self.to_wire())


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A message class's fields, in order (dataclasses.fields() is too slow for every frame)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(slots=True)
class Request(Message):
    """A client's request: `rid` is set by the client when it sends it, and echoed in the reply."""

    rid: int = field(default=0, kw_only=True)

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(**{name: read(m, name) for name, read in cls.READERS.items()}, rid=rid_of(m))


# ---------------------------------------------------------------------------------------------
# The task envelope (client -> coordinator, inside "submit")


_PLAIN_ENVELOPE = frozenset({"id", "actor", "args", "kwargs", "trace"})


@dataclass(slots=True)
class Envelope:
    id: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    keys: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0  # seconds from acceptance; 0 = now
    priority: int = 0  # higher first
    eta: float | None = None  # absolute due time, epoch seconds (instead of delay)
    expires_in: float | None = None  # not started this many seconds after acceptance: expired
    expires_at: float | None = None  # the same, as absolute epoch seconds
    idempotency_key: str | None = None  # a second submit with this key (same actor) runs nothing
    trace: dict[str, str] | None = None  # W3C trace context of the submit (runtime/tracing.py)

    OPTIONAL: ClassVar[tuple[str, ...]] = ("keys", "delay", "priority", "eta", "expires_in", "expires_at",
                                           "idempotency_key", "trace")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": self.id, "actor": self.actor, "args": self.args, "kwargs": self.kwargs}
        for name in self.OPTIONAL:
            value = getattr(self, name)
            if value:
                wire[name] = value
        return wire

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> Envelope:
        return cls.quick(raw) or cls.read(raw, where)

    @classmethod
    def quick(cls, raw: Any) -> Envelope | None:
        """A call without options, accepted with a few checks (None: let `read` name what is wrong)."""
        if type(raw) is dict and raw.keys() <= _PLAIN_ENVELOPE:
            task_id, actor, args, kwargs = raw.get("id"), raw.get("actor"), raw.get("args", []), raw.get("kwargs", {})
            trace = raw.get("trace")
            if (v.is_id(task_id) and v.is_id(actor) and type(args) is list and type(kwargs) is dict
                    and v.has_str_keys(kwargs) and v.within_nesting(args) and v.within_nesting(kwargs)
                    and (trace is None or v.is_trace_context(trace))):
                return cls(task_id, actor, args, kwargs, trace=trace)
        return None

    @classmethod
    def read(cls, raw: Any, where: str) -> Envelope:
        """Every field checked, the first bad one named."""
        if not isinstance(raw, dict):
            raise v.bad(where, "must be a map (a task envelope)")
        p = where + "."
        kwargs = v.str_keys(v.payload(raw, "kwargs", dict, {}, where=p), p + "kwargs")
        priority = v.get(raw, "priority", int, 0, where=p)
        if not -(2**63) <= priority < 2**63:
            raise v.bad(p + "priority", "must fit a signed 64-bit int")
        return cls(
            id=v.str_id(raw, "id", p), actor=v.str_id(raw, "actor", p),
            args=list(v.payload(raw, "args", list, [], where=p)), kwargs=kwargs, keys=v.key_values(raw, p),
            delay=float(v.nonneg(v.get(raw, "delay", v.NUMBER, 0.0, where=p), p + "delay")),
            priority=priority, eta=v.optional_number(raw, "eta", p),
            expires_in=v.optional_number(raw, "expires_in", p), expires_at=v.optional_number(raw, "expires_at", p),
            idempotency_key=v.get(raw, "idempotency_key", str, None, where=p), trace=v.trace_context(raw, p),
        )


# ---------------------------------------------------------------------------------------------
# Client requests


@dataclass(slots=True)
class Submit(Request):
    TYPE = "submit"
    tasks: list[Envelope]

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TYPE, "rid": self.rid, "tasks": [e.to_wire() for e in self.tasks]}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        raw = v.get(m, "tasks", list)
        if not raw:
            raise v.bad("tasks", "must hold at least one task")
        if len(raw) > MAX_TASKS_PER_SUBMIT:
            raise v.bad("tasks", f"holds {len(raw)} tasks: at most {MAX_TASKS_PER_SUBMIT} per submit")
        return cls([Envelope.from_wire(t, f"tasks[{i}]") for i, t in enumerate(raw)], rid=rid_of(m))


# Longest a `wait` is held by the coordinator (a client repeats shorter waits).
MAX_WAIT = 3600.0


@dataclass(slots=True)
class Wait(Request):
    TYPE = "wait"
    id: str
    timeout: float = 30.0  # how long the coordinator holds the request before answering "pending"

    def to_wire(self) -> dict[str, Any]:  # the most frequent request: written out
        return {"t": self.TYPE, "rid": self.rid, "id": self.id, "timeout": self.timeout}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        timeout = float(v.nonneg(v.get(m, "timeout", v.NUMBER, 30.0), "timeout"))
        return cls(v.str_id(m, "id"), min(timeout, MAX_WAIT), rid=rid_of(m))


# Ids in one `wait_any` (a client with more asks about the first ones, then the next).
MAX_IDS_PER_WAIT = 10_000


@dataclass(slots=True)
class WaitAny(Request):
    """Wait for any of many tasks: answered with every one that has ended (at once if some have),
    else with the first to end, else nothing at `timeout`. N results are not N long polls."""

    TYPE = "wait_any"
    ids: list[str]
    timeout: float = 30.0

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        ids = v.str_list(m, "ids")
        if not 0 < len(ids) <= MAX_IDS_PER_WAIT:
            raise v.bad("ids", f"must hold 1 to {MAX_IDS_PER_WAIT} ids")
        timeout = float(v.nonneg(v.get(m, "timeout", v.NUMBER, 30.0), "timeout"))
        return cls(ids, min(timeout, MAX_WAIT), rid=rid_of(m))


@dataclass(slots=True)
class Cancel(Request):
    TYPE = "cancel"
    id: str
    READERS = {"id": v.str_id}


@dataclass(slots=True)
class Status(Request):
    TYPE = "status"
    local: bool = False  # answer with this node's own view even when it is not the leader
    READERS = {"local": v.flag(False)}


@dataclass(slots=True)
class DlqList(Request):
    TYPE = "dlq_list"
    limit: int = 100
    READERS = {"limit": v.count(100)}


@dataclass(slots=True)
class DlqShow(Request):
    TYPE = "dlq_show"
    id: str
    READERS = {"id": v.str_id}


def _op(msg: dict[str, Any], name: str, where: str = "") -> str | None:
    """An operation's id: the same in every copy of a request, so that a resent one acts once."""
    return v.str_id(msg, name, where) if msg.get(name) is not None else None


@dataclass(slots=True)
class _DlqChange(Request):
    ids: list[str] | None  # None: every dead letter
    op: str | None = None  # see _op
    READERS = {"ids": v.ids_or_all, "op": _op}

    def to_wire(self) -> dict[str, Any]:
        chosen: dict[str, Any] = {"all": True} if self.ids is None else {"ids": self.ids}
        if self.op is not None:
            chosen["op"] = self.op
        return {"t": self.TYPE, "rid": self.rid, **chosen}


@dataclass(slots=True)
class DlqReplay(_DlqChange):
    TYPE = "dlq_replay"


@dataclass(slots=True)
class DlqPurge(_DlqChange):
    TYPE = "dlq_purge"


@dataclass(slots=True)
class LimitsShow(Request):
    TYPE = "limits"


@dataclass(slots=True)
class LimitsSet(Request):
    """`rate` is actor-wide, or with `key` the rate of that key value; `weight` (with `key`) is that
    value's tasks per round-robin turn; `concurrency` is the actor-wide cap. `check()` holds the
    rules of `qrt limits set`, for the coordinator and the client alike."""

    TYPE = "limits_set"
    actor: str
    rate: tuple[int, float] | None = None
    key: Any = None
    concurrency: int | None = None
    weight: int | None = None

    def check(self) -> Self:
        """Refuse what the coordinator would refuse, naming the field (the client calls this before
        sending, so a bad request never leaves it)."""
        if not isinstance(self.actor, str) or not 0 < len(self.actor) <= v.MAX_ID_CHARS:
            raise v.bad("actor", f"must be 1 to {v.MAX_ID_CHARS} characters")
        if self.rate is not None and not v.rate(self.rate):
            raise v.bad("rate", "must be [n > 0, period seconds > 0]")
        if not isinstance(self.key, v.KEY_VALUE_TYPES):
            raise v.bad("key", "must be a scalar key value (str, int, float, bool, bin, nil)")
        for name in ("concurrency", "weight"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise v.bad(name, f"must be an int of at least 1, not {value!r}")
        if self.weight is not None and self.key is None:
            raise v.bad("weight", "needs 'key' (the value it weighs)")
        if self.key is not None and self.rate is None and self.weight is None:
            raise v.bad("key", "needs 'rate' or 'weight': it sets them for one value")
        if self.rate is None and self.concurrency is None and self.weight is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, "give 'rate', 'concurrency' or 'weight'")
        if self.rate is not None:
            self.rate = (self.rate[0], float(self.rate[1]))
        return self

    def to_wire(self) -> dict[str, Any]:
        wire = Message.to_wire(self)
        if self.rate is not None:
            wire["rate"] = list(self.rate)
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        rate = v.get(m, "rate", list, None)
        return cls(v.str_id(m, "actor"), None if rate is None else tuple(rate), m.get("key"),  # type: ignore[arg-type]
                   v.get(m, "concurrency", int, None), v.get(m, "weight", int, None), rid=rid_of(m)).check()


@dataclass(slots=True)
class LimitsReset(Request):
    TYPE = "limits_reset"
    actor: str
    READERS = {"actor": v.str_id}


@dataclass(slots=True)
class QueuePause(Request):
    TYPE = "queue_pause"
    actor: str
    paused: bool
    READERS = {"actor": v.str_id, "paused": v.flag()}


@dataclass(slots=True)
class QueuePurge(Request):
    TYPE = "queue_purge"
    actor: str
    op: str | None = None  # see _op
    READERS = {"actor": v.str_id, "op": _op}


@dataclass(slots=True)
class CronAdd(Request):
    """An operator's cron entry; `check()` parses the expression with the one cron parser."""

    TYPE = "cron_add"
    name: str
    actor: str
    expr: str
    tz: str = "UTC"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> Self:
        v.cron(self.expr, self.tz, "expr", "tz")
        return self

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(v.str_id(m, "name"), v.str_id(m, "actor"), v.str_id(m, "expr"), v.get(m, "tz", str, "UTC"),
                   list(v.payload(m, "args", list, [])), v.str_keys(v.payload(m, "kwargs", dict, {}), "kwargs"),
                   rid=rid_of(m)).check()


@dataclass(slots=True)
class CronRemove(Request):
    TYPE = "cron_remove"
    name: str
    READERS = {"name": v.str_id}


@dataclass(slots=True)
class AlertsList(Request):
    """The leader's alert rules and what fires (qrt alerts list)."""

    TYPE = "alerts"


@dataclass(slots=True)
class CronList(Request):
    TYPE = "cron_list"


def rid_of(m: dict[str, Any]) -> int:
    """The request id of a request or a reply."""
    return int(v.get(m, "rid", int))
