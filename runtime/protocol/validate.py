"""Field readers: each takes a decoded map and a field name, and returns the value or raises.

Every error is a `ProtocolError` with code `bad_field`, the field's path as data (`field`, e.g.
``tasks[0].actor``) and a message that names it and speaks msgpack's types (int, float, str, bin,
bool, nil, array, map), since a client in another language never saw a Python type name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

from ..cron_expr import CronExpr, check_zone
from ..defaults import MAX_KEYS_PER_TASK, MAX_NESTING
from ..errors import ProtocolError
from .codec import ErrorCode

NUMBER = (int, float)
# What a key value (of a per-key limit, a lane, a weight) may be: it names a bucket, so a scalar.
KEY_VALUE_TYPES = (str, int, float, bool, bytes, type(None))
# Ids (task ids, actor names, worker ids) are 1 to this many characters.
MAX_ID_CHARS = 200

_REQUIRED: Any = ...
_WIRE_NAMES: dict[type, str] = {int: "int", float: "float", str: "str", bytes: "bin", bool: "bool",
                                list: "array", tuple: "array", dict: "map", type(None): "nil"}


def wire_type(value: Any) -> str:
    """The msgpack name of a decoded value's type."""
    return _WIRE_NAMES.get(type(value), type(value).__name__)


def _names(types: type | tuple[type, ...]) -> str:
    names: list[str] = []
    for t in types if isinstance(types, tuple) else (types,):
        if _WIRE_NAMES.get(t, t.__name__) not in names:
            names.append(_WIRE_NAMES.get(t, t.__name__))
    return " or ".join(names)


def bad(path: str, problem: str) -> ProtocolError:
    """The error for field `path`: ``field 'path' <problem>``."""
    return ProtocolError(ErrorCode.BAD_FIELD, f"field '{path}' {problem}", field=path)


