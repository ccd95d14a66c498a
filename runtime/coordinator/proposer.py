"""Group commit: every command gathered in one pass of the event loop becomes one Raft entry, and
while an entry is in flight what gathers waits to go in the next (defaults.ENTRIES_IN_FLIGHT).

pysyncobj commits 3.6-5.9k entries/s but 150-200k records/s when each entry carries ~100 (measured,
DESIGN.md), so the coordinator never proposes a lone client command when others are waiting.

Each command gets a reference number, written in the batch beside it; applying the batch returns
each command's effects under its reference, and the Proposer hands them to the callback that was
added with that command. It decides nothing and knows no socket, and nothing it is asked to do
calls back into its caller (the old `before_flush` hook did): it only completes, once a batch has
committed, what it was given: each command's callback, and `on_batch`, the one subscriber to every
committed batch's effects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable

from .. import anatomy, defaults
from ..clock import Clock, SystemClock
from ..replication import Replication
from ..state import commands as C
from ..state.model import Applied, Effect

log = logging.getLogger("qrt.coordinator")

# Called on the event loop with the command's effects, or None and a reason when it did not commit.
OnEffects = Callable[[list[Effect] | None, str | None], None]
# The reason given for a command that could not be packed (a bug, or a value past msgpack's limits
# that ingress let through): retrying cannot help.
UNPACKABLE = "unpackable"


class BatchSizes:
    """How many commands the entries this node proposed held (a histogram, for metrics.py)."""

    BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0

    def observe(self, n: int) -> None:
        self.counts[bisect_left(self.BOUNDS, n)] += 1
        self.total += n

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip((*self.BOUNDS, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Proposer:
    def __init__(self, replication: Replication, loop: asyncio.AbstractEventLoop,
                 on_batch: Callable[[list[Effect]], None], clock: Clock | None = None,
                 entries_in_flight: int | None = defaults.ENTRIES_IN_FLIGHT) -> None:
        """`entries_in_flight`: proposed and not yet committed, at most (None: no limit)."""
        self._replication = replication
        self._entries_in_flight = entries_in_flight
        self._clock = clock or SystemClock()
        self._anchor: tuple[float, float] | None = None  # (leader time, monotonic time) at taking office
        self._term: int | None = None  # the Raft term in which this node took office
        self.proposed_at = 0.0  # monotonic time of the last batch proposed
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self._on_batch = on_batch  # sees every effect of every batch this node committed, once
        self._scheduled = False
        self._refs = itertools.count(1)
        self._gathered: list[tuple[int, bytes]] = []  # (ref, the command packed)
        self._callbacks: dict[int, OnEffects] = {}  # ref -> who waits for that command's effects
        self._in_flight: dict[int, list[int]] = {}  # batch -> refs of its commands
        self._proposed_at: dict[int, float] = {}  # batch -> monotonic time it was proposed
        self.batch_sizes = BatchSizes()
        self._anatomy: list[tuple[str, str]] = []  # (hop, task id) to mark at the next flush (anatomy.py)
        # What commands gathered or in flight may change (C.unsettles): no grant ahead of commit
        # for those actors and tasks until they are answered (dispatch.py).
        self._unsettling: dict[int, tuple[list[str], list[str]]] = {}  # ref -> (actors, task ids)
        self.unsettled_actors: Counter[str] = Counter()
        self.unsettled_tasks: Counter[str] = Counter()

    def add(self, command: C.Command, on_effects: OnEffects | None) -> bool:
        """Propose `command` with this pass's others; `on_effects` gets its effects (None: nobody waits).

        The command is packed now: one that cannot be (a value msgpack refuses) fails alone, its
        callback told `unpackable: ...` on the next turn of the loop, and never takes its batch down;
        False then.
        """
        try:
            packed = C.pack_command(command)
        except Exception as exc:  # msgpack raises ValueError, TypeError, OverflowError
            log.error("a %s command cannot be packed: %s", command.KIND, exc)
            if on_effects is not None:
                self._loop.call_soon(on_effects, None, f"{UNPACKABLE}: {exc}")
            return False
        ref = next(self._refs)
        self._gathered.append((ref, packed))
        actors, task_ids = C.unsettles(command)
        if actors or task_ids:
            self._unsettling[ref] = (actors, task_ids)
            self.unsettled_actors.update(actors)
            self.unsettled_tasks.update(task_ids)
        if anatomy.ON:
            self._anatomy.extend(anatomy.proposed(command))
        if on_effects is not None:
            self._callbacks[ref] = on_effects
        if not self._scheduled:  # whatever else this pass of the loop adds joins the same entry
            self._scheduled = True
            self._loop.call_soon(self.flush)
        return True

    def take_office(self) -> None:
        """This node now leads: its batches carry this term from now on (even after it is deposed,
        so that every replica refuses what it decided then), and replicated time goes on from
        where this node last saw it, advanced by its monotonic clock (`_follow`)."""
        self._term = self._replication.term
        self._anchor = (self._follow(), self._clock.monotonic())

    @property
    def office_term(self) -> int | None:
        """The term this node last took office in (None: never)."""
        return self._term

    def clock(self) -> float:
        """Leader time, as batches are stamped with (a hybrid clock, DESIGN.md): it advances with
        the monotonic clock, so a step of the wall clock (NTP, by hand) neither freezes nor hastens
        delays, limits and TTLs (measured before: a 60 s step back held a 5/s actor for 60 s), and it
        is never behind replicated time. The wall clock is read when the node takes office."""
        if self._anchor is None:  # never led: leader time as a follower sees it
            return self._follow()
        since_wall, since = self._anchor
        return max(self._replication.machine.now, since_wall + self._clock.monotonic() - since)

    def _follow(self) -> float:
        """Leader time as this node can tell: the replicated time it last saw advance live, plus
        the monotonic time since. A new leader goes on from it, whatever its own wall clock says
        (a node 60 s ahead used to fire every delay due within the minute, and empty rate
        windows); the wall clock serves only a node that saw none (after a restart of the
        cluster, when time must catch up with the outage). Never behind replicated time."""
        machine_now = self._replication.machine.now
        seen = self._replication.time_seen()
        if seen is None:
            return max(self._clock.wall(), machine_now)
        now_seen, at = seen
        return max(machine_now, now_seen + self._clock.monotonic() - at)

    def skew(self) -> float:
        """How far this node's wall clock is ahead of leader time (behind: negative)."""
        return self._clock.wall() - self.clock()

    def flush(self) -> None:
        """Propose what was gathered, stamped with the leader's term and a non-decreasing time; held
        while ENTRIES_IN_FLIGHT are (proposed again when one commits: `_resolve`)."""
        self._scheduled = False
        if self._holding():
            return
        if anatomy.ON and self._gathered:
            for hop, task_id in self._anatomy:
                anatomy.mark(hop, task_id)
            self._anatomy.clear()
        while self._gathered:
            n = defaults.MAX_COMMANDS_PER_ENTRY
            chunk, self._gathered = self._gathered[:n], self._gathered[n:]
            stamp = self.clock()
            refs = [ref for ref, _ in chunk]
            # The term it led in, not the current one: a deposed leader that resumes after a pause
            # reads the new term from pysyncobj, and its leftovers must not pass for the new leader's.
            term = self._replication.term if self._term is None else self._term
            payload = C.join_batch(term, stamp, [packed for _, packed in chunk], refs)
            batch = refs[0]
            self._in_flight[batch] = refs
            self.batch_sizes.observe(len(refs))
            self.proposed_at = self._proposed_at[batch] = self._clock.monotonic()
            try:
                self._replication.propose(payload, self._on_commit(batch))
            except Exception as exc:  # never a batch dropped without a word to its commands
                log.exception("proposing a batch failed")
                self._loop.call_soon(self._resolve, batch, None, f"not proposed: {exc}")

    def _holding(self) -> bool:
        limit = self._entries_in_flight
        if limit is None or not self._gathered:
            return False
        entries, oldest_waited = self.in_flight()
        return entries >= limit and oldest_waited < defaults.ENTRY_HOLD_LIMIT

    def _on_commit(self, batch: int) -> Callable[[Applied | None, str | None], None]:
        """A callback for pysyncobj's tick that hands the outcome to the event loop's next turn
        (thread-safely when pysyncobj ticks on a thread of its own)."""
        def on_commit(applied: Applied | None, error: str | None) -> None:
            if anatomy.ON and applied is not None:
                anatomy.effects(applied.all_effects(), on_loop=False)
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._resolve, batch, applied, error)
            else:
                self._loop.call_soon_threadsafe(self._resolve, batch, applied, error)
        return on_commit

    def in_flight(self) -> tuple[int, float]:
        """Batches proposed and not yet answered, and how long the oldest has waited (seconds)."""
        if not self._proposed_at:
            return 0, 0.0
        return len(self._proposed_at), self._clock.monotonic() - min(self._proposed_at.values())

    def fail_all(self, reason: str) -> None:
        """Leadership was lost: nothing gathered or in flight will be answered by this node."""
        callbacks = list(self._callbacks.values())
        self._callbacks.clear()
        self._unsettling.clear()
        self.unsettled_actors.clear()
        self.unsettled_tasks.clear()
        self._in_flight.clear()
        self._proposed_at.clear()
        self._gathered.clear()
        for cb in callbacks:
            cb(None, reason)

    def _resolve(self, batch: int, applied: Applied | None, error: str | None) -> None:
        refs = self._in_flight.pop(batch, None)
        self._proposed_at.pop(batch, None)
        if refs is None:
            return  # already failed by fail_all
        if applied is not None:
            if anatomy.ON:
                anatomy.effects(applied.all_effects(), on_loop=True)
            try:
                self._on_batch(applied.all_effects())
            except Exception:
                log.exception("handling the effects of a committed batch failed")
        for ref in refs:
            unsettling = self._unsettling.pop(ref, None)
            if unsettling is not None:
                _release(self.unsettled_actors, unsettling[0])
                _release(self.unsettled_tasks, unsettling[1])
            cb = self._callbacks.pop(ref, None)
            if cb is None:
                continue
            effects = None if applied is None else applied.by_ref.get(ref)
            try:
                cb(effects, (error or "not_applied") if effects is None else None)
            except Exception:
                log.exception("handling the effects of a committed command failed")
        if self._gathered and not self._scheduled:  # held while this batch was in flight
            self._scheduled = True
            self._loop.call_soon(self.flush)


def _release(counter: Counter[str], names: list[str]) -> None:
    for name in names:
        left = counter[name] - 1
        if left > 0:
            counter[name] = left
        else:
            del counter[name]
