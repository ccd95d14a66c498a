"""A stand-in for `qrt.replication.Replication` without Raft, for unit tests of the coordinator's
Proposer and Dispatcher: a real StateMachine, and proposals that wait until the test commits or
fails them, as pysyncobj's thread would (by calling the proposal's callback)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from qrt.replication import ProposeCallback, Replication
from qrt.state import StateMachine
from qrt.state import commands as C
from qrt.state.model import Applied


@dataclass(eq=False)  # proposals are told apart by identity
class Proposal:
    payload: bytes
    callback: ProposeCallback

    @property
    def commands(self) -> list[C.Command | C.Unreadable]:
        return C.unpack_batch(self.payload)[2]


class FakeReplication:
    """The part of Replication the coordinator uses: `term`, `machine`, `reading()`, `propose()`."""

    def __init__(self, term: int = 3) -> None:
        self.term = term
        self.machine = StateMachine()
        self.proposed: list[Proposal] = []  # every proposal, in order
        self.pending: list[Proposal] = []  # those neither committed nor failed yet
        self.seen: tuple[float, float] | None = None  # what time_seen() answers

    def time_seen(self) -> tuple[float, float] | None:
        return self.seen

    def as_replication(self) -> Replication:
        return cast(Replication, self)

    @contextmanager
    def reading(self) -> Iterator[StateMachine]:
        yield self.machine

    def propose(self, payload: bytes, callback: ProposeCallback) -> None:
        proposal = Proposal(payload, callback)
        self.proposed.append(proposal)
        self.pending.append(proposal)

    def commit(self, proposal: Proposal, payload: bytes | None = None) -> Applied:
        """Apply the proposal (or `payload` in its place: the same batch, rewritten) and report it."""
        self._settled(proposal)
        applied = self.machine.apply_batch(proposal.payload if payload is None else payload)
        proposal.callback(applied, None)
        return applied

    def fail(self, proposal: Proposal, reason: str) -> None:
        self._settled(proposal)
        proposal.callback(None, reason)

    def commit_pending(self) -> list[Applied]:
        return [self.commit(p) for p in list(self.pending)]

    def seed(self, *commands: C.Command) -> Applied:
        """Apply commands as a batch committed before the test began, stamped as a leader would."""
        return self.machine.apply_batch(C.pack_batch(self.term, max(time.time(), self.machine.now), list(commands)))

    def _settled(self, proposal: Proposal) -> None:
        if proposal in self.pending:
            self.pending.remove(proposal)


def readable(commands: list[C.Command | C.Unreadable]) -> list[C.Command]:
    """The commands of a batch, every one of which must be readable."""
    out = []
    for command in commands:
        assert not isinstance(command, C.Unreadable), command
        out.append(command)
    return out


async def settle(rounds: int = 5) -> None:
    """Let the loop run what was handed to it (call_soon, call_soon_threadsafe), and what that
    schedules in turn, a few rounds deep. For asserting that something did NOT happen, where there
    is no condition to wait for; the fake calls back synchronously, so no time needs to pass."""
    for _ in range(rounds):
        await asyncio.sleep(0)
