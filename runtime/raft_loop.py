"""pysyncobj ticked from the coordinator's event loop, not from a thread of its own.

On its own thread, pysyncobj cost every batch two hand-offs between threads (the proposal to its
tick, the commit back to the loop: ~55 µs each, measured by bench/anatomy.py) and, worse, a fight
for the GIL with the loop: while one thread runs Python the other waits for the switch interval.
Here its sockets are the loop's: `LoopPoller` registers each with the loop (pysyncobj's callbacks
run when the loop sees them ready), and `LoopTicker` runs pysyncobj's tick right after each event
or proposal, and every TICK_WAIT for its timers (elections, heartbeats, reconnects). The state
machine then applies on the loop thread, so the coordinator's reads never wait for it.

`Replication` uses this when it is made on a running loop (the coordinator); tools and tests that
make one without a loop keep the thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pysyncobj.poller import POLL_EVENT_TYPE, Poller

log = logging.getLogger("qrt.replication")

READ = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR


class LoopPoller(Poller):  # type: ignore[misc]
    """pysyncobj's poller interface over the loop's own: `poll` does nothing, the loop calls back."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: dict[int, Callable[[int, int], None]] = {}
        self._watched: dict[int, int] = {}  # fd -> the events the loop watches it for
        self.on_event: Callable[[], None] = lambda: None  # after each callback: tick soon

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand every socket subscribed so far (the Raft port, first connections) to `loop`."""
        self._loop = loop
        for fd in list(self._callbacks):
            self._watch(fd, self._watched.pop(fd, 0))

    def subscribe(self, descr: int, callback: Callable[[int, int], None], eventMask: int) -> None:
        self._callbacks[descr] = callback
        if self._loop is None:
            self._watched[descr] = eventMask  # watched once attached
            return
        self._watch(descr, eventMask)

    def _watch(self, fd: int, mask: int) -> None:
        """Watch `fd` for `mask`, changing only what differs (pysyncobj subscribes again after
        every write, and each change is a system call)."""
        loop = self._loop
        assert loop is not None
        had = self._watched.get(fd, 0)
        if mask & READ and not had & READ:
            loop.add_reader(fd, self._fire, fd, POLL_EVENT_TYPE.READ)
        elif had & READ and not mask & READ:
            loop.remove_reader(fd)
        if mask & POLL_EVENT_TYPE.WRITE and not had & POLL_EVENT_TYPE.WRITE:
            loop.add_writer(fd, self._fire, fd, POLL_EVENT_TYPE.WRITE)
        elif had & POLL_EVENT_TYPE.WRITE and not mask & POLL_EVENT_TYPE.WRITE:
            loop.remove_writer(fd)
        self._watched[fd] = mask

    def unsubscribe(self, descr: int) -> None:
        self._callbacks.pop(descr, None)
        had = self._watched.pop(descr, 0)
        if self._loop is None:
            return
        try:  # pysyncobj may have closed the socket already
            if had & READ:
                self._loop.remove_reader(descr)
            if had & POLL_EVENT_TYPE.WRITE:
                self._loop.remove_writer(descr)
        except (OSError, ValueError):
            pass

    def poll(self, timeout: float) -> None:
        """pysyncobj calls this at the end of each tick: the loop delivers the events instead."""

    def _fire(self, fd: int, event: int) -> None:
        callback = self._callbacks.get(fd)
        if callback is not None:
            try:
                callback(fd, event)
            except Exception:  # as pysyncobj's own loop: a connection's error must not stop the node
                log.exception("a Raft connection's event failed")
        self.on_event()


class LoopTicker:
    """Runs pysyncobj's tick on the loop: soon after an event or a proposal, and every `period`."""

    def __init__(self, sync: Any, loop: asyncio.AbstractEventLoop, poller: LoopPoller, period: float) -> None:
        self._sync = sync
        self._loop = loop
        self._period = period
        self._scheduled = False
        self._again = False
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        poller.on_event = self.soon
        poller.attach(loop)
        self._timer = loop.call_later(period, self._on_timer)

    def soon(self, twice: bool = False) -> None:
        """Tick on the loop's next turn; `twice` after a proposal: pysyncobj appends it at the end of
        one tick and, alone in the cluster, commits it at the start of the next."""
        self._again = self._again or twice
        if not self._scheduled and not self._stopped:
            self._scheduled = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._scheduled = False
        again, self._again = self._again, False
        self._run(2 if again else 1)

    def _run(self, ticks: int) -> None:
        for _ in range(ticks):
            try:
                self._sync.doTick(0.0)
            except Exception:  # pysyncobj's own thread logs and carries on too
                log.exception("raft tick failed")

    def _on_timer(self) -> None:
        if self._stopped:
            return
        self._run(1)  # (a turn asked for by `soon` still comes)
        self._timer = self._loop.call_later(self._period, self._on_timer)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
