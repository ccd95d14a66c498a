"""A digest of the replicated state itself, to find replicas that diverged.

The running log digest (`StateMachine.digest`) proves only that two replicas applied the same
batches; this one hashes what they hold, so that a replica whose state differs for any other
reason (a time-zone database, a hash seed, a bug that reads something local) is seen. Every
structure is walked in its own order: insertion orders are part of the state (they decide what
runs next), and they are the same on every replica, a snapshot's included (pickle keeps them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from ..cron_expr import CronExpr

if TYPE_CHECKING:
    from .store import TaskStore

# Not the state: the digests themselves, and what describes the batch being applied.
NOT_STATE = frozenset({"digest", "checkpoint", "diverged", "batch_term", "journal"})


def state_digest(store: TaskStore) -> str:
    """blake2b (128 bits, hex) of every replicated structure of `store`, in a canonical encoding."""
    h = hashlib.blake2b(digest_size=16)
    pack = msgpack.Packer(use_bin_type=True, default=_plain).pack
    for name in sorted(vars(store)):
        if name in NOT_STATE:
            continue
        value = getattr(store, name)
        h.update(pack(name))
        if name == "tasks":  # the bulk of the state: one task at a time, not one huge buffer
            h.update(pack(len(value)))
            for task in value.values():
                h.update(pack(task))
        else:
            h.update(pack(value))
    return h.hexdigest()


_FIELDS: dict[type, Callable[[Any], Any]] = {}  # per dataclass: a getter of all its fields, as a tuple


def _fields_of(names: list[str]) -> Callable[[Any], Any]:
    if len(names) > 1:
        return operator.attrgetter(*names)  # a tuple of them, at C speed
    return lambda value: tuple(getattr(value, name) for name in names)


def _plain(value: Any) -> Any:
    """What msgpack cannot pack by itself, as plain data (called by the packer)."""
    getter = _FIELDS.get(type(value))
    if getter is not None:
        return getter(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        getter = _FIELDS[type(value)] = _fields_of([f.name for f in dataclasses.fields(value)])
        return getter(value)
    if isinstance(value, deque):
        return list(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, CronExpr):
        return [value.text, value.tz]
    if hasattr(value, "__dict__"):  # the state's own containers (ActorQueue, CronTable)
        return [[k, v] for k, v in sorted(vars(value).items())]
    raise TypeError(f"the state digest cannot encode a {type(value).__name__}")
