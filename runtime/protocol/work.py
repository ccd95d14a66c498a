"""The worker's messages (docs/protocol.md §6), typed both ways: hello to bye, and run to ack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from ..defaults import MAX_ACTORS_PER_HELLO
from . import validate as v
from .messages import Message

# Options a worker may register for an actor, and their types; unknown options are refused so a
# typo does not silently fall back to a default.
ACTOR_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "retries": (int,),
    "timeout": v.NUMBER,
    "result_ttl": v.NUMBER,
    "max_worker_losses": (int,),
    "rate_limits": (list,),  # [[n, period seconds, key name or nil], ...]
    "concurrency": (list,),  # [[n, key name or nil], ...]
    "cron": (str,),  # the actor fires itself on this schedule
    "tz": (str,),
    "missed": (str,),  # "run" or "skip"
    "weights": (list,),  # [[key value, tasks per round-robin turn], ...]
}


# ---------------------------------------------------------------------------------------------
# Worker -> coordinator


@dataclass(slots=True)
class ActorSpec:
    name: str
    options: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options}

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> ActorSpec:
        if not isinstance(raw, dict):
            raise v.bad(where, "must be a map")
        name = v.str_id(raw, "name", where + ".")
        p = where + ".options"
        options = v.get(raw, "options", dict, {}, where=where + ".")
        for key, value in options.items():
            types = ACTOR_OPTION_TYPES.get(key)
            if types is None:
                raise v.bad(p, f"has unknown option {key!r}")
            v.get(options, key, types, where=p + ".")
            if key == "missed" and value not in ("run", "skip"):
                raise v.bad(p + ".missed", "must be 'run' or 'skip'")
            if isinstance(value, (list, str)):
                continue
            v.nonneg(value, f"{p}.{key}")
            if key == "timeout" and value == 0:
                raise v.bad(p + ".timeout", "must be positive")
        v.check_limits(options, p)
        if "cron" in options:
            v.cron(options["cron"], options.get("tz", "UTC"), p + ".cron", p + ".tz", f"actor {name!r}: ")
        return cls(name, options)


@dataclass(slots=True)
class Hello(Message):
    TYPE = "hello"
    worker_id: str  # also its ZeroMQ routing id
    actors: list[ActorSpec]
    slots: int  # free slots right now
    concurrency: int
    running: list[tuple[str, int]] = field(default_factory=list)  # (task id, attempt) still held
    # When the worker process started (epoch s): the options of the worker started last are in
    # force for an actor, so an old worker reconnecting in a rolling deploy cannot undo new ones.
    started: float = 0.0
    acks_in_run: bool = False  # it reads `Run.acks`: the leader may send acks there, not as `ack` frames

    def to_wire(self) -> dict[str, Any]:
        wire = {"t": self.TYPE, "worker_id": self.worker_id, "slots": self.slots, "concurrency": self.concurrency,
                "actors": [a.to_wire() for a in self.actors], "running": [list(r) for r in self.running],
                "started": self.started}
        if self.acks_in_run:
            wire["acks_in_run"] = True
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        running = v.leases(m, "running")
        worker_id = v.str_id(m, "worker_id")
        # It is also the ZeroMQ routing id, which ZeroMQ caps at 255 bytes: 200 characters pass
        # the id check above but may take up to 800 bytes of UTF-8.
        if len(worker_id.encode()) > 255:
            raise v.bad("worker_id", "must be at most 255 bytes of UTF-8 (it is the ZeroMQ routing id)")
        actors = v.get(m, "actors", list)
        if len(actors) > MAX_ACTORS_PER_HELLO:
            raise v.bad("actors", f"holds {len(actors)} actors: at most {MAX_ACTORS_PER_HELLO}")
        return cls(worker_id,
                   [ActorSpec.from_wire(a, f"actors[{i}]") for i, a in enumerate(actors)],
                   v.nonneg(v.get(m, "slots", int), "slots"), v.nonneg(v.get(m, "concurrency", int), "concurrency"),
                   running, v.nonneg(v.get(m, "started", v.NUMBER, 0.0), "started"),
                   v.get(m, "acks_in_run", bool, False))


@dataclass(slots=True)
class Heartbeat(Message):
    """A worker is alive. With `running` (what it holds: tasks it runs and outcomes not yet
    acknowledged, as in `hello`), the leader reconciles its leases with them: a lease the worker
    lacks is sent again, a task the worker runs without a lease is cancelled."""

    TYPE = "heartbeat"
    running: list[tuple[str, int]] | None = None  # None: an older worker, nothing to reconcile
    seq: int | None = None  # echoed in the `hb` that answers it
    free: int | None = None  # its free slots whose credit it has sent (the leader's count is checked)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": self.TYPE}
        if self.running is not None:
            wire["running"] = [list(r) for r in self.running]
        if self.seq is not None:
            wire["seq"] = self.seq
        if self.free is not None:
            wire["free"] = self.free
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        free = v.get(m, "free", int, None)
        return cls(v.leases(m, "running") if "running" in m else None, v.get(m, "seq", int, None),
                   None if free is None else v.nonneg(free, "free"))


_SUCCESS_FIELDS = frozenset({"id", "attempt", "ok", "value"})


@dataclass(slots=True)
class Outcome:
    """How one attempt of a task ended, as the worker reports it and the state machine reads it."""

    id: str
    attempt: int
    ok: bool
    value: Any = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    retry_delay: float | None = None  # set when the handler raised qrt.Retry(delay=...)
    retryable: bool = True

    def to_wire(self) -> dict[str, Any]:
        if self.ok:
            return {"id": self.id, "attempt": self.attempt, "ok": True, "value": self.value}
        wire: dict[str, Any] = {"id": self.id, "attempt": self.attempt, "ok": False, "error_type": self.error_type,
                                "message": self.message, "traceback": self.traceback, "retryable": self.retryable}
        if self.retry_delay is not None:
            wire["retry_delay"] = self.retry_delay
        return wire

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> Outcome:
        return cls.quick(raw) or cls.read(raw, where)

    @classmethod
    def quick(cls, raw: Any) -> Outcome | None:
        """A success, accepted with a few checks (None: let `read` name what is wrong)."""
        if type(raw) is dict and raw.get("ok") is True and raw.keys() <= _SUCCESS_FIELDS:
            task_id, attempt = raw.get("id"), raw.get("attempt")
            value = raw.get("value")
            if v.is_id(task_id) and type(attempt) is int and v.within_nesting(value):
                return cls(task_id, attempt, True, value)
        return None

    @classmethod
    def read(cls, raw: Any, where: str) -> Outcome:
        """Every field checked, the first bad one named."""
        if not isinstance(raw, dict):
            raise v.bad(where, "must be a map")
        p = where + "."
        ok = v.get(raw, "ok", bool, where=p)
        return cls(
            id=v.str_id(raw, "id", p), attempt=v.get(raw, "attempt", int, where=p), ok=ok,
            value=v.payload(raw, "value", None, None, where=p), error_type=v.get(raw, "error_type", str, "", where=p),
            message=v.get(raw, "message", str, "", where=p), traceback=v.get(raw, "traceback", str, "", where=p),
            retry_delay=v.optional_number(raw, "retry_delay", p),
            retryable=v.get(raw, "retryable", bool, True, where=p),
        )


@dataclass(slots=True)
class Done(Message):
    TYPE = "done"
    outcomes: list[Outcome]
    credit: int = 0  # slots freed by these outcomes that the worker offers again

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TYPE, "outcomes": [o.to_wire() for o in self.outcomes], "credit": self.credit}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        outcomes = [Outcome.from_wire(o, f"outcomes[{i}]") for i, o in enumerate(v.get(m, "outcomes", list))]
        return cls(outcomes, v.nonneg(v.get(m, "credit", int, 0), "credit"))


@dataclass(slots=True)
class Credit(Message):
    TYPE = "credit"
    n: int
    READERS = {"n": v.count()}


@dataclass(slots=True)
class Drain(Message):
    """The worker stops taking tasks (it finishes what it runs)."""

    TYPE = "drain"


@dataclass(slots=True)
class Bye(Message):
    """The worker leaves; the tasks it still runs go back to the queue without counting as lost."""

    TYPE = "bye"
    running: list[tuple[str, int]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TYPE, "running": [list(r) for r in self.running]}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(v.leases(m, "running"))


# ---------------------------------------------------------------------------------------------
# Coordinator -> worker


@dataclass(slots=True)
class Welcome(Message):
    TYPE = "welcome"
    worker_id: str
    heartbeat_interval: float
    lease_timeout: float
    now: float | None = None  # the leader's clock

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(v.get(m, "worker_id", str), float(v.get(m, "heartbeat_interval", v.NUMBER)),
                   float(v.get(m, "lease_timeout", v.NUMBER)), v.get(m, "now", v.NUMBER, None))


@dataclass(slots=True)
class Hb(Message):
    """The leader's answer to a heartbeat, so an idle worker hears it too; with the heartbeat's
    `seq`, so that the worker knows when the heartbeat it answers was sent (its fence counts from then)."""

    TYPE = "hb"
    seq: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TYPE} if self.seq is None else {"t": self.TYPE, "seq": self.seq}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(v.get(m, "seq", int, None))


@dataclass(slots=True)
class RunTask:
    """One leased task in a `run`."""

    id: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    timeout: float
    term: int
    trace: dict[str, str] | None = None  # W3C trace context, when the task is traced (runtime/tracing.py)
    queued_at: float = 0.0  # when it was due (leader time): where the leader's queue span starts; not sent

    FIELDS: ClassVar[tuple[str, ...]] = ("id", "actor", "args", "kwargs", "attempt", "timeout", "term")

    def to_wire(self) -> dict[str, Any]:
        wire = {name: getattr(self, name) for name in self.FIELDS}
        if self.trace:
            wire["trace"] = self.trace
        return wire

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> RunTask:
        return cls.quick(raw) or cls.read(raw, where)

    @classmethod
    def quick(cls, raw: Any) -> RunTask | None:
        """The common task, accepted with a few checks (None: let `read` name what is wrong)."""
        if type(raw) is dict:
            task_id, actor, args, kwargs = raw.get("id"), raw.get("actor"), raw.get("args", []), raw.get("kwargs", {})
            attempt, timeout, term, trace = raw.get("attempt"), raw.get("timeout"), raw.get("term", 0), raw.get("trace")
            if (v.is_id(task_id) and v.is_id(actor) and type(args) is list and type(kwargs) is dict
                    and type(attempt) is int and type(term) is int and v.is_finite_number(timeout) and timeout > 0
                    and v.has_str_keys(kwargs) and v.within_nesting(args) and v.within_nesting(kwargs)
                    and (trace is None or v.is_trace_context(trace))):
                return cls(task_id, actor, args, kwargs, attempt, float(timeout), term, trace)
        return None

    @classmethod
    def read(cls, raw: Any, where: str) -> RunTask:
        """Every field checked, the first bad one named."""
        if not isinstance(raw, dict):
            raise v.bad(where, "must be a map")
        p = where + "."
        timeout = v.get(raw, "timeout", v.NUMBER, where=p)
        if timeout <= 0:
            raise v.bad(p + "timeout", "must be positive")
        return cls(v.str_id(raw, "id", p), v.str_id(raw, "actor", p), list(v.payload(raw, "args", list, [], where=p)),
                   v.str_keys(v.payload(raw, "kwargs", dict, {}, where=p), p + "kwargs"),
                   v.get(raw, "attempt", int, where=p), float(timeout), v.get(raw, "term", int, 0, where=p),
                   v.trace_context(raw, p))


@dataclass(slots=True)
class Run(Message):
    """Leases to run; `acks`: outcomes committed, as in `ack` (only to a worker that said
    `acks_in_run` in its hello)."""

    TYPE = "run"
    tasks: list[RunTask]
    acks: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": self.TYPE, "tasks": [t.to_wire() for t in self.tasks]}
        if self.acks:
            wire["acks"] = self.acks
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls([RunTask.from_wire(t, f"tasks[{i}]") for i, t in enumerate(v.get(m, "tasks", list))],
                   v.str_list(m, "acks") if "acks" in m else [])


@dataclass(slots=True)
class Ack(Message):
    """Outcomes committed (`ids`); with `bye`, the answer to a `bye`."""

    TYPE = "ack"
    ids: list[str]
    bye: bool | None = None

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(v.str_list(m, "ids"), v.get(m, "bye", bool, None))


@dataclass(slots=True)
class CancelRun(Message):
    """Stop the handler of a task this worker runs (not the client's `cancel`, which has a rid)."""

    TYPE = "cancel"
    id: str
    READERS = {"id": v.str_id}
