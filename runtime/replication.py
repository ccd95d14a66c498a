"""pysyncobj around the state machine: propose batches, apply committed ones, snapshot, leadership.

It makes no decisions. The one replicated method, `ReplicatedLog.apply`, takes a msgpack batch
(bytes, so pysyncobj's pickling costs nothing per record) and hands it to the state machine under
a lock, because pysyncobj may apply on a tick thread of its own while the coordinator reads the
machine from the asyncio thread. The coordinator ticks it on its loop instead (raft_loop.py): then
the lock is never contended.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjConf, SyncObjConsumer, SyncObjException, replicated

from . import defaults, raft_guard
from .checkpoints import Checkpoints
from .history.writer import Recording
from .lifetime import die_with_parent
from .raft_cipher import RaftCipher
from .raft_loop import LoopPoller, LoopTicker
from .raft_node import RaftNode
from .state import StateMachine
from .state.model import Applied

log = logging.getLogger("qrt.replication")

ProposeCallback = Callable[[Applied | None, str | None], None]

# Longest wait for an event in one tick: bounds timer precision (elections, heartbeats) when idle.
TICK_WAIT = 0.02

_FAILURES = {getattr(FAIL_REASON, name): name.lower() for name in dir(FAIL_REASON) if name.isupper()}


class ReplicatedLog(SyncObjConsumer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.lock = threading.RLock()  # set before SyncObjConsumer records its own attributes
        self._frozen = False
        super().__init__()
        self.machine = StateMachine()
        self.checkpoints = Checkpoints()
        # Whether the entry being applied reached this process live, i.e. not replayed from its own
        # journal at start-up (set by Replication once pysyncobj has loaded the journal).
        self.live: Callable[[], bool] = lambda: False
        self.time_seen: tuple[float, float] | None = None  # (replicated time, monotonic time) when it advanced
        self.history: Recording | None = None  # gets every batch's task events (history/)

    @replicated  # type: ignore[misc, untyped-decorator]
    def apply(self, payload: bytes) -> Applied:
        if self._frozen:  # the snapshot's fork has happened (it follows _serialize at once)
            gc.unfreeze()
            self._frozen = False
        with self.lock:
            before = self.machine.now
            history = self.history
            if history is not None:
                self.machine.journal = []
            try:
                applied = self.machine.apply_batch(payload)
            finally:
                if history is not None:  # the events of this batch, to the history's own thread
                    events, self.machine.journal = self.machine.journal or [], None
                    history.record(self.machine.applied, events)
            # Nothing below may raise: pysyncobj would apply this entry again on its next tick.
            live = self.live()
            if live and self.machine.now != before:
                # Leader time as this node saw it live (not replayed from its journal after a
                # restart, hours late): what it goes on from if it takes office.
                self.time_seen = (self.machine.now, time.monotonic())
            if live and self.machine.checkpoint is not None:  # digest the state as it is at this batch
                try:
                    self.checkpoints.begin(self.machine, *self.machine.checkpoint)
                except Exception:  # out of processes or descriptors: this checkpoint goes undigested
                    log.exception("digesting the state at batch %d failed", self.machine.applied)
            return applied

    # Snapshots: pysyncobj forks and pickles what this returns in the child, so the parent only
    # hands over a reference here (DESIGN.md: a pickling parent misses heartbeats). Freezing the
    # heap first keeps the child's garbage collector off the parent's objects: otherwise its full
    # collections touch all of them and copy the whole heap (measured: 2.3 GB private in the child
    # of a 1 GB coordinator).
    def _serialize(self) -> dict[str, Any]:
        gc.freeze()
        self._frozen = True
        return {"machine": self.machine}

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.machine = data["machine"]


def _compaction() -> dict[str, Any]:
    """When pysyncobj snapshots the state and drops the entries before (log compaction): its
    defaults (after 5,000 entries or 5 minutes), or QRT_RAFT_COMPACTION="ENTRIES,SECONDS", which
    tests set to make a lagging node install a snapshot within seconds."""
    raw = os.environ.get("QRT_RAFT_COMPACTION")
    if not raw:
        return {}
    entries, seconds = raw.split(",")
    return {"logCompactionMinEntries": int(entries), "logCompactionMinTime": float(seconds)}


def local_only(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def check_cluster(self_address: str, peers: list[str], password: str | None) -> None:
    """The rules a cluster's shape must follow; ValueError naming the one broken.

    Raft traffic is always encrypted and authenticated, loopback included (pysyncobj unpickles what
    its port receives, and any local user can reach a loopback port): a one-node cluster without a
    password generates its own secret (raft_guard.node_secret); nodes of a larger one must share one.
    """
    if (len(peers) + 1) % 2 == 0:
        raise ValueError(f"{len(peers) + 1} nodes: a Raft cluster needs an odd number (1, 3 or 5); "
                         "an even one tolerates no more failures than one node fewer")
    if password is not None and not password:
        raise ValueError("the Raft password is empty")
    if password is None and peers:
        raise ValueError("a Raft password is required for a cluster of more than one node, the same on "
                         "every node (it authenticates and encrypts Raft traffic: pysyncobj unpickles "
                         "what its port receives)")


def _die_with_forking_parent() -> None:
    die_with_parent(os.getppid())


# pysyncobj forks a child to write each snapshot. It must die with its coordinator: left alone it
# went on for ~40 s and then replaced the dump file, possibly a newer one written by a coordinator
# restarted on the same data directory (seen in the benchmarks). Only pysyncobj and the state
# digest (checkpoints.py) call os.fork in a coordinator, and both children should die with it
# (subprocess and spawn do not run these hooks).
os.register_at_fork(after_in_child=_die_with_forking_parent)


class Replication:
    """One Raft node. `on_state_changed` runs on pysyncobj's thread (the loop's, with `loop`): hand
    it to a loop thread-safely."""

    def __init__(self, self_address: str, peers: list[str], data_dir: str, password: str | None,
                 on_state_changed: Callable[[], None] | None = None, fsync: bool = False,
                 history: Recording | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`fsync`: every Raft entry, term and snapshot is on disk before this node acts on it (a
        leader counts itself in a majority, a follower acknowledges): see raft_journal.py.
        `password` None: a one-node cluster's own secret, kept in `data_dir` (check_cluster).
        `loop`: pysyncobj is ticked on this (running) loop, raft_loop.py; else on a thread of its own."""
        check_cluster(self_address, peers, password)
        os.makedirs(data_dir, exist_ok=True)
        if password is None:
            password = raft_guard.node_secret(data_dir)
        self.log = ReplicatedLog()
        self.log.history = history  # before pysyncobj replays this node's journal into the machine
        tag = self_address.replace(":", "_")
        conf = SyncObjConf(
            appendEntriesUseBatch=defaults.RAFT_APPEND_ENTRIES_USE_BATCH,
            # A journal without the dump file came back empty after a restart (measured): set both.
            journalFile=os.path.join(data_dir, f"raft-{tag}.journal"),
            fullDumpFile=os.path.join(data_dir, f"raft-{tag}.dump"),
            password=password,
            bindAddress=self_address,
            leaderFallbackTimeout=defaults.RAFT_LEADER_FALLBACK_TIMEOUT,
            raftMinTimeout=defaults.RAFT_MIN_TIMEOUT,
            raftMaxTimeout=defaults.RAFT_MAX_TIMEOUT,
            commandsWaitLeader=False,
            autoTick=False,  # our own tick thread: see _tick_forever
            bindRetryTime=0.2,
            # pysyncobj's default 5 s left a node of a new cluster (or a restarted follower) out of
            # replication for up to ~6 s (measured); peers on a LAN can retry twice a second.
            connectionRetryTime=0.5,
            maxBindRetries=10,  # a Raft port in use is an error after ~2 s, not an endless retry
            onStateChanged=(lambda old, new: on_state_changed()) if on_state_changed else None,
            **_compaction(),
        )
        self.self_address = self_address
        self.peers = peers
        quiet = logging.getLogger("pysyncobj")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # a failed bind is logged with a traceback; we say it once, below
        try:
            poller = LoopPoller() if loop is not None else None
            self.sync = RaftNode(self_address, peers, conf, consumers=[self.log],
                                 cipher=RaftCipher(password), fsync=fsync, poller=poller)
        except SyncObjException as exc:  # "BindError" after its retries: say which address
            raise OSError(f"cannot listen for Raft on {self_address} ({exc}); is the port in use?") from None
        finally:
            quiet.setLevel(level)
        # The entries pysyncobj loaded from this node's journal are re-applied on its first ticks:
        # those are not live. (The entry being applied is the one after raftLastApplied.)
        replayed_up_to = int(self.sync._SyncObj__getCurrentLogIndex())
        self.log.live = lambda: int(self.sync.raftLastApplied) + 1 > replayed_up_to
        self._stopping = threading.Event()
        self._ticker: LoopTicker | None = None
        self._thread: threading.Thread | None = None
        if loop is not None:
            assert poller is not None
            self._ticker = LoopTicker(self.sync, loop, poller, TICK_WAIT)
        else:
            self._thread = threading.Thread(target=self._tick_forever, name="qrt-raft", daemon=True)
            self._thread.start()

    def _tick_forever(self) -> None:
        """Tick pysyncobj: wait for a socket event or a proposal, then tick once more at once.

        A proposal is appended to the log at the end of a tick and committed at the start of the
        next; pysyncobj's own thread then sleeps up to a tick period first, so a one-node cluster
        commits once per 50 ms (measured). The immediate second tick commits and applies it now.
        """
        while not self._stopping.is_set():
            try:
                self.sync.doTick(TICK_WAIT)
                self.sync.doTick(0.0)
            except Exception:  # pysyncobj's own thread logs and carries on too
                log.exception("raft tick failed")
                self._stopping.wait(TICK_WAIT)
        self.sync.destroy()

    @property
    def machine(self) -> StateMachine:
        return self.log.machine

    def time_seen(self) -> tuple[float, float] | None:
        """(replicated time, monotonic time) when this node last saw leader time advance live."""
        return self.log.time_seen

    @property
    def checkpoints(self) -> Checkpoints:
        return self.log.checkpoints

    @contextmanager
    def reading(self) -> Iterator[StateMachine]:
        """Hold the apply lock while the caller reads the machine (no batch applies meanwhile)."""
        with self.log.lock:
            yield self.log.machine

    def propose(self, payload: bytes, callback: ProposeCallback) -> None:
        """Append one batch; `callback(applied, None)` or `(None, reason)` later, on pysyncobj's thread
        (at once, on the caller's, for a batch too large for a Raft frame)."""
        if len(payload) > raft_guard.MAX_ENTRY_BYTES:
            # Peers refuse a frame over raft_guard.MAX_FRAME_BYTES: appended, this entry would never
            # reach them and would stall every entry after it. The batch fails, with its reason.
            callback(None, f"batch too large for Raft: {len(payload)} bytes, over {raft_guard.MAX_ENTRY_BYTES}")
            return

        def done(result: Any, error: int) -> None:
            if error == FAIL_REASON.SUCCESS:
                callback(result, None)
            else:
                callback(None, _FAILURES.get(error, str(error)))

        self.log.apply(payload, callback=done)
        if self._ticker is not None:
            self._ticker.soon(twice=True)

    def is_leader(self) -> bool:
        return bool(self.sync._isLeader())

    def leader_address(self) -> str | None:
        leader = self.sync._getLeader()
        return None if leader is None else str(leader.address)

    def reachable_leader(self) -> str | None:
        """The leader's Raft address when this node leads or is connected to it, else None: a node
        that lost its peers keeps naming the last leader it knew, which may be dead (a client sent
        there bounces between a redirect and silence)."""
        leader = self.sync._getLeader()
        if leader is None:
            return None
        if str(leader.address) == self.self_address or self.sync.isNodeConnected(leader):
            return str(leader.address)
        return None

    @property
    def term(self) -> int:
        return int(self.sync.raftCurrentTerm)

    def status(self) -> dict[str, Any]:
        raw = self.sync.getStatus()
        return {
            "self": self.self_address,
            "leader": self.leader_address(),
            "term": int(raw["raft_term"]),
            "commit_index": int(raw["commit_idx"]),
            "last_applied": int(raw["last_applied"]),
            "has_quorum": bool(raw["has_quorum"]),
            # As this node sees them: 2 is pysyncobj's "connected".
            "connected": {peer: raw.get(f"partner_node_status_server_{peer}") == 2 for peer in self.peers},
        }

    def destroy(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._ticker is not None:
            self._ticker.stop()
            self.sync.destroy()
