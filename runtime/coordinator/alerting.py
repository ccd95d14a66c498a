"""The leader's alerts: every ALERT_EVERY it evaluates the rules (alerts/evaluate.py, on a thread
of its own), and commits each change of state, firing or resolved, as an `alert` command before
it tells the sinks. The firing state is replicated: a new leader finds what fired, and neither
repeats it nor forgets to resolve it (the state machine answers a change that changes nothing with
a count of 0, and nobody is told)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..alerts.evaluate import Finding, evaluate
from ..alerts.rules import AlertConfig, Rule
from ..alerts.sinks import Notice, Sender
from ..history.schema import connect
from ..history.writer import Recording
from ..replication import Replication
from ..state import commands as C
from ..state.model import Count, Effect
from .proposer import Proposer
from .roster import WorkerTable

log = logging.getLogger("qrt.alerts")

ALERT_EVERY = 1.0  # seconds between evaluations on the leader


class AlertDesk:
    def __init__(self, config: AlertConfig, replication: Replication, proposer: Proposer, workers: WorkerTable,
                 history: Recording | None) -> None:
        self.config = config
        self.rules = {rule.name: rule for rule in config.rules}
        self.replication = replication
        self.proposer = proposer
        self.workers = workers
        self.history = history
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="qrt-alerts")
        self._local = threading.local()
        self._sender = Sender()
        self._seen_since: dict[str, float] = {}  # key -> leader time its condition was first found holding
        self._missed: dict[str, int] = {}  # cron entry -> missed count at the previous evaluation
        self._busy = False
        if history is None and any(r.condition == "failure_rate" for r in config.rules):
            log.warning("failure_rate rules need the task history (this node runs with --no-history): "
                        "they are not evaluated here")

    def tick(self) -> None:
        """On the leader's loop: evaluate, unless the previous evaluation is still running."""
        if self._busy or not self.config.rules:
            return
        self._busy = True
        served = {a for w in list(self.workers.by_id.values()) if w.connected for a in w.actors}
        now = self.proposer.clock()
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._find, now, served)
        future.add_done_callback(self._found)

    def office_taken(self) -> None:
        """A new office: conditions are timed afresh, cron misses counted from now."""
        self._seen_since.clear()
        self._missed.clear()

    # -- on the alerts' thread --------------------------------------------------------------

    def _find(self, now: float, served: set[str]) -> tuple[float, list[Finding], dict[str, dict[str, Any]]]:
        failures = self._failures if self.history is not None else None
        with self.replication.reading() as m:
            missed = self._missed or {name: entry.missed for name, entry in m.cron.entries.items()}
            findings = evaluate(self.config.rules, m, now, served, failures, missed)
            self._missed = missed
            firing = {key: dict(record) for key, record in m.alerts.items()}
        return now, findings, firing

    def _failures(self, window: float) -> dict[str, tuple[int, int]]:
        """Per actor: failed and finished attempts in the last `window` seconds (the history's rollups)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.history is not None
            conn = self._local.conn = connect(self.history.path, readonly=True)
        since = int((self.proposer.clock() - window) // 60)
        rows = conn.execute("SELECT value, sum(failed), sum(succeeded) FROM rollup WHERE dim = 'actor' AND minute >= ? "
                            "GROUP BY value", (since,)).fetchall()
        return {actor: (failed, failed + succeeded) for actor, failed, succeeded in rows}

    # -- back on the loop -------------------------------------------------------------------

    def _found(self, future: asyncio.Future[tuple[float, list[Finding], dict[str, dict[str, Any]]]]) -> None:
        self._busy = False
        if future.exception() is not None:
            log.error("evaluating the alert rules failed", exc_info=future.exception())
            return
        now, findings, firing = future.result()
        present = {f.key: f for f in findings}
        for key in [k for k in self._seen_since if k not in present]:
            del self._seen_since[key]
        for key, finding in present.items():
            since = self._seen_since.setdefault(key, now)
            rule = self.rules[finding.rule]
            if key not in firing and now - since >= rule.hold:
                self._change(rule, finding.actor, True, finding.value, finding.text)
        for key, record in firing.items():
            rule_name, actor = record["rule"], record["actor"] or None
            if key not in present:
                rule = self.rules.get(rule_name) or Rule(rule_name, "", 0.0)  # (a rule no longer in the file)
                self._change(rule, actor, False, record["value"], f"{rule_name}: resolved" +
                             (f" ({actor})" if actor else ""))

    def _change(self, rule: Rule, actor: str | None, firing: bool, value: float, text: str) -> None:
        def committed(effects: list[Effect] | None, error: str | None) -> None:
            changed = any(isinstance(e, Count) and e.n for e in effects or [])
            if not changed:
                return  # not committed, or it already was so (a new leader's first look)
            notice = Notice(rule.name, "firing" if firing else "resolved", actor, value, self.proposer.clock(), text)
            log.warning("alert %s: %s", notice.state, text)
            for name in rule.sinks:
                self._pool.submit(self._sender.send, self.config.sinks[name], notice)
        self.proposer.add(C.Alert(rule.name, actor or "", firing, float(value), text), committed)

    def view(self) -> list[dict[str, Any]]:
        """The rules with their state, for `alerts` (qrt alerts list)."""
        with self.replication.reading() as m:
            firing = [dict(r) for r in m.alerts.values()]
        out = []
        for rule in self.config.rules:
            out.append({"name": rule.name, "condition": rule.condition, "threshold": rule.threshold,
                        "actor": rule.actor, "window": rule.window, "for": rule.hold, "sinks": list(rule.sinks),
                        "firing": [{k: r[k] for k in ("actor", "since", "value", "text")} for r in firing
                                   if r["rule"] == rule.name]})
        return out