def get(msg: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any = _REQUIRED,
        where: str = "") -> Any:
    """`msg[name]` of one of `types` (a bool is never a number; floats are finite), else `default`.

    A field sent as nil counts as absent only where the default is None. (Every field of every
    frame passes here: the common case, a value of the right type, costs two checks.)
    """
    value: Any = msg.get(name, default)
    if value is default:
        if value is _REQUIRED:
            raise bad(f"{where}{name}", "is required")
        return value
    kind = type(value)
    if kind is not bool and (kind is not float or value - value == 0.0) and isinstance(value, types):
        return value  # (x - x is 0.0 for every finite float; nan for inf and nan)
    path = f"{where}{name}"
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in allowed:
        raise bad(path, f"must be {_names(types)}, not bool")
    if not isinstance(value, allowed):
        raise bad(path, f"must be {_names(types)}, not {wire_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(path, "must be a finite number")
    return value


# Readers for the field tables of messages (`Message.READERS`): each is `reader(map, name)`.
Reader = Callable[[dict[str, Any], str], Any]


def of_type(types: type | tuple[type, ...], default: Any = _REQUIRED) -> Reader:
    """A field of one of `types`."""
    return lambda msg, name: get(msg, name, types, default)


def flag(default: Any = _REQUIRED) -> Reader:
    """A bool field."""
    return of_type(bool, default)


def count(default: Any = _REQUIRED) -> Reader:
    """A non-negative int field."""
    return lambda msg, name: nonneg(get(msg, name, int, default), name)


def ids_or_all(msg: dict[str, Any], name: str) -> list[str] | None:
    """`"all": true` (None: every one), or a list of str ids in field `name`."""
    return None if msg.get("all") is True else str_list(msg, name)


# Quick checks for the hottest messages (`run` tasks, outcomes, results, envelopes): they accept a
# value only where the field readers would too, and leave anything else to the readers, which name
# the first bad field. (Reading every field through `get` cost the worker and the client some 5 µs
# a task: measured, 9 % of bench.throughput.)
def is_id(value: Any) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    kind = type(value)
    return kind is int or (kind is float and value - value == 0.0)


def has_str_keys(value: dict[Any, Any]) -> bool:
    return all(type(k) is str for k in value)


def is_trace_context(value: Any) -> bool:
    """The common trace context (`traceparent` alone, or with `tracestate`), checked quickly:
    what `trace_context` would accept."""
    if type(value) is not dict or not 0 < len(value) <= 2:
        return False
    for name, text in value.items():
        if type(name) is not str or type(text) is not str or len(name) > 64 or len(text) > MAX_TRACE_FIELD:
            return False
    return True


_CONTAINERS = (list, tuple, dict)


def within_nesting(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether `value` nests arrays and maps at most `limit` levels deep (a flat list is one).

    Depth first, one iterator per level: memory grows with the depth, never with the size.
    """
    if type(value) not in _CONTAINERS:
        return True
    stack = [_children(value)]
    while stack:
        for item in stack[-1]:
            if type(item) in _CONTAINERS:
                if len(stack) >= limit:
                    return False
                stack.append(_children(item))
                break
        else:
            stack.pop()
    return True


def _children(container: Any) -> Iterator[Any]:
    return itertools.chain(container.keys(), container.values()) if type(container) is dict else iter(container)


def payload(msg: dict[str, Any], name: str, types: type | tuple[type, ...] | None, default: Any = _REQUIRED,
            where: str = "") -> Any:
    """A field of task data (arguments, a result), of `types` (None: any msgpack value), nested at
    most MAX_NESTING deep."""
    value = msg.get(name, default) if types is None else get(msg, name, types, default, where)
    if not within_nesting(value):
        raise bad(f"{where}{name}", f"is nested deeper than {MAX_NESTING} levels")
    return value


def nonneg(value: Any, path: str) -> Any:
    if value < 0:
        raise bad(path, "must not be negative")
    return value


def str_id(msg: dict[str, Any], name: str, where: str = "") -> str:
    value: str = get(msg, name, str, where=where)
    if not value or len(value) > MAX_ID_CHARS:
        raise bad(f"{where}{name}", f"must be 1 to {MAX_ID_CHARS} characters")
    return value


def optional_number(msg: dict[str, Any], name: str, where: str = "") -> float | None:
    value = get(msg, name, NUMBER, None, where=where)
    return None if value is None else float(nonneg(value, f"{where}{name}"))


def str_keys(value: dict[Any, Any], path: str) -> dict[str, Any]:
    if not all(isinstance(k, str) for k in value):
        raise bad(path, "must have str keys")
    return value


def str_list(msg: dict[str, Any], name: str, where: str = "") -> list[str]:
    items: list[Any] = get(msg, name, list, where=where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise bad(f"{where}{name}[{i}]", f"must be str, not {wire_type(item)}")
    return list(items)


def key_values(msg: dict[str, Any], where: str) -> dict[str, Any]:
    """Key values for per-key limits: str names, scalar values (they name buckets and lanes)."""
    keys: dict[Any, Any] = get(msg, "keys", dict, {}, where=where)
    if len(keys) > MAX_KEYS_PER_TASK:
        raise bad(f"{where}keys", f"holds {len(keys)} names: at most {MAX_KEYS_PER_TASK}")
    for name, value in keys.items():
        if not isinstance(name, str) or not isinstance(value, KEY_VALUE_TYPES):
            raise bad(f"{where}keys", "must map str names to scalars (str, int, float, bool, bin, nil)")
    return keys


def leases(msg: dict[str, Any], name: str) -> list[tuple[str, int]]:
    """A list of ``[task id, attempt]`` pairs."""
    out = []
    for i, item in enumerate(get(msg, name, list, [])):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and type(item[1]) is int):
            raise bad(f"{name}[{i}]", "must be [task id, attempt]")
        out.append((item[0], item[1]))
    return out


def rate(value: Any) -> bool:
    """Whether `value` is ``[n > 0, period seconds > 0]``."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and type(value[0]) is int and value[0] > 0
            and isinstance(value[1], NUMBER) and not isinstance(value[1], bool) and 0 < value[1] < math.inf)


def check_limits(options: dict[str, Any], where: str) -> None:
    """Validate the shape of the `rate_limits`, `weights` and `concurrency` actor options."""
    for i, item in enumerate(options.get("rate_limits", [])):
        if not (isinstance(item, list) and len(item) == 3 and rate(item[:2])
                and (item[2] is None or isinstance(item[2], str))):
            raise bad(f"{where}.rate_limits[{i}]", "must be [n > 0, period > 0, key or nil]")
    for i, item in enumerate(options.get("weights", [])):
        if not (isinstance(item, list) and len(item) == 2 and type(item[1]) is int and item[1] >= 1
                and isinstance(item[0], KEY_VALUE_TYPES)):
            raise bad(f"{where}.weights[{i}]", "must be [key value, n >= 1]")
    for i, item in enumerate(options.get("concurrency", [])):
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and item[0] > 0
                and (item[1] is None or isinstance(item[1], str))):
            raise bad(f"{where}.concurrency[{i}]", "must be [n > 0, key or nil]")


def cron(expr: str, tz: str, path: str, tz_path: str, context: str = "") -> None:
    """Check a cron expression and its time zone with the one parser, the one schedules run on."""
    try:
        check_zone(tz)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{context}{exc}", field=tz_path) from None
    try:
        CronExpr.parse(expr, tz)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{context}{exc}", field=path) from None


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


MAX_TRACE_FIELDS = 8
MAX_TRACE_FIELD = 512


def trace_context(msg: dict[str, Any], where: str) -> dict[str, str] | None:
    """A W3C trace context carrier (`traceparent`, `tracestate`, ...): a few short str fields."""
    carrier: dict[Any, Any] | None = get(msg, "trace", dict, None, where=where)
    if carrier is None:
        return None
    if len(carrier) > MAX_TRACE_FIELDS:
        raise bad(f"{where}trace", f"holds {len(carrier)} fields: at most {MAX_TRACE_FIELDS}")
    for name, value in carrier.items():
        if not isinstance(name, str) or not isinstance(value, str) or len(name) > 64 \
                or len(value) > MAX_TRACE_FIELD:
            raise bad(f"{where}trace", f"must map str names (64 characters at most) to str values "
                                       f"({MAX_TRACE_FIELD} at most)")
    return carrier or None
