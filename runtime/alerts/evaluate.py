"""Which rules hold right now: read from a replica of the state machine (under its lock), the
leader's view of its workers, and the node's task history (failure rates over a window).
Pure questions; the coordinator's AlertDesk decides what fires and resolves (coordinator/alerting.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import defaults
from ..state.views import oldest_queued, overdue_leases
from .rules import Rule


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    actor: str | None  # None: the rule is not about one actor
    value: float
    text: str

    @property
    def key(self) -> str:
        return f"{self.rule}\x1f{self.actor or ''}"


# (actor) -> (failed attempts, finished attempts) over the last `window` seconds (the history's rollups)
FailureCounts = Callable[[float], dict[str, tuple[int, int]]]


def evaluate(rules: tuple[Rule, ...], m: Any, now: float, served: set[str], failures: FailureCounts | None,
             missed_before: dict[str, int]) -> list[Finding]:
    """Every (rule, actor) whose condition holds at leader time `now`. `missed_before`: each cron
    entry's missed count at the previous evaluation (updated here)."""
    found: list[Finding] = []
    for rule in rules:
        for actor, value, text in _check(rule, m, now, served, failures, missed_before):
            if rule.actor is None or rule.actor == actor:
                found.append(Finding(rule.name, actor, value, f"{rule.name}: {text}"))
    missed_before.clear()
    missed_before.update({name: entry.missed for name, entry in m.cron.entries.items()})
    return found


def _check(rule: Rule, m: Any, now: float, served: set[str], failures: FailureCounts | None,
           missed_before: dict[str, int]) -> list[tuple[str | None, float, str]]:
    out: list[tuple[str | None, float, str]] = []
    if rule.condition == "failure_rate" and failures is not None:
        for actor, (failed, finished) in failures(rule.window).items():
            if finished >= rule.min_attempts and failed / finished >= rule.threshold:
                out.append((actor, failed / finished, f"{actor}: {failed} of {finished} attempts failed in the "
                                                      f"last {rule.window:g} s ({failed / finished:.0%})"))
    elif rule.condition == "queue_age":
        for actor, due in oldest_queued(m).items():
            if now - due >= rule.threshold:
                out.append((actor, now - due, f"{actor}: its oldest queued task has waited {now - due:.0f} s"))
    elif rule.condition == "dead_letters":
        counts: dict[str, int] = {}
        for task_id in reversed(m.dlq):  # newest first: stop at the first one older than the window
            if m.dlq[task_id] < now - rule.window:
                break
            task = m.tasks.get(task_id)
            if task is not None:
                counts[task.actor] = counts.get(task.actor, 0) + 1
        for actor, n in counts.items():
            if n >= rule.threshold:
                out.append((actor, float(n), f"{actor}: {n} new dead letters in the last {rule.window:g} s"))
    elif rule.condition == "stuck_lease":
        stuck: dict[str, int] = {}
        for worker in list(m.leases):
            for task_id, _ in overdue_leases(m, worker, now, defaults.LEASE_TIMEOUT):
                actor = m.tasks[task_id].actor
                stuck[actor] = stuck.get(actor, 0) + 1
        for actor, n in stuck.items():
            out.append((actor, float(n), f"{actor}: {n} tasks running past their timeout and the lease grace"))
    elif rule.condition == "missed_cron":
        for name, entry in m.cron.entries.items():
            before = missed_before.get(name)
            if before is not None and entry.missed > before:
                out.append((entry.actor, float(entry.missed - before),
                            f"cron entry {name} ({entry.actor}) missed {entry.missed - before} fires"))
    elif rule.condition == "no_worker":
        for actor, n in list(m.queued_count.items()):
            if actor not in served:
                out.append((actor, float(n), f"{actor}: {n} tasks queued and no connected worker serves it"))
    return out

