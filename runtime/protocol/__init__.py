"""The wire protocol: message types, the msgpack codec, and validation of every incoming field.

Sans-I/O, like h11: this module turns bytes into typed messages and messages into bytes, and
never touches a socket. Every frame is one msgpack map ``{"v": 1, "t": <type>, ...}``; the full
schema, with an example per message, is docs/protocol.md. A frame that breaks the schema raises
`ProtocolError` with a code and a message naming the field, which the caller sends back as an
``error`` message (or drops, when there is nobody to answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..defaults import MAX_FRAME_BYTES
from ..errors import ProtocolError

VERSION = 1


class ErrorCode:
    """Codes carried by ``error`` messages (docs/protocol.md, "Error codes")."""

    BAD_FRAME = "bad_frame"  # not msgpack, or not a map
    BAD_VERSION = "bad_version"  # "v" missing or not a version this node speaks
    UNKNOWN_TYPE = "unknown_type"  # "t" names no message
    BAD_FIELD = "bad_field"  # a field is missing, of the wrong type, or out of range
    TOO_LARGE = "too_large"  # the frame exceeds the node's size limit
    NO_LEADER = "no_leader"  # no leader is elected right now: retry shortly
    NOT_FOUND = "not_found"  # the task or dead letter named does not exist
    UNAVAILABLE = "unavailable"  # the node could not commit the request (lost leadership): retry
    NOT_HELLO = "not_hello"  # a worker message arrived before its hello
    INTERNAL = "internal"  # the node failed to handle a valid request (a bug): report it


# ---------------------------------------------------------------------------------------------
# Codec

_packer = msgpack.Packer(use_bin_type=True, datetime=False)


def encode(message: dict[str, Any]) -> bytes:
    """Pack a message map; the caller has already put "t" in it."""
    message["v"] = VERSION
    packed: bytes = _packer.pack(message)
    return packed


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Unpack one frame into a map with a known version and a type string."""
    if len(frame) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame of {len(frame)} bytes exceeds the limit of {max_bytes}")
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame is not valid msgpack: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a msgpack map")
    version = message.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"unsupported protocol version {version!r}; speak {VERSION}",
                            request_id(message))
    kind = message.get("t")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "field 't' (message type) must be a string", request_id(message))
    return message


def check_packable(value: Any, what: str) -> None:
    """Raise TypeError naming `what` unless `value` is made only of msgpack types."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            raise TypeError(f"{what} is an integer outside msgpack's 64-bit range")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_packable(item, f"{what}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, bytes)):
                raise TypeError(f"{what} has a key {key!r} of type {type(key).__name__}; use str keys")
            check_packable(item, f"{what}[{key!r}]")
        return
    raise TypeError(f"{what} is of type {type(value).__name__}, which is not a msgpack value "
                    "(use None, bool, int, float, str, bytes, list or dict)")


# ---------------------------------------------------------------------------------------------
# Field validation


def _get(msg: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any = ..., where: str = "") -> Any:
    value = msg.get(name, default)
    label = f"{where}{name}"
    if value is ...:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{label}' is required")
    if value is default and default is not ...:
        return value
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{label}' must be {_names(types)}, not bool")
    if not isinstance(value, types):
        raise ProtocolError(ErrorCode.BAD_FIELD,
                            f"field '{label}' must be {_names(types)}, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{label}' must be a finite number")
    return value


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _nonneg(value: float | int, label: str) -> Any:
    if value < 0:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{label}' must not be negative")
    return value


def _str_id(msg: dict[str, Any], name: str, where: str = "") -> str:
    value: str = _get(msg, name, str, where=where)
    if not value or len(value) > 200:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}{name}' must be 1 to 200 characters")
    return value


NUMBER = (int, float)
# What a key value (of a per-key limit, a lane, a weight) may be: it names a bucket, so a scalar.
KEY_VALUE_TYPES = (str, int, float, bool, bytes, type(None))


# ---------------------------------------------------------------------------------------------
# Task envelope (client -> coordinator, inside "submit")


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

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": self.id, "actor": self.actor, "args": self.args, "kwargs": self.kwargs}
        for name in ("keys", "delay", "priority", "eta", "expires_in", "expires_at", "idempotency_key"):
            value = getattr(self, name)
            if value:
                wire[name] = value
        return wire


def parse_envelope(raw: Any, where: str) -> Envelope:
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}' must be a map (a task envelope)")
    kwargs = _get(raw, "kwargs", dict, {}, where=where + ".")
    if not all(isinstance(k, str) for k in kwargs):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}.kwargs' must have string keys")
    return Envelope(
        id=_str_id(raw, "id", where + "."),
        actor=_str_id(raw, "actor", where + "."),
        args=list(_get(raw, "args", (list, tuple), [], where=where + ".")),
        kwargs=kwargs,
        keys=_keys(raw, where),
        delay=float(_nonneg(_get(raw, "delay", NUMBER, 0.0, where=where + "."), where + ".delay")),
        priority=_get(raw, "priority", int, 0, where=where + "."),
        eta=_optional_float(raw, "eta", where),
        expires_in=_optional_float(raw, "expires_in", where),
        expires_at=_optional_float(raw, "expires_at", where),
        idempotency_key=_get(raw, "idempotency_key", str, None, where=where + "."),
    )


def _str_keys(value: dict[str, Any], label: str) -> dict[str, Any]:
    if not all(isinstance(k, str) for k in value):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{label}' must have string keys")
    return value


def _keys(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Key values for per-key limits: string names, scalar values (they name buckets and lanes)."""
    keys: dict[str, Any] = _get(raw, "keys", dict, {}, where=where + ".")
    for name, value in keys.items():
        if not isinstance(name, str) or not isinstance(value, KEY_VALUE_TYPES):
            raise ProtocolError(ErrorCode.BAD_FIELD,
                                f"field '{where}.keys' must map names to scalars (str, int, float, bool, bytes, nil)")
    return keys


