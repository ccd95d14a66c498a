"""The history's requests (docs/protocol.md §5, "Task history"): answered by any node, follower
included, from its own copy of the history; and `describe`, a task's present state from the
node's replica of the state machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from . import validate as v
from .messages import Request, rid_of
from .replies import Reply

STATES = ("queued", "delayed", "running", "succeeded", "failed", "dead", "cancelled", "expired")
GROUPS = ("actor", "worker", "key", "minute")
MAX_LIMIT = 1000


def _text(msg: dict[str, Any], name: str) -> str | None:
    value = v.get(msg, name, str, None)
    if value is not None and not 0 < len(value) <= v.MAX_ID_CHARS:
        raise v.bad(name, f"must be 1 to {v.MAX_ID_CHARS} characters")
    return value  # type: ignore[no-any-return]


def _state(msg: dict[str, Any], name: str) -> str | None:
    value = _text(msg, name)
    if value is not None and value not in STATES:
        raise v.bad(name, f"must be one of {', '.join(STATES)}, not {value!r}")
    return value


def _key(msg: dict[str, Any], name: str) -> list[str] | None:
    """[NAME, VALUE]: a key value as text (non-strings as JSON), as --key NAME=VALUE gives it."""
    value = v.get(msg, name, list, None)
    if value is not None and (len(value) != 2 or not all(isinstance(x, str) and x for x in value)):
        raise v.bad(name, "must be [name, value], two non-empty strings")
    return value  # type: ignore[no-any-return]


def _limit(msg: dict[str, Any], name: str) -> int:
    value = v.nonneg(v.get(msg, name, int, 50), name)
    if not 1 <= value <= MAX_LIMIT:
        raise v.bad(name, f"must be 1 to {MAX_LIMIT}")
    return value  # type: ignore[no-any-return]


def _cursor(msg: dict[str, Any], name: str) -> int | None:
    """A page's cursor: an event number, which SQLite holds in a signed 64-bit int."""
    value = v.get(msg, name, int, None)
    if value is not None and not 0 <= value < 2**63:
        raise v.bad(name, "must be a cursor this node gave (0 to 2^63 - 1)")
    return value  # type: ignore[no-any-return]


FILTER_READERS: dict[str, v.Reader] = {
    "actor": _text, "state": _state, "worker": _text, "key": _key, "since": v.optional_number,
    "until": v.optional_number, "error": _text, "args": _text, "fingerprint": _text,
}


@dataclass(slots=True)
class _Filtered(Request):
    """The filters of `qrt tasks list` (all optional; every one given must hold)."""

    actor: str | None = None
    state: str | None = None
    worker: str | None = None
    key: list[str] | None = None
    since: float | None = None  # last activity at or after (epoch seconds)
    until: float | None = None  # and before
    error: str | None = None  # text in the error's type, message or traceback
    args: str | None = None  # text in the arguments
    fingerprint: str | None = None  # its error's fingerprint (a group of `dead_groups`)


@dataclass(slots=True)
class TasksList(_Filtered):
    TYPE = "tasks_list"
    limit: int = 50
    cursor: int | None = None  # the `next` of the previous page
    READERS = {**FILTER_READERS, "limit": _limit, "cursor": _cursor}


@dataclass(slots=True)
class TaskEvents(_Filtered):
    """A live tail: the events after cursor `after` (0: from now on) of the tasks the filters select."""

    TYPE = "task_events"
    after: int = 0
    limit: int = 500
    READERS = {**FILTER_READERS, "after": lambda m, n: _cursor(m, n) or 0, "limit": _limit}


@dataclass(slots=True)
class TaskShow(Request):
    TYPE = "task_show"
    id: str
    READERS = {"id": v.str_id}


@dataclass(slots=True)
class Stats(Request):
    TYPE = "stats"
    since: float
    until: float | None = None  # None: now
    by: str = "actor"
    actor: str | None = None  # only this actor's tasks (by actor or minute)

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        by = v.get(m, "by", str, "actor")
        if by not in GROUPS:
            raise v.bad("by", f"must be one of {', '.join(GROUPS)}, not {by!r}")
        actor = _text(m, "actor")
        if actor is not None and by not in ("actor", "minute"):
            raise v.bad("actor", f"narrows stats by actor or minute, not by {by}")
        return cls(v.get(m, "since", v.NUMBER), v.optional_number(m, "until"), by, actor, rid=rid_of(m))


@dataclass(slots=True)
class DeadGroups(Request):
    """The dead letters grouped by error fingerprint (type, normalised message, top frame)."""

    TYPE = "dead_groups"
    limit: int = 200
    READERS = {"limit": _limit}


@dataclass(slots=True)
class Describe(Request):
    TYPE = "describe"
    id: str
    READERS = {"id": v.str_id}


@dataclass(slots=True)
class HistoryJournal(Request):
    """Node to node: the history's events of batches another node missed (it installed a snapshot)."""

    TYPE = "history_journal"
    after: int  # event cursors (batch << 32 | index): after < n < before
    before: int
    limit: int = 5000
    READERS = {"after": v.count(), "before": v.count(), "limit": v.count(5000)}


@dataclass(slots=True)
class Answer(Reply):
    """The ``ok`` of a history request or `describe`: a map whose shape docs/protocol.md gives."""

    TYPE = "ok"
    body: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TYPE, "rid": self.rid, **self.body}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(rid_of(m), {k: value for k, value in m.items() if k not in ("t", "v", "rid")})


HISTORY_REQUESTS = (TasksList, TaskEvents, TaskShow, Stats, Describe, HistoryJournal, DeadGroups)
