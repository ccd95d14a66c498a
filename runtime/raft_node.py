"""pysyncobj's node as qrt runs it: its journal, a pre-vote, a connect timeout, and commits told
to followers by the next entry. It uses pysyncobj's private names: pysyncobj is pinned
(pyproject.toml), and tests/failures/test_partitions.py and tests/integration/test_replication.py
prove what is overridden here. replication.py wraps it.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pysyncobj.syncobj as pysyncobj_module
from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.tcp_connection import CONNECTION_STATE

from . import raft_guard
from .raft_cipher import RaftCipher
from .raft_journal import DurableJournal
from .raft_loop import LoopPoller

_JOURNAL = "_SyncObj__raftLog"  # SyncObj's private self.__raftLog: the one reference to its journal

# A Raft connection attempt older than this starts afresh. pysyncobj has no connect timeout: a SYN
# lost in a partition waits for the kernel's retransmits (1, 3, 7, 15, 31 s after the connect), so
# nodes stayed apart ~8 s after a 15 s partition healed (measured, tests/failures/test_partitions.py).
# A LAN connect takes well under a millisecond; 1 s is the kernel's own first retransmit.
RAFT_CONNECT_TIMEOUT = 1.0
# A follower learns of a commit within this long when no entry follows it (_SyncObj__applyLogEntries).
COMMIT_NOTICE_DELAY = 0.01
_NEXT_APPEND = "_SyncObj__newAppendEntriesTime"  # when pysyncobj's leader next sends AppendEntries regardless
# Message types of the pre-vote, below (pysyncobj ignores types it does not know).
_PREVOTE = "qrt_prevote"
_PREVOTE_REPLY = "qrt_prevote_reply"


class RaftNode(SyncObj):  # type: ignore[misc]
    """pysyncobj with its Fernet replaced by RaftCipher: its transport asks `encryptor` for the
    object to encrypt with, when a connection opens (pysyncobj's `password` stays set, so it still
    requires encryption on every connection), and its connections guarded (raft_guard.py: frame
    caps, no connection without the cipher). With `fsync`, its journal is a DurableJournal.

    Plus Raft's pre-vote (Ongaro's thesis, 9.6), which pysyncobj lacks: a node whose election timer
    runs out first asks its peers whether they would vote for it, and raises its term only when a
    majority would (its log at least as new as theirs, and no leader heard for raftMinTimeout).
    Without it, a node cut off by a partition campaigned alone, raised its term, and on its return
    deposed the healthy leader: a needless election (measured). These overrides use pysyncobj's
    private names: it is pinned (pyproject.toml), and tests/failures/test_partitions.py proves them.
    """

    def __init__(self, *args: Any, cipher: RaftCipher, fsync: bool = False, poller: LoopPoller | None = None,
                 **kwargs: Any) -> None:
        self._qrt_cipher = cipher  # before pysyncobj's __init__, which may open connections
        self._qrt_leader_heard = float("-inf")  # monotonic time of a leader's last append_entries
        self._qrt_prevote_term = 0  # the term the pre-vote in flight asks about (0: none)
        self._qrt_prevote_grants: set[Any] = set()
        self._qrt_prevote_next = 0.0  # when a pre-vote that got no majority may be asked again
        # A leader of a lower term is appending to us: it cannot learn our term but from a vote
        # request, so we campaign without a pre-vote (else neither side ever moves).
        self._qrt_term_behind_us = False
        if poller is None:
            super().__init__(*args, transportClass=raft_guard.GuardedTransport, **kwargs)
        else:  # pysyncobj has no option for its poller: it calls this module's createPoller
            create, pysyncobj_module.createPoller = pysyncobj_module.createPoller, lambda _type: poller
            try:
                super().__init__(*args, transportClass=raft_guard.GuardedTransport, **kwargs)
            finally:
                pysyncobj_module.createPoller = create
        self.addOnTickCallback(self._qrt_restart_stuck_connects)
        if fsync:
            # pysyncobj has no option for this nor a hook for its journal: its __init__ opened a
            # FileJournal on the file (and wrote the first entry of a new one). Nothing has ticked
            # yet (autoTick is off), so close that and read the same file, in the same format.
            conf = getattr(self, "_SyncObj__conf")  # noqa: B009 - SyncObj's private self.__conf
            getattr(self, _JOURNAL)._destroy()
            setattr(self, _JOURNAL, DurableJournal(conf.journalFile, conf.fullDumpFile))

    @property
    def encryptor(self) -> RaftCipher:
        return self._qrt_cipher

    def _SyncObj__connectedToAnyone(self) -> bool:
        """pysyncobj asks this, and only this, when its election timer has run out: campaign now?"""
        others = self._SyncObj__otherNodes
        if not others:
            return True
        if not self._SyncObj__connectedNodes:
            return False
        if self._qrt_term_behind_us:
            self._qrt_term_behind_us = False
            return True
        term = self._SyncObj__raftCurrentTerm + 1
        if self._qrt_prevote_term == term and len(self._qrt_prevote_grants) + 1 > (len(others) + 1) / 2:
            self._qrt_prevote_term = 0
            return True  # pysyncobj now raises its term and asks for votes
        now = time.monotonic()
        if now >= self._qrt_prevote_next:
            self._qrt_prevote_next = now + random.uniform(self.conf.raftMinTimeout, self.conf.raftMaxTimeout)
            self._qrt_prevote_term, self._qrt_prevote_grants = term, set()
            ask = {"type": _PREVOTE, "term": term, "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
            for node in others:
                self._SyncObj__transport.send(node, ask)
        return False

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == _PREVOTE:
            self._SyncObj__transport.send(node, {"type": _PREVOTE_REPLY, "term": message["term"],
                                                 "granted": self._qrt_would_vote(message)})
            return
        if kind == _PREVOTE_REPLY:
            if message["granted"] and message["term"] == self._qrt_prevote_term:
                self._qrt_prevote_grants.add(node)
            return
        if kind == "append_entries":
            if message["term"] >= self._SyncObj__raftCurrentTerm:
                self._qrt_leader_heard = time.monotonic()
                self._qrt_prevote_term, self._qrt_prevote_grants = 0, set()  # grants before it are stale
                self._qrt_term_behind_us = False
            else:
                self._qrt_term_behind_us = True
        super()._SyncObj__onMessageReceived(node, message)
        if kind == "next_node_idx" and message.get("reset") and self._isLeader():
            # A follower asks for entries again from an earlier index. pysyncobj sent them with its
            # next AppendEntries, which used to follow every commit; now that only a new entry or
            # the commit notice does, a follower behind could wait for the heartbeat (100 ms,
            # measured: bench.snapshot_pause's stream stalled in half the runs). The next tick sends.
            setattr(self, _NEXT_APPEND, raft_clock())

    def _qrt_would_vote(self, ask: dict[str, Any]) -> bool:
        if self._isLeader() or time.monotonic() - self._qrt_leader_heard < self.conf.raftMinTimeout:
            return False  # a leader is alive: the one asking is the one cut off
        last_term = self._SyncObj__getCurrentLogTerm()
        if ask["last_log_term"] != last_term:
            return bool(ask["last_log_term"] > last_term)
        return bool(ask["last_log_index"] >= self._SyncObj__getCurrentLogIndex())

    def _SyncObj__applyLogEntries(self) -> bool:
        """pysyncobj's leader sends every follower an AppendEntries after each batch it applies,
        only to tell them the new commit index: as many messages again as the entries themselves
        (each encrypted, sent, answered and read), and a third of the leader's time on 3 nodes
        (profiled). The next entry carries the commit index anyway; when none follows within
        COMMIT_NOTICE_DELAY, the next tick sends it alone. Followers apply that much later, which no
        promise depends on: the leader answers clients, and a new leader applies what is committed."""
        applied = bool(super()._SyncObj__applyLogEntries())
        if not applied or not self._isLeader():
            return False
        last = self._SyncObj__getCurrentLogIndex()
        connected = self._SyncObj__connectedNodes  # (one that is down is sent nothing anyway)
        if any(index <= last for node, index in self._SyncObj__raftNextIndex.items() if node in connected):
            return True  # a follower lacks entries (it asked for them again): send them now
        soon = raft_clock() + COMMIT_NOTICE_DELAY
        if getattr(self, _NEXT_APPEND) > soon:
            setattr(self, _NEXT_APPEND, soon)
        return False

    def _qrt_restart_stuck_connects(self) -> None:
        now = raft_clock()  # pysyncobj's clock (CLOCK_MONOTONIC_RAW), which stamped lastReadTime
        for conn in list(self._SyncObj__transport._connections.values()):
            if conn.state == CONNECTION_STATE.CONNECTING and \
                    now - conn._TcpConnection__lastReadTime > RAFT_CONNECT_TIMEOUT:
                conn.disconnect()  # pysyncobj connects again at once (connectionRetryTime allowing)
