"""Group commit: every command gathered in one pass of the event loop becomes one Raft entry.

pysyncobj commits 3.6-5.9k entries/s but 150-200k records/s when each entry carries ~100 (measured,
DESIGN.md), so the coordinator never proposes a lone client command when others are waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .. import defaults
from ..replication import Replication
from ..state import commands as C
from ..state.model import Effect

log = logging.getLogger("qrt.coordinator")

# Called on the event loop with the command's effects, or None and a reason when it did not commit.
OnEffects = Callable[[list[Effect] | None, str | None], None]


class Proposer:
    def __init__(self, replication: Replication, loop: asyncio.AbstractEventLoop,
                 before_flush: Callable[[], None] | None = None,
                 on_effects: Callable[[list[Effect]], None] | None = None) -> None:
        self._replication = replication
        self._loop = loop
        self._before_flush = before_flush  # may add last commands (the dispatch offers)
        self._on_effects = on_effects  # sees every effect of every committed batch, once
        self._scheduled = False
        self._commands: list[C.Command] = []
        self._callbacks: list[OnEffects] = []
        self._in_flight: dict[int, list[OnEffects]] = {}
        self._next_batch = 0

    def add(self, command: C.Command, on_effects: OnEffects) -> None:
        self._commands.append(command)
        self._callbacks.append(on_effects)
        if not self._scheduled:  # whatever else this pass of the loop adds joins the same entry
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def pending(self) -> int:
        return len(self._commands)

    def flush(self) -> None:
        """Propose what was gathered, stamped with the leader's term and a non-decreasing time."""
        self._scheduled = False
        if self._before_flush is not None:
            self._before_flush()
        while self._commands:
            n = defaults.MAX_COMMANDS_PER_ENTRY
            commands, self._commands = self._commands[:n], self._commands[n:]
            callbacks, self._callbacks = self._callbacks[:n], self._callbacks[n:]
            stamp = max(time.time(), self._replication.machine.now)
            payload = C.pack_batch(self._replication.term, stamp, commands)
            self._next_batch += 1
            batch = self._next_batch
            self._in_flight[batch] = callbacks
            self._replication.propose(payload, self._on_commit(batch))

    def _on_commit(self, batch: int) -> Callable[[list[list[Effect]] | None, str | None], None]:
        """A callback for pysyncobj's thread that hands the outcome to the event loop."""
        def on_commit(results: list[list[Effect]] | None, error: str | None) -> None:
            self._loop.call_soon_threadsafe(self._resolve, batch, results, error)
        return on_commit

    def fail_all(self, reason: str) -> None:
        """Leadership was lost: nothing in flight will be answered by this node."""
        for callbacks in self._in_flight.values():
            for cb in callbacks:
                cb(None, reason)
        for cb in self._callbacks:
            cb(None, reason)
        self._in_flight.clear()
        self._commands.clear()
        self._callbacks.clear()

    def _resolve(self, batch: int, results: list[list[Effect]] | None, error: str | None) -> None:
        callbacks = self._in_flight.pop(batch, None)
        if callbacks is None:
            return  # already failed by fail_all
        if results is not None and self._on_effects is not None:
            try:
                self._on_effects([effect for effects in results for effect in effects])
            except Exception:
                log.exception("handling the effects of a committed batch failed")
        for i, cb in enumerate(callbacks, start=1):  # results[0]: effects of time passing
            try:
                if results is None or i >= len(results):
                    cb(None, error or "not_applied")
                else:
                    cb(results[i], None)
            except Exception:
                log.exception("handling the effects of a committed command failed")
