"""Client and operator requests: each turned into a command (answered once it commits) or a read.

Reads (`wait`, `status`, the DLQ, limits and cron listings) are answered from the leader's
replica at once; changes are proposed and answered from their effects when their batch commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import anatomy, defaults
from .. import protocol as P
from ..replication import Replication
from ..state import TaskState, views
from ..state import commands as C
from ..state.model import Accepted, Count, Effect, Finished, Internal
from .budget import PeerBudget
from .dispatch import Dispatcher
from .proposer import UNPACKABLE, OnEffects, Proposer
from .roster import WorkerTable
from .router import Router
from .status import cluster_status
from .waiters import WaitRoom


class ClientDesk:
    def __init__(self, listen: str, replication: Replication, proposer: Proposer, router: Router,
                 dispatcher: Dispatcher, workers: WorkerTable) -> None:
        self.listen = listen
        self.replication = replication
        self.proposer = proposer
        self.router = router
        self.dispatcher = dispatcher
        self.workers = workers
        self.waiters = WaitRoom()
        self.budget = PeerBudget(defaults.HELD_FRAMES_PER_PEER * router.max_frame)
        self.alert_rules: Callable[[], list[dict[str, Any]]] | None = None  # the rules and what fires

    def handle(self, identity: bytes, msg: P.ClientRequest, size: int = 0) -> None:
        """Answer `msg`, a frame of `size` bytes from `identity`."""
        if isinstance(msg, P.Submit):
            self._submit(identity, msg, size)
        elif isinstance(msg, P.Wait):
            self._wait(identity, msg, size)
        elif isinstance(msg, P.WaitAny):
            self._wait_any(identity, msg, size)
        elif isinstance(msg, P.Status):
            status = cluster_status(self.listen, self.dispatcher.leading, self.replication, self.workers)
            in_flight, oldest = self.proposer.in_flight()
            self._reply(identity, P.StatusReply(msg.rid, {**status, "now": self.proposer.clock(),
                                                          "clock_skew": round(self.proposer.skew(), 3),
                                                          "proposals": {"in_flight": in_flight,
                                                                        "oldest_s": round(oldest, 3)}}))
        elif isinstance(msg, P.DlqList):
            self._dlq_list(identity, msg)
        elif isinstance(msg, P.DlqShow):
            self._dlq_show(identity, msg)
        elif isinstance(msg, P.LimitsShow):
            with self.replication.reading() as machine:
                self._reply(identity, P.LimitsReply(msg.rid, views.limits_view(machine)))
        elif isinstance(msg, P.AlertsList):
            rules = self.alert_rules() if self.alert_rules is not None else []
            self._reply(identity, P.Answer(msg.rid, {"rules": rules}))
        elif isinstance(msg, P.CronList):
            with self.replication.reading() as machine:
                self._reply(identity, P.CronEntries(msg.rid, [e.view() for e in machine.cron.entries.values()]))
        else:
            self._change(identity, msg, size)

    def _hold(self, identity: bytes, rid: int, size: int) -> int | None:
        """Charge a request that waits (for its commit, or its task) to its connection's budget;
        None, answered `unavailable`, when the connection holds too much already."""
        charge = self.budget.take(identity, size)
        if charge is None:
            self._reply(identity, P.Error(P.ErrorCode.UNAVAILABLE, f"this connection's requests still waiting "
                                          f"hold {self.budget.held(identity)} bytes (the limit is "
                                          f"{self.budget.limit}): resend once some are answered", rid))
        return charge

    def _reply(self, identity: bytes, message: P.Message) -> None:
        self.router.send(identity, message.encode())

    def _committed(self, identity: bytes, rid: int, charge: int, answer: Callable[[list[Effect]], None]) -> OnEffects:
        """A callback for a proposed command: `answer(effects)`; or tell the client that it did not
        commit (retry), or that it failed inside the state machine (an `Internal` effect). Either
        way the command's `charge` goes back to its connection's budget."""
        def on_effects(effects: list[Effect] | None, error: str | None) -> None:
            self.budget.give(identity, charge)
            failed = next((e for e in effects or [] if isinstance(e, Internal)), None)
            if effects is None and error is not None and error.startswith(UNPACKABLE):  # retrying cannot help
                self._reply(identity, P.Error(P.ErrorCode.INTERNAL, f"could not be proposed ({error})", rid))
            elif effects is None:
                self._reply(identity, P.Error(P.ErrorCode.UNAVAILABLE, f"not committed ({error}); retry", rid))
            elif failed is not None:
                self._reply(identity, P.Error(P.ErrorCode.INTERNAL, failed.message, rid))
            else:
                answer(effects)
        return on_effects

    def _submit(self, identity: bytes, msg: P.Submit, size: int) -> None:
        if anatomy.ON:
            for envelope in msg.tasks:
                anatomy.mark("received", envelope.id)
        charge = self._hold(identity, msg.rid, size)
        if charge is None:
            return

        def accepted(effects: list[Effect]) -> None:
            for effect in effects:
                if isinstance(effect, Accepted):
                    self._reply(identity, P.Accepted(msg.rid, effect.ids, self.proposer.clock()))
        answer = self._committed(identity, msg.rid, charge, accepted)

        def answered(effects: list[Effect] | None, error: str | None) -> None:
            self.dispatcher.answered(msg.tasks)
            answer(effects, error)
        if self.proposer.add(C.Submit(msg.tasks), answered):
            self.dispatcher.arrived(msg.tasks)
        self.dispatcher.poke()

    def _wait(self, identity: bytes, msg: P.Wait, size: int) -> None:
        with self.replication.reading() as machine:
            task = machine.tasks.get(msg.id)
            summary = task.summary() if task is not None and task.state in TaskState.TERMINAL else None
        if task is None:
            self._reply(identity, P.Result(msg.rid, msg.id, "not_found"))
        elif summary is not None:
            self._reply(identity, P.Result.of(msg.rid, summary))
            if anatomy.ON:
                anatomy.mark("result_sent", msg.id)
        else:
            charge = self._hold(identity, msg.rid, size)
            if charge is not None:
                self.waiters.add(msg.id, identity, msg.rid, time.monotonic() + msg.timeout, charge)

    def _wait_any(self, identity: bytes, msg: P.WaitAny, size: int) -> None:
        """Every task of `msg.ids` that has ended (or is unknown), at once; else the first to end."""
        ended = []
        with self.replication.reading() as machine:
            for task_id in msg.ids:
                task = machine.tasks.get(task_id)
                if task is None:
                    ended.append({"id": task_id, "state": "not_found"})
                elif task.state in TaskState.TERMINAL:
                    ended.append(task.summary())
        if ended or not msg.timeout:
            self._reply(identity, _any_answer(msg.rid, ended))
            return
        charge = self._hold(identity, msg.rid, size)
        if charge is not None:
            self.waiters.add_any(msg.ids, identity, msg.rid, time.monotonic() + msg.timeout, charge)

    def _dlq_list(self, identity: bytes, msg: P.DlqList) -> None:
        with self.replication.reading() as machine:
            ids = list(machine.dlq)[-msg.limit:] if msg.limit else []
            entries = [machine.tasks[i].summary(with_arguments=True) for i in reversed(ids)]
            total = len(machine.dlq)
        # Keep the reply well within a frame: large arguments are left to `dlq_show`.
        budget, truncated = self.router.max_frame // 2, False
        for entry in entries:
            size = len(P.encode(dict(entry)))
            if size > budget // 8:
                entry["args"], entry["kwargs"], truncated = ["…"], {}, True
                if "error" in entry:
                    entry["error"] = {**entry["error"], "traceback": entry["error"]["traceback"][-2000:]}
                size = len(P.encode(dict(entry)))
            budget -= size
            if budget < 0:
                truncated = True
                entries = entries[:entries.index(entry)]
                break
        self._reply(identity, P.DlqPage(msg.rid, total, entries, truncated))

    def _dlq_show(self, identity: bytes, msg: P.DlqShow) -> None:
        with self.replication.reading() as machine:
            task = machine.tasks.get(msg.id) if msg.id in machine.dlq else None
            summary = None if task is None else task.summary(with_arguments=True)
        if summary is None:
            self._reply(identity, P.Error(P.ErrorCode.NOT_FOUND, f"no dead letter with id {msg.id!r}", msg.rid))
        else:
            self._reply(identity, P.DlqEntry(msg.rid, summary))

    def _change(self, identity: bytes, msg: P.ClientRequest, size: int) -> None:
        """Requests that change state: one replicated command each, answered with what it touched."""
        charge = self._hold(identity, msg.rid, size)
        if charge is None:
            return
        command = _command_of(msg)
        with_ids = isinstance(msg, P.DlqReplay | P.DlqPurge)  # their `ok` names the letters touched

        def counted(effects: list[Effect]) -> None:
            counts = [e for e in effects if isinstance(e, Count)]
            ids = [i for e in counts for i in e.ids] if with_ids else None
            self._reply(identity, P.Counted(msg.rid, sum(e.n for e in counts), ids))
        self.proposer.add(command, self._committed(identity, msg.rid, charge, counted))
        if not isinstance(msg, P.Cancel | P.DlqPurge):
            self.dispatcher.poke()  # looser limits, a resumed queue or replayed letters may let work start

    # -- effects and timers -----------------------------------------------------------------

    def on_effects(self, effects: list[Effect]) -> None:
        """Answer the clients waiting for tasks that just ended."""
        for effect in effects:
            if isinstance(effect, Finished):
                for waiter in self.waiters.finished(effect.id):
                    self.budget.give(waiter.identity, waiter.charge)
                    self._reply(waiter.identity, _any_answer(waiter.rid, [effect.summary]) if waiter.ids
                                else P.Result.of(waiter.rid, effect.summary))
                    if anatomy.ON:
                        anatomy.mark("result_sent", effect.id)

    def expire_waits(self) -> None:
        for task_id, waiter in self.waiters.expired(time.monotonic()):
            self.budget.give(waiter.identity, waiter.charge)
            self._reply(waiter.identity, _any_answer(waiter.rid, []) if waiter.ids
                        else P.Result(waiter.rid, task_id, "pending"))

    def redirect_waiters(self, redirect: Any) -> None:
        """This node stopped leading: every held `wait` is told where to go (`redirect(rid)`)."""
        for waiter in self.waiters.clear():
            self.router.send(waiter.identity, redirect(waiter.rid))
        self.budget.clear()  # what is proposed is failed (and given back) by Proposer.fail_all


def _any_answer(rid: int, summaries: list[dict[str, Any]]) -> P.Answer:
    """The `ok` of a `wait_any`: each ended task as a `result` would give it (no `t`, no `rid`)."""
    results = []
    for summary in summaries:
        wire = P.Result.of(rid, summary).to_wire()
        del wire["t"], wire["rid"]
        results.append(wire)
    return P.Answer(rid, {"results": results})


def _command_of(msg: P.ClientRequest) -> C.Command:
    if isinstance(msg, P.Cancel):
        return C.Cancel(msg.id)
    if isinstance(msg, P.DlqReplay):
        return C.DlqReplay(msg.ids, msg.op)
    if isinstance(msg, P.DlqPurge):
        return C.DlqPurge(msg.ids, msg.op)
    if isinstance(msg, P.LimitsSet):
        return C.operator_limits(msg.actor, msg.rate, msg.key, msg.concurrency, msg.weight)
    if isinstance(msg, P.LimitsReset):
        return C.ResetLimits(msg.actor)
    if isinstance(msg, P.QueuePurge):
        return C.PurgeQueue(msg.actor, msg.op)
    if isinstance(msg, P.QueuePause):
        return C.Pause(msg.actor, msg.paused)
    if isinstance(msg, P.CronAdd):
        return C.CronAdd(msg.name, msg.actor, msg.expr, msg.tz, msg.args, msg.kwargs)
    if isinstance(msg, P.CronRemove):
        return C.CronRemove(msg.name)
    raise TypeError(f"no command for {type(msg).__name__}")