def _optional_float(raw: dict[str, Any], name: str, where: str) -> float | None:
    value = _get(raw, name, NUMBER, None, where=where + ".")
    return None if value is None else float(_nonneg(value, f"{where}.{name}"))


# ---------------------------------------------------------------------------------------------
# Incoming messages, typed. Each parse_* takes a decoded map and returns one of these.


@dataclass(slots=True)
class Submit:
    rid: int
    tasks: list[Envelope]


@dataclass(slots=True)
class Wait:
    rid: int
    id: str
    timeout: float  # how long the coordinator holds the request before answering "pending"


@dataclass(slots=True)
class Cancel:
    rid: int
    id: str


@dataclass(slots=True)
class Status:
    rid: int
    local: bool = False  # answer with this node's own view even when it is not the leader


@dataclass(slots=True)
class DlqList:
    rid: int
    limit: int


@dataclass(slots=True)
class DlqShow:
    rid: int
    id: str


@dataclass(slots=True)
class DlqReplay:
    rid: int
    ids: list[str] | None  # None: all


@dataclass(slots=True)
class DlqPurge:
    rid: int
    ids: list[str] | None  # None: all


@dataclass(slots=True)
class ActorSpec:
    name: str
    options: dict[str, Any]


@dataclass(slots=True)
class Hello:
    worker_id: str
    actors: list[ActorSpec]
    slots: int  # free slots right now
    concurrency: int
    running: list[tuple[str, int]]  # (task id, attempt) the worker still runs (after a failover)


@dataclass(slots=True)
class Heartbeat:
    pass


@dataclass(slots=True)
class Outcome:
    id: str
    attempt: int
    ok: bool
    value: Any = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    retry_delay: float | None = None  # set when the handler raised qrt.Retry(delay=...)
    retryable: bool = True


@dataclass(slots=True)
class Done:
    outcomes: list[Outcome]
    credit: int  # slots freed by these outcomes that the worker offers again


@dataclass(slots=True)
class Credit:
    n: int


@dataclass(slots=True)
class Drain:
    """The worker stops taking tasks (it finishes what it runs)."""


@dataclass(slots=True)
class Bye:
    """The worker leaves; the tasks it still runs go back to the queue without counting as lost."""

    running: list[tuple[str, int]]


@dataclass(slots=True)
class LimitsShow:
    rid: int


@dataclass(slots=True)
class LimitsSet:
    rid: int
    actor: str
    rate: tuple[int, float] | None  # the actor-wide rate, or with `key` the rate of that key value
    key: Any  # a key value (scalar), or None
    concurrency: int | None  # the actor-wide concurrency limit
    weight: int | None = None  # with `key`: that value's tasks per round-robin turn


@dataclass(slots=True)
class LimitsReset:
    rid: int
    actor: str


@dataclass(slots=True)
class QueuePause:
    rid: int
    actor: str
    paused: bool


@dataclass(slots=True)
class QueuePurge:
    rid: int
    actor: str


@dataclass(slots=True)
class CronAdd:
    rid: int
    name: str
    actor: str
    expr: str
    tz: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class CronRemove:
    rid: int
    name: str


@dataclass(slots=True)
class CronList:
    rid: int


OperatorMessage = LimitsSet | LimitsReset | QueuePause | QueuePurge | CronAdd | CronRemove
ClientMessage = (Submit | Wait | Cancel | Status | DlqList | DlqShow | DlqReplay | DlqPurge | LimitsShow | LimitsSet
                 | LimitsReset | QueuePause | QueuePurge | CronAdd | CronRemove | CronList)
