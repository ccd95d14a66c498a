"""Replicas compare digests of their state at the same points of the log, and say when they differ.

The leader proposes a `checkpoint` command now and then (coordinator housekeeping); every replica,
applying it, digests its state at that exact point of the log (state/digest.py), and the next
checkpoint carries the leader's digest for each replica to compare with its own. Digesting walks
every task (~180 ms per 100,000 on this machine), too long for pysyncobj's thread, whose silence
would start an election: a forked child digests the frozen copy fork gives it, and a small thread
collects the answer.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import threading
from typing import Any

from .state.digest import state_digest
from .state.store import TaskStore

log = logging.getLogger("qrt.replication")

KEEP = 4  # marks remembered: the leader's claim for a mark arrives one checkpoint later
# A digest taking longer than this is given up (its child killed): ~180 ms per 100,000 tasks.
DIGEST_TIMEOUT = 60.0


class Checkpoints:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mine: dict[int, str] = {}  # mark (batches applied) -> this replica's state digest there
        self.claims: dict[int, str] = {}  # mark -> the leader's digest there
        self.diverged: str | None = None  # what was found, once a digest differed from the leader's
        self._digesting = False  # a child is digesting: at most one at a time

    def latest(self) -> tuple[int, str]:
        """This replica's newest (mark, digest); (0, "") before its first checkpoint."""
        with self._lock:
            if not self.mine:
                return 0, ""
            mark = max(self.mine)
            return mark, self.mine[mark]

    def view(self) -> dict[str, Any]:
        mark, digest = self.latest()
        return {"mark": mark, "digest": digest, "diverged": self.diverged}

    def begin(self, store: TaskStore, mark: int, claim_mark: int, claim: str) -> None:
        """At a `checkpoint` (pysyncobj's thread, with the state unchanged until this returns): note
        the leader's claim, and digest the state of batch `mark` in a child."""
        if claim_mark:
            self._note(self.claims, claim_mark, claim)
        if self._digesting:
            log.warning("the state at batch %d goes undigested: the previous digest is not done", mark)
            return
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            raise
        if pid == 0:  # the child: digest, answer, exit without running anything of the parent's
            try:
                gc.disable()  # a collection would touch (and copy) every object of the parent's heap
                os.close(read)
                os.write(write, state_digest(store).encode())
            finally:
                os._exit(0)
        os.close(write)
        self._digesting = True
        try:
            threading.Thread(target=self._collect, args=(pid, read, mark), name="qrt-digest", daemon=True).start()
        except RuntimeError:  # no thread to be had: reap the child here
            self._digesting = False
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            raise

    def _collect(self, pid: int, read: int, mark: int) -> None:
        try:
            answer = b""
            if select.select([read], [], [], DIGEST_TIMEOUT)[0]:
                answer = os.read(read, 256)  # 32 hex digits, written at once
            else:
                log.error("digesting the state at batch %d took over %.0f s: given up", mark, DIGEST_TIMEOUT)
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        finally:
            os.close(read)
            self._digesting = False
        if not answer:
            log.error("digesting the state at batch %d failed (the child process died)", mark)
            return
        self._note(self.mine, mark, answer.decode())

    def _note(self, table: dict[int, str], mark: int, digest: str) -> None:
        with self._lock:
            table[mark] = digest
            for old in sorted(table)[:-KEEP]:
                del table[old]
            mine, claim = self.mine.get(mark), self.claims.get(mark)
        if mine is not None and claim is not None and mine != claim and self.diverged is None:
            self.diverged = f"at batch {mark}: this replica's state digest {mine} differs from the leader's {claim}"
            log.error("REPLICA DIVERGED %s; replace this node's data from a healthy one", self.diverged)
