"""Cron entries in the replicated state: which fire when, fired once per scheduled time.

The entries live in the state machine, so a new leader continues exactly where the old one
stopped: a scheduled time is fired by the batch whose leader timestamp first passes it, and the
task it creates has an id made of the entry and the time, so it can never exist twice. An entry
keeps its expression parsed (cron_expr.py) from the command that put it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..cron_expr import CronExpr

# A fire this late still counts as on time; later, a "skip" entry counts it as missed instead.
ON_TIME_GRACE = 60.0
# Counting the fires missed during a long outage stops here (a per-second schedule, a day down).
MAX_MISSED_COUNTED = 10_000


@dataclass(slots=True)
class CronEntry:
    name: str
    actor: str
    schedule: CronExpr  # pickled as its text and time zone (CronExpr.__reduce__)
    args: list[Any]
    kwargs: dict[str, Any]
    source: str  # "actor" (declared with @qrt.actor(cron=...)) or "operator" (qrt cron add)
    next_fire: float = 0.0
    last_fire: float = 0.0
    missed: int = 0

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "actor": self.actor, "expr": self.schedule.text, "tz": self.schedule.tz,
                "args": self.args, "kwargs": self.kwargs, "source": self.source, "next_fire": self.next_fire,
                "last_fire": self.last_fire, "missed": self.missed}


@dataclass(slots=True)
class Fire:
    entry: CronEntry
    at: float

    @property
    def task_id(self) -> str:
        """Unique per entry and time; a long name is hashed so the id fits the 200-character limit."""
        name = self.entry.name
        if len(name) > 150:
            name = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
        return f"cron:{name}:{int(self.at)}"


class CronTable:
    def __init__(self) -> None:
        self.entries: dict[str, CronEntry] = {}

    def put(self, name: str, actor: str, expr: str, tz: str, args: list[Any], kwargs: dict[str, Any], *,
            source: str, now: float) -> None:
        """Add or change an entry; an unchanged schedule keeps its parsed form and its fire times.
        ValueError for an invalid `expr` or `tz` (validated before it was proposed)."""
        old = self.entries.get(name)
        if old is not None and (old.schedule.text, old.schedule.tz) == (expr, tz):
            self.entries[name] = CronEntry(name, actor, old.schedule, args, kwargs, source,
                                           old.next_fire, old.last_fire, old.missed)
        else:
            schedule = CronExpr.parse(expr, tz)
            self.entries[name] = CronEntry(name, actor, schedule, args, kwargs, source,
                                           schedule.next_after(now) or 0.0)

    def remove(self, name: str) -> bool:
        return self.entries.pop(name, None) is not None

    def next_fire(self) -> float | None:
        times = [e.next_fire for e in self.entries.values() if e.next_fire]
        return min(times) if times else None

    def due(self, now: float, missed_policy: Callable[[str], str]) -> list[Fire]:
        """The fires due by `now`, one per entry: the latest scheduled time; earlier ones are missed.

        `missed_policy(actor)` is "run" or "skip": whether a fire later than the grace still runs.
        """
        fires = []
        for entry in self.entries.values():
            if not entry.next_fire or entry.next_fire > now:
                continue
            expr = entry.schedule
            latest = entry.next_fire
            for _ in range(MAX_MISSED_COUNTED):
                later = expr.next_after(latest)
                if later is None or later > now:
                    break
                latest = later
                entry.missed += 1
            else:  # a very long outage: stop counting, but still find the latest time due
                latest = _latest_due(expr, latest, now)
            if missed_policy(entry.actor) == "skip" and now - latest > ON_TIME_GRACE:
                entry.missed += 1
            else:
                fires.append(Fire(entry, latest))
                entry.last_fire = latest
            entry.next_fire = expr.next_after(latest) or 0.0
        return fires


def _latest_due(expr: CronExpr, after: float, now: float) -> float:
    """The last scheduled time in (after, now]: look back from `now` over ever longer spans."""
    for span in (1.0, 60.0, 3600.0, 86400.0, 31 * 86400.0, 366 * 86400.0):
        start = max(after, now - span)
        candidate = expr.next_after(start)
        if candidate is not None and candidate <= now:
            while (later := expr.next_after(candidate)) is not None and later <= now:
                candidate = later
            return candidate
    return after