WorkerMessage = Hello | Heartbeat | Done | Credit | Drain | Bye

# Options a worker may register for an actor, and their types; unknown options are refused so a
# typo does not silently fall back to a default.
ACTOR_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "retries": (int,),
    "timeout": NUMBER,
    "result_ttl": NUMBER,
    "max_worker_losses": (int,),
    "rate_limits": (list,),  # [[n, period seconds, key name or nil], ...]
    "concurrency": (list,),  # [[n, key name or nil], ...]
    "cron": (str,),  # the actor fires itself on this schedule (checked by the coordinator)
    "tz": (str,),
    "missed": (str,),  # "run" or "skip"
    "weights": (list,),  # [[key value, tasks per round-robin turn], ...]
}


def check_limits(options: dict[str, Any], where: str) -> None:
    """Validate the shape of the `rate_limits` and `concurrency` options."""
    for i, item in enumerate(options.get("rate_limits", [])):
        if not (isinstance(item, list) and len(item) == 3 and type(item[0]) is int and item[0] > 0
                and isinstance(item[1], NUMBER) and not isinstance(item[1], bool) and 0 < item[1] < math.inf
                and (item[2] is None or isinstance(item[2], str))):
            raise ProtocolError(ErrorCode.BAD_FIELD,
                                f"field '{where}.rate_limits[{i}]' must be [n > 0, period > 0, key or nil]")
    for i, item in enumerate(options.get("weights", [])):
        if not (isinstance(item, list) and len(item) == 2 and type(item[1]) is int and item[1] >= 1
                and isinstance(item[0], KEY_VALUE_TYPES)):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}.weights[{i}]' must be [key value, n >= 1]")
    for i, item in enumerate(options.get("concurrency", [])):
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and item[0] > 0
                and (item[1] is None or isinstance(item[1], str))):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}.concurrency[{i}]' must be [n > 0, key or nil]")


def _rid(msg: dict[str, Any]) -> int:
    return int(_get(msg, "rid", int))


def _ids_or_all(msg: dict[str, Any]) -> list[str] | None:
    if msg.get("all") is True:
        return None
    ids = _get(msg, "ids", list)
    for i, item in enumerate(ids):
        if not isinstance(item, str):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'ids[{i}]' must be a string")
    return list(ids)


def _parse_submit(m: dict[str, Any]) -> Submit:
    raw = _get(m, "tasks", list)
    if not raw:
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'tasks' must hold at least one task")
    return Submit(_rid(m), [parse_envelope(t, f"tasks[{i}]") for i, t in enumerate(raw)])


def _parse_wait(m: dict[str, Any]) -> Wait:
    timeout = float(_nonneg(_get(m, "timeout", NUMBER, 30.0), "timeout"))
    return Wait(_rid(m), _str_id(m, "id"), min(timeout, 3600.0))


def _parse_actor(raw: Any, where: str) -> ActorSpec:
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}' must be a map")
    options = _get(raw, "options", dict, {}, where=where + ".")
    for key, value in options.items():
        types = ACTOR_OPTION_TYPES.get(key)
        if types is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}.options' has unknown option {key!r}")
        _get(options, key, types, where=where + ".options.")
        if key == "missed" and value not in ("run", "skip"):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}.options.missed' must be 'run' or 'skip'")
        if isinstance(value, (list, str)):
            continue
        _nonneg(value, f"{where}.options.{key}")
        if key == "timeout" and value == 0:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}.options.timeout' must be positive")
    check_limits(options, where + ".options")
    return ActorSpec(_str_id(raw, "name", where + "."), options)


def _running(m: dict[str, Any]) -> list[tuple[str, int]]:
    running = []
    for i, item in enumerate(_get(m, "running", list, [])):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and type(item[1]) is int):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'running[{i}]' must be [task id, attempt]")
        running.append((item[0], item[1]))
    return running


def _parse_limits_set(m: dict[str, Any]) -> LimitsSet:
    rate = _get(m, "rate", list, None)
    if rate is not None and not (len(rate) == 2 and type(rate[0]) is int and rate[0] > 0
                                 and isinstance(rate[1], NUMBER) and not isinstance(rate[1], bool)
                                 and 0 < rate[1] < math.inf):
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'rate' must be [n > 0, period seconds > 0]")
    key = m.get("key")
    if not isinstance(key, KEY_VALUE_TYPES):
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'key' must be a scalar key value")
    weight = _get(m, "weight", int, None)
    if weight is not None and (weight < 1 or key is None):
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'weight' must be at least 1 and needs 'key'")
    if key is not None and rate is None and weight is None:
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'key' needs 'rate' or 'weight': it sets them for one value")
    concurrency = _get(m, "concurrency", int, None)
    if concurrency is not None and concurrency < 1:
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'concurrency' must be at least 1")
    if rate is None and concurrency is None and weight is None:
        raise ProtocolError(ErrorCode.BAD_FIELD, "give 'rate', 'concurrency' or 'weight'")
    return LimitsSet(_rid(m), _str_id(m, "actor"), None if rate is None else (rate[0], float(rate[1])), key,
                     concurrency, weight)


