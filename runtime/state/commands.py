"""Commands of the replicated log, and the batch that carries them through Raft.

Each kind of command is a record below (read by name in the state machine's handlers). In the log
a command is a msgpack list ``[kind, ...fields]``, in the record's field order; the coordinator
proposes many at once as one batch ``[term, timestamp, [command, ...], [ref, ...]]`` (group commit:
one Raft entry for many client requests; a ref is the proposer's number for each command, so that
its effects find who waits for them). The leader stamps the batch; a replica never reads a clock.

The log's bytes are a contract: replicas of different versions, and the digest that compares
replicas, read the same bytes. A submit's tasks are written as their envelopes' ``to_wire()`` maps
and a finish's outcomes as 9-element lists. Reading a batch builds the records without validating
again: every field was validated at the edge (protocol) before it was proposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import msgpack

from ..protocol import Envelope, Outcome


class _Record:
    """Written as ``[KIND, *fields]``; a record whose fields need more says so in `to_wire`."""

    __slots__ = ()
    KIND: ClassVar[str]
    __match_args__: ClassVar[tuple[str, ...]]  # the dataclass's fields, in order

    def to_wire(self) -> list[Any]:
        return [self.KIND, *(getattr(self, name) for name in self.__match_args__)]

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Any:
        return cls(*raw[1:])


@dataclass(frozen=True, slots=True)
class Submit(_Record):
    KIND: ClassVar[str] = "submit"
    tasks: list[Envelope]

    def to_wire(self) -> list[Any]:
        return [self.KIND, [e.to_wire() for e in self.tasks]]

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Submit:
        return cls([_envelope(w) for w in raw[1]])


class Offer(NamedTuple):
    """Free slots of one worker: it serves `actors` and can take `slots` tasks now."""

    worker: str
    actors: list[str]
    slots: int


@dataclass(frozen=True, slots=True)
class Dispatch(_Record):
    KIND: ClassVar[str] = "dispatch"
    offers: list[Offer]  # least loaded first: tasks are spread over them in this order

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Dispatch:
        return cls([Offer(w, actors, n) for w, actors, n in raw[1]])


@dataclass(frozen=True, slots=True)
class Grant(_Record):
    """Leases the leader chose itself and sent before this entry committed: for actors without
    limits, a `run` need not wait for a commit (state/grants.py). Each stands if its task
    is still queued at the attempt before, its actor still unlimited; else it is refused."""

    KIND: ClassVar[str] = "grant"
    worker: str
    leases: list[tuple[str, int]]  # (task id, the attempt this lease makes)

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Grant:
        return cls(raw[1], [(tid, attempt) for tid, attempt in raw[2]])


@dataclass(frozen=True, slots=True)
class Finish(_Record):
    KIND: ClassVar[str] = "finish"
    worker: str
    outcomes: list[Outcome]

    def to_wire(self) -> list[Any]:
        return [self.KIND, self.worker, [
            [o.id, o.attempt, o.ok, o.value, o.error_type, o.message, o.traceback, o.retry_delay, o.retryable]
            for o in self.outcomes
        ]]

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Finish:
        return cls(raw[1], [
            Outcome(id=i, attempt=attempt, ok=ok, value=value, error_type=error_type, message=message,
                    traceback=tb, retry_delay=retry_delay, retryable=retryable)
            for i, attempt, ok, value, error_type, message, tb, retry_delay, retryable in raw[2]
        ])


@dataclass(frozen=True, slots=True)
class Lost(_Record):
    """The worker's leases are void.

    `leases` None means all of them. `counts` is True when the worker died or vanished (the
    task's loss counter grows, and a task lost too often is dead-lettered as a poison task), False
    when a draining worker hands its unfinished tasks back.
    """

    KIND: ClassVar[str] = "lost"
    worker: str
    leases: list[tuple[str, int]] | None = None  # (task id, attempt)
    counts: bool = True

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Lost:
        _, worker, leases, counts = raw
        return cls(worker, None if leases is None else [(t, a) for t, a in leases], counts)


@dataclass(frozen=True, slots=True)
class Cancel(_Record):
    KIND: ClassVar[str] = "cancel"
    task_id: str


@dataclass(frozen=True, slots=True)
class RegisterActors(_Record):
    KIND: ClassVar[str] = "register_actors"
    actors: dict[str, dict[str, Any]]  # actor -> the options its workers declare
    started: float = 0.0  # when the worker that declares them started: the latest one's are in force


@dataclass(frozen=True, slots=True)
class RegisterNode(_Record):
    KIND: ClassVar[str] = "register_node"
    raft_address: str
    url: str


@dataclass(frozen=True, slots=True)
class DlqReplay(_Record):
    KIND: ClassVar[str] = "dlq_replay"
    ids: list[str] | None  # None: every dead letter
    op: str | None = None  # the operation's id: a resent request acts once (StateMachine.ops)


@dataclass(frozen=True, slots=True)
class DlqPurge(_Record):
    KIND: ClassVar[str] = "dlq_purge"
    ids: list[str] | None  # None: every dead letter
    op: str | None = None


@dataclass(frozen=True, slots=True)
class Tick(_Record):
    """Nothing but the passage of time: promotes due tasks and drops expired results."""

    KIND: ClassVar[str] = "tick"


@dataclass(frozen=True, slots=True)
class Checkpoint(_Record):
    """Every replica digests its state here (replication.Checkpoints); `mark` and `digest` are the
    leader's own digest at its previous checkpoint (0 and "" when it has none), for each replica to
    compare with its own at that mark."""

    KIND: ClassVar[str] = "checkpoint"
    mark: int
    digest: str


@dataclass(frozen=True, slots=True)
class SetLimits(_Record):
    """An operator's limits for `actor`, winning over what workers register until reset.

    `rate_limits` / `concurrency` replace the registered lists (None: keep them); `rate` (n, period)
    and `cap` replace only the actor-wide (unkeyed) rate and concurrency limits; `key_rate`
    (value, n, period) sets the rate of one value of the actor's keyed rate limit; `weight`
    (value, n) gives the lanes of that key value n tasks per round-robin turn.
    """

    KIND: ClassVar[str] = "set_limits"
    actor: str
    rate_limits: list[list[Any]] | None = None
    concurrency: list[list[Any]] | None = None
    key_rate: tuple[Any, int, float] | None = None
    rate: tuple[int, float] | None = None
    cap: int | None = None
    weight: tuple[Any, int] | None = None

    @classmethod
    def from_wire(cls, raw: list[Any]) -> SetLimits:
        _, actor, rate_limits, concurrency, key_rate, rate, cap, weight = raw
        return cls(actor, rate_limits, concurrency, _tuple(key_rate), _tuple(rate), cap, _tuple(weight))


@dataclass(frozen=True, slots=True)
class ResetLimits(_Record):
    KIND: ClassVar[str] = "reset_limits"
    actor: str


@dataclass(frozen=True, slots=True)
class Pause(_Record):
    """A paused actor's tasks stay queued (and keep arriving) but none starts."""

    KIND: ClassVar[str] = "pause"
    actor: str
    paused: bool


@dataclass(frozen=True, slots=True)
class CronAdd(_Record):
    """An operator's cron entry (validated before it is proposed: cron_expr.CronExpr.parse)."""

    KIND: ClassVar[str] = "cron_add"
    name: str
    actor: str
    expr: str
    tz: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CronRemove(_Record):
    KIND: ClassVar[str] = "cron_remove"
    name: str


@dataclass(frozen=True, slots=True)
class PurgeQueue(_Record):
    """Cancel every queued and delayed task of `actor` (running ones finish)."""

    KIND: ClassVar[str] = "purge_queue"
    actor: str
    op: str | None = None


@dataclass(frozen=True, slots=True)
class Alert(_Record):
    """The leader found an alert rule's condition holding (`firing`) or no longer (resolved), for
    `actor` ("" for none): replicated, so that a new leader neither repeats nor forgets it."""

    KIND: ClassVar[str] = "alert"
    rule: str
    actor: str
    firing: bool
    value: float
    text: str


Command = (Submit | Dispatch | Grant | Finish | Lost | Cancel | RegisterActors | RegisterNode | DlqReplay
           | DlqPurge | Tick | Checkpoint | SetLimits | ResetLimits | Pause | CronAdd | CronRemove | PurgeQueue | Alert)

_KINDS: dict[str, type[Command]] = {cls.KIND: cls for cls in (
    Submit, Dispatch, Grant, Finish, Lost, Cancel, RegisterActors, RegisterNode, DlqReplay, DlqPurge, Tick,
    Checkpoint, SetLimits, ResetLimits, Pause, CronAdd, CronRemove, PurgeQueue, Alert)}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A command in the log that this version cannot read (an unknown kind, or fields that do not
    fit its record): it fails alone, and the batch's other commands still apply."""

    kind: str  # as the log names it ("?" when it names none)
    raw: Any
    reason: str


# -- what an operator asks, as a command ---------------------------------------------------------


def operator_limits(actor: str, rate: tuple[int, float] | None, key: Any, concurrency: int | None,
                    weight: int | None) -> SetLimits:
    """What `qrt limits set` asks, as a set_limits command: `rate` is actor-wide, or with `key` the
    rate of that key value; `weight` (with `key`) is that value's tasks per round-robin turn."""
    return SetLimits(actor, rate=rate if key is None else None, cap=concurrency,
                     key_rate=None if key is None or rate is None else (key, *rate),
                     weight=None if weight is None else (key, weight))


def unsettles(command: Command) -> tuple[list[str], list[str]]:
    """The actors and task ids whose grants ahead of commit `command` may void while it is in
    flight (state/grants.py): it may limit, pause or empty an actor, or end a queued task, or a
    dispatch may lease that actor's tasks by the state machine's own choice."""
    match command:
        case SetLimits(actor=actor) | ResetLimits(actor=actor) | Pause(actor=actor) | PurgeQueue(actor=actor):
            return [actor], []
        case RegisterActors(actors=actors):
            return list(actors), []
        case Dispatch(offers=offers):
            return sorted({actor for offer in offers for actor in offer.actors}), []
        case Cancel(task_id=task_id):
            return [], [task_id]
    return [], []


# -- the batch ---------------------------------------------------------------------------------


def pack_command(command: Command) -> bytes:
    """One command as the batch carries it; raises (ValueError, TypeError, OverflowError) when a
    value cannot be packed, so that the proposer refuses that command alone."""
    packed: bytes = msgpack.packb(command.to_wire(), use_bin_type=True)
    return packed


def join_batch(term: int, timestamp: float, packed: list[bytes], refs: list[int]) -> bytes:
    """One Raft entry, ``[term, timestamp, [command, ...], [ref, ...]]``, from commands packed one by
    one (`pack_command`): the same bytes as packing it whole, and nothing left that can fail."""
    if len(refs) != len(packed):
        raise ValueError(f"{len(refs)} refs for {len(packed)} commands")
    head = msgpack.Packer(use_bin_type=True)
    return b"".join([head.pack_array_header(4), head.pack(term), head.pack(timestamp),
                     head.pack_array_header(len(packed)), *packed, head.pack(refs)])


def pack_batch(term: int, timestamp: float, commands: list[Command], refs: list[int] | None = None) -> bytes:
    """One Raft entry from commands (tests and tools); without refs they are numbered 1, 2, ... when
    read, and the entry is ``[term, timestamp, [command, ...]]``."""
    if refs is not None:
        return join_batch(term, timestamp, [pack_command(c) for c in commands], refs)
    packed: bytes = msgpack.packb([term, timestamp, [c.to_wire() for c in commands]], use_bin_type=True)
    return packed


def unpack_batch(payload: bytes) -> tuple[int, float, list[Command | Unreadable], list[int]]:
    """The batch's stamp, its commands (one that cannot be read becomes `Unreadable`) and their refs."""
    term, timestamp, raw, *rest = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    refs = rest[0] if rest else list(range(1, len(raw) + 1))
    return term, timestamp, [_command(r) for r in raw], refs


def _command(raw: Any) -> Command | Unreadable:
    kind = raw[0] if isinstance(raw, list) and raw and isinstance(raw[0], str) else "?"
    cls = _KINDS.get(kind)
    if cls is None:
        return Unreadable(kind, raw, f"unknown command {kind!r}")
    try:
        command: Command = cls.from_wire(raw)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        return Unreadable(kind, raw, f"its fields do not fit the record ({type(exc).__name__}: {exc})")
    return command


def _envelope(wire: dict[str, Any]) -> Envelope:
    """An envelope from its `to_wire()` map (absent optional fields were falsy)."""
    if len(wire) == 4:  # id, actor, args and kwargs only: most tasks (a quarter of the cost of the rest)
        return Envelope(wire["id"], wire["actor"], wire["args"], wire["kwargs"])
    if len(wire) == 5 and "trace" in wire:  # and a trace context
        return Envelope(wire["id"], wire["actor"], wire["args"], wire["kwargs"], trace=wire["trace"])
    return Envelope(
        id=wire["id"], actor=wire["actor"], args=wire["args"], kwargs=wire["kwargs"], keys=wire.get("keys") or {},
        delay=wire.get("delay", 0.0), priority=wire.get("priority", 0), eta=wire.get("eta"),
        expires_in=wire.get("expires_in"), expires_at=wire.get("expires_at"),
        idempotency_key=wire.get("idempotency_key"), trace=wire.get("trace"),
    )


def _tuple(value: Any) -> Any:
    return None if value is None else tuple(value)
