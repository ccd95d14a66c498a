"""What the coordinator answers a client (docs/protocol.md §5), typed both ways like the requests.

`Redirect` and `Error` answer workers too. A client reads these with `parse_reply`, which checks
every field: what arrives at a client is validated like what arrives at the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from ..errors import ProtocolError
from . import validate as v
from .messages import Message, rid_of


@dataclass(slots=True)
class Reply(Message):
    rid: int

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(rid_of(m), **{name: read(m, name) for name, read in cls.READERS.items()})


@dataclass(slots=True)
class Accepted(Reply):
    TYPE = "accepted"
    ids: list[str]
    now: float | None = None  # the leader's clock when it committed: `eta` and `expires_at` use it

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(rid_of(m), v.str_list(m, "ids"), v.get(m, "now", v.NUMBER, None))


RESULT_STATES = ("succeeded", "failed", "cancelled", "expired", "not_found", "pending")


@dataclass(slots=True)
class Result(Reply):
    """A task's state for a `wait`; when it ended, its summary (docs/protocol.md §7.7)."""

    TYPE = "result"
    id: str
    state: str
    actor: str | None = None
    attempt: int | None = None
    value: Any = None
    error: dict[str, str] | None = None  # type, message, traceback
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def of(cls, rid: int, summary: dict[str, Any]) -> Result:
        """From a task summary (state.model.Task.summary)."""
        return cls(rid, **summary)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": self.TYPE, "rid": self.rid, "id": self.id, "state": self.state}
        for name in _RESULT_SUMMARY:
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        if self.state == "succeeded":
            wire["value"] = self.value  # a handler may return nil: still a value
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls.quick(m) or cls.read(m)

    @classmethod
    def quick(cls, m: dict[str, Any]) -> Self | None:
        """A result without an error, accepted with a few checks (None: let `read` name what is wrong)."""
        state, task_id, rid = m.get("state"), m.get("id"), m.get("rid")
        if not (type(state) is str and state in RESULT_STATES and type(task_id) is str and type(rid) is int
                and m.get("error") is None and v.within_nesting(m.get("value"))):
            return None
        summary = {}
        for name, kinds in _RESULT_KINDS:
            value = m.get(name)
            if value is not None:
                if type(value) not in kinds or (type(value) is float and value - value != 0.0):
                    return None
                summary[name] = value
        return cls(rid, task_id, state, value=m.get("value"), **summary)

    @classmethod
    def read(cls, m: dict[str, Any]) -> Self:
        """Every field checked, the first bad one named."""
        state = v.get(m, "state", str)
        if state not in RESULT_STATES:
            raise v.bad("state", f"must be one of {', '.join(RESULT_STATES)}")
        error = v.get(m, "error", dict, None)
        if error is not None:
            error = {name: v.get(error, name, str, "", where="error.") for name in ("type", "message", "traceback")}
        # Every result a client waits for passes here: the optional fields are read in one loop.
        summary = {name: v.get(m, name, types, None) for name, types in _RESULT_TYPES if name in m}
        return cls(rid_of(m), v.get(m, "id", str), state, value=v.payload(m, "value", None, None), error=error,
                   **summary)


# The summary's optional fields (besides value and error), and their types.
_RESULT_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("actor", str), ("attempt", int), ("submitted_at", v.NUMBER), ("started_at", v.NUMBER),
    ("finished_at", v.NUMBER))
_RESULT_KINDS = (("actor", (str,)), ("attempt", (int,)), ("submitted_at", (int, float)), ("started_at", (int, float)),
                 ("finished_at", (int, float)))
_RESULT_SUMMARY = ("actor", "attempt", "error", "submitted_at", "started_at", "finished_at")


@dataclass(slots=True)
class Counted(Reply):
    """The ``ok`` of a command that changes things: how many it touched (and which, for the DLQ)."""

    TYPE = "ok"
    n: int
    ids: list[str] | None = None

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(rid_of(m), v.nonneg(v.get(m, "n", int), "n"), v.str_list(m, "ids") if "ids" in m else None)


@dataclass(slots=True)
class StatusReply(Reply):
    """The ``ok`` of `status`: this node's view (coordinator/status.py builds it)."""

    TYPE = "ok"
    status: dict[str, Any]
    REQUIRED: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "node": str, "is_leader": bool, "term": int, "commit_index": int, "applied_batches": int, "digest": str,
        "nodes": list, "workers": list, "queues": dict, "dead_letters": int}

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TYPE, "rid": self.rid, **self.status}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        for name, types in cls.REQUIRED.items():
            v.get(m, name, types)
        v.get(m, "leader", str, None)
        v.get(m, "now", v.NUMBER, None)  # absent from coordinators older than the field
        v.get(m, "state_digest", dict, None)  # likewise
        return cls(rid_of(m), {k: value for k, value in m.items() if k not in ("t", "v", "rid")})


@dataclass(slots=True)
class DlqPage(Reply):
    TYPE = "ok"
    total: int
    entries: list[dict[str, Any]]
    arguments_truncated: bool

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        entries = v.get(m, "entries", list)
        if not all(isinstance(e, dict) for e in entries):
            raise v.bad("entries", "must hold maps (task summaries)")
        return cls(rid_of(m), v.get(m, "total", int), entries, v.get(m, "arguments_truncated", bool, False))


@dataclass(slots=True)
class DlqEntry(Reply):
    TYPE = "ok"
    entry: dict[str, Any]
    READERS = {"entry": v.of_type(dict)}


@dataclass(slots=True)
class LimitsReply(Reply):
    TYPE = "ok"
    actors: dict[str, Any]
    READERS = {"actors": v.of_type(dict)}


@dataclass(slots=True)
class CronEntries(Reply):
    TYPE = "ok"
    entries: list[dict[str, Any]]
    READERS = {"entries": v.of_type(list)}


@dataclass(slots=True)
class Redirect(Message):
    """To a client or worker that reached a follower: the leader's URL."""

    TYPE = "redirect"
    leader: str
    rid: int | None = None

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        leader = v.get(m, "leader", str)
        if not leader.startswith("tcp://"):
            raise v.bad("leader", "must be a tcp:// URL")
        return cls(leader, v.get(m, "rid", int, None))


@dataclass(slots=True)
class Error(Message):
    """A refusal: `code` is an ErrorCode; `field` names the bad field of a `bad_field`."""

    TYPE = "error"
    code: str
    message: str
    rid: int | None = None
    field: str | None = None

    @classmethod
    def of(cls, exc: ProtocolError) -> Error:
        return cls(exc.code, exc.message, exc.rid, exc.field)

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(v.get(m, "code", str), v.get(m, "message", str, ""), v.get(m, "rid", int, None),
                   v.get(m, "field", str, None))