def _parse_hello(m: dict[str, Any]) -> Hello:
    running = _running(m)
    return Hello(
        worker_id=_str_id(m, "worker_id"),  # also its routing id: ZeroMQ allows up to 255 bytes
        actors=[_parse_actor(a, f"actors[{i}]") for i, a in enumerate(_get(m, "actors", list))],
        slots=_nonneg(_get(m, "slots", int), "slots"),
        concurrency=_nonneg(_get(m, "concurrency", int), "concurrency"),
        running=running,
    )


def _parse_outcome(raw: Any, where: str) -> Outcome:
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{where}' must be a map")
    p = where + "."
    ok = _get(raw, "ok", bool, where=p)
    delay = _get(raw, "retry_delay", NUMBER, None, where=p)
    return Outcome(
        id=_str_id(raw, "id", p),
        attempt=_get(raw, "attempt", int, where=p),
        ok=ok,
        value=raw.get("value"),
        error_type=_get(raw, "error_type", str, "", where=p),
        message=_get(raw, "message", str, "", where=p),
        traceback=_get(raw, "traceback", str, "", where=p),
        retry_delay=None if delay is None else float(_nonneg(delay, p + "retry_delay")),
        retryable=_get(raw, "retryable", bool, True, where=p),
    )


def _parse_done(m: dict[str, Any]) -> Done:
    outcomes = [_parse_outcome(o, f"outcomes[{i}]") for i, o in enumerate(_get(m, "outcomes", list))]
    return Done(outcomes, _nonneg(_get(m, "credit", int, 0), "credit"))


_PARSERS: dict[str, Any] = {
    "submit": _parse_submit,
    "wait": _parse_wait,
    "cancel": lambda m: Cancel(_rid(m), _str_id(m, "id")),
    "status": lambda m: Status(_rid(m), _get(m, "local", bool, False)),
    "dlq_list": lambda m: DlqList(_rid(m), _nonneg(_get(m, "limit", int, 100), "limit")),
    "dlq_show": lambda m: DlqShow(_rid(m), _str_id(m, "id")),
    "dlq_replay": lambda m: DlqReplay(_rid(m), _ids_or_all(m)),
    "dlq_purge": lambda m: DlqPurge(_rid(m), _ids_or_all(m)),
    "limits": lambda m: LimitsShow(_rid(m)),
    "limits_set": _parse_limits_set,
    "limits_reset": lambda m: LimitsReset(_rid(m), _str_id(m, "actor")),
    "queue_pause": lambda m: QueuePause(_rid(m), _str_id(m, "actor"), _get(m, "paused", bool)),
    "queue_purge": lambda m: QueuePurge(_rid(m), _str_id(m, "actor")),
    "cron_add": lambda m: CronAdd(_rid(m), _str_id(m, "name"), _str_id(m, "actor"), _str_id(m, "expr"),
                                  _get(m, "tz", str, "UTC"), list(_get(m, "args", (list, tuple), [])),
                                  _str_keys(_get(m, "kwargs", dict, {}), "kwargs")),
    "cron_remove": lambda m: CronRemove(_rid(m), _str_id(m, "name")),
    "cron_list": lambda m: CronList(_rid(m)),
    "hello": _parse_hello,
    "heartbeat": lambda m: Heartbeat(),
    "done": _parse_done,
    "credit": lambda m: Credit(_nonneg(_get(m, "n", int), "n")),
    "drain": lambda m: Drain(),
    "bye": lambda m: Bye(_running(m)),
}


def parse(message: dict[str, Any]) -> ClientMessage | WorkerMessage:
    """Validate a decoded map field by field and return its typed message."""
    parser = _PARSERS.get(message["t"])
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {message['t']!r}", request_id(message))
    try:
        result: ClientMessage | WorkerMessage = parser(message)
    except ProtocolError as exc:
        exc.rid = request_id(message)
        raise
    return result


def request_id(message: dict[str, Any]) -> int | None:
    """The "rid" of a (possibly invalid) request, so an error reply can name it."""
    rid = message.get("rid")
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def error(code: str, message: str, rid: int | None = None) -> bytes:
    body: dict[str, Any] = {"t": "error", "code": code, "message": message}
    if rid is not None:
        body["rid"] = rid
    return encode(body)
