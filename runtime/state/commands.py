"""Commands of the replicated log, and the batch that carries them through Raft.

A command is a msgpack list ``[kind, ...fields]`` built by the functions below; the coordinator
proposes many at once as one batch ``[term, timestamp, [command, ...]]`` (group commit: one Raft
entry for many client requests). The leader stamps the batch; a replica never reads a clock.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..protocol import Envelope, Outcome

Command = list[Any]

SUBMIT = "submit"
DISPATCH = "dispatch"
FINISH = "finish"
LOST = "lost"
CANCEL = "cancel"
REGISTER_ACTORS = "register_actors"
REGISTER_NODE = "register_node"
DLQ_REPLAY = "dlq_replay"
DLQ_PURGE = "dlq_purge"
TICK = "tick"
SET_LIMITS = "set_limits"
RESET_LIMITS = "reset_limits"
PAUSE = "pause"
CRON_ADD = "cron_add"
CRON_REMOVE = "cron_remove"
PURGE_QUEUE = "purge_queue"


def submit(envelopes: list[Envelope]) -> Command:
    return [SUBMIT, [e.to_wire() for e in envelopes]]


def dispatch(offers: list[tuple[str, list[str], int]]) -> Command:
    """Offers of free slots: (worker id, actors it serves, how many tasks it can take now)."""
    return [DISPATCH, [[w, actors, n] for w, actors, n in offers]]


def finish(worker: str, outcomes: list[Outcome]) -> Command:
    return [FINISH, worker, [
        [o.id, o.attempt, o.ok, o.value, o.error_type, o.message, o.traceback, o.retry_delay, o.retryable]
        for o in outcomes
    ]]


def lost(worker: str, leases: list[tuple[str, int]] | None = None, counts: bool = True) -> Command:
    """The worker's leases are void; `leases` None means all of them.

    `counts` is True when the worker died or vanished (the task's loss counter grows, and a task
    lost too often is dead-lettered as a poison task), False when a draining worker hands its
    unfinished tasks back.
    """
    return [LOST, worker, None if leases is None else [list(x) for x in leases], counts]


def cancel(task_id: str) -> Command:
    return [CANCEL, task_id]


def register_actors(actors: dict[str, dict[str, Any]]) -> Command:
    return [REGISTER_ACTORS, actors]


def register_node(raft_address: str, url: str) -> Command:
    return [REGISTER_NODE, raft_address, url]


def dlq_replay(ids: list[str] | None) -> Command:
    return [DLQ_REPLAY, ids]


def dlq_purge(ids: list[str] | None) -> Command:
    return [DLQ_PURGE, ids]


def set_limits(actor: str, rate_limits: list[list[Any]] | None = None, concurrency: list[list[Any]] | None = None,
               key_rate: tuple[Any, int, float] | None = None, rate: tuple[int, float] | None = None,
               cap: int | None = None, weight: tuple[Any, int] | None = None) -> Command:
    """An operator's limits for `actor`, winning over what workers register until reset.

    `rate_limits` / `concurrency` replace the registered lists (None: keep them); `rate` (n, period)
    and `cap` replace only the actor-wide (unkeyed) rate and concurrency limits; `key_rate`
    (value, n, period) sets the rate of one value of the actor's keyed rate limit; `weight`
    (value, n) gives the lanes of that key value n tasks per round-robin turn.
    """
    return [SET_LIMITS, actor, rate_limits, concurrency, None if key_rate is None else list(key_rate),
            None if rate is None else list(rate), cap, None if weight is None else list(weight)]


def operator_limits(actor: str, rate: tuple[int, float] | None, key: Any, concurrency: int | None,
                    weight: int | None) -> Command:
    """What `qrt limits set` asks, as a set_limits command: `rate` is actor-wide, or with `key` the
    rate of that key value; `weight` (with `key`) is that value's tasks per round-robin turn."""
    return set_limits(actor, rate=rate if key is None else None, cap=concurrency,
                      key_rate=None if key is None or rate is None else (key, *rate),
                      weight=None if weight is None else (key, weight))


def pause(actor: str, paused: bool) -> Command:
    """A paused actor's tasks stay queued (and keep arriving) but none starts."""
    return [PAUSE, actor, paused]


def purge_queue(actor: str) -> Command:
    """Cancel every queued and delayed task of `actor` (running ones finish)."""
    return [PURGE_QUEUE, actor]


def reset_limits(actor: str) -> Command:
    return [RESET_LIMITS, actor]


def cron_add(name: str, actor: str, expr: str, tz: str, args: list[Any], kwargs: dict[str, Any]) -> Command:
    """An operator's cron entry (validated before it is proposed: cron.CronExpr.parse)."""
    return [CRON_ADD, name, actor, expr, tz, args, kwargs]


def cron_remove(name: str) -> Command:
    return [CRON_REMOVE, name]


def tick() -> Command:
    """Nothing but the passage of time: promotes due tasks and drops expired results."""
    return [TICK]


def pack_batch(term: int, timestamp: float, commands: list[Command]) -> bytes:
    packed: bytes = msgpack.packb([term, timestamp, commands], use_bin_type=True)
    return packed


def unpack_batch(payload: bytes) -> tuple[int, float, list[Command]]:
    term, timestamp, commands = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return term, timestamp, commands
