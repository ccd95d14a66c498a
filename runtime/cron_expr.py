"""Cron expressions: parse "*/5 * * * *" (or 6 fields, seconds first) and find the next fire time.

Pure: the next time after a leader timestamp is computed from the expression and the time zone's
rules (zoneinfo, read from the pinned tzdata package), so every replica computes the same one.
"""

from __future__ import annotations

import datetime
import functools
import importlib.resources
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any

_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, lowest, highest, names)
_FIELDS = [("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS)]
# How far ahead to look for a match before calling an expression impossible ("0 0 30 2 *").
SEARCH_DAYS = 366 * 5


def _value(text: str, names: dict[str, int], field: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{field} value {text!r} is not a number")
    return int(text)


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{field} step {step_text!r} must be a positive number")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _value(a, names, field), _value(b, names, field)
        else:
            start = _value(body, names, field)
            end = high if step else start
        if not low <= start <= end <= high:
            raise ValueError(f"{field} {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


# IANA names are short ("America/Argentina/ComodRivadavia" is among the longest): a longer one is
# refused before zoneinfo turns it into a file path.
MAX_ZONE_CHARS = 64


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
_ZONES: dict[str, zoneinfo.ZoneInfo] = {}


def zone(tz: str) -> zoneinfo.ZoneInfo:
    """The time zone `tz` from the pinned `tzdata` package, never the host's database: every replica
    must compute the same fire times, whatever its host has installed (or not). ValueError unless
    `tz` names an IANA time zone."""
    if not isinstance(tz, str) or not 0 < len(tz) <= MAX_ZONE_CHARS or not _ZONE_NAME.fullmatch(tz):
        raise ValueError(f"unknown time zone {str(tz)[:MAX_ZONE_CHARS]!r}: a time zone is an IANA name of at most "
                         f"{MAX_ZONE_CHARS} characters, such as 'Europe/Paris'")
    found = _ZONES.get(tz)
    if found is not None:
        return found
    if tz not in _zone_names():  # the package's own list: case-exact whatever the file system
        raise ValueError(f"unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris')")
    try:
        with importlib.resources.files("tzdata").joinpath("zoneinfo", *tz.split("/")).open("rb") as f:
            found = zoneinfo.ZoneInfo.from_file(f, key=tz)
    except Exception:  # no such file (or a directory), or not a zone file
        raise ValueError(f"unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris')") from None
    _ZONES[tz] = found
    return found


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(importlib.resources.files("tzdata").joinpath("zones").read_text().split())


def check_zone(tz: str) -> None:
    """ValueError unless `tz` names an IANA time zone (from the pinned tzdata package)."""
    zone(tz)


@dataclass(frozen=True)
class CronExpr:
    text: str
    tz: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"

    @classmethod
    def parse(cls, text: str, tz: str = "UTC") -> CronExpr:
        """ValueError, naming the field, for anything that is not a valid expression or time zone."""
        if not isinstance(text, str):
            raise ValueError(f"a cron expression must be a string, not {type(text).__name__}")
        parts = text.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ValueError(f"cron expression {text!r} must have 5 fields (minute hour day month weekday) "
                             "or 6 (with seconds first)")
        check_zone(tz)
        try:
            sets = [_parse_field(part, name, low, high, names)
                    for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
        except ValueError as exc:
            raise ValueError(f"cron expression {text!r}: {exc}") from None
        weekdays = frozenset(d % 7 for d in sets[5])
        expr = cls(text, tz, sets[0], sets[1], sets[2], sets[3], sets[4], weekdays,
                   parts[3] == "*", parts[5] == "*")
        if expr.next_after(0.0) is None:
            raise ValueError(f"cron expression {text!r} never fires")
        return expr

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        """Pickled (in Raft snapshots) as its text and time zone, parsed again when loaded: a
        snapshot stays small and does not depend on how a parsed expression is laid out."""
        return CronExpr.parse, (self.text, self.tz)

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # classic cron: both restricted means either matches
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: float) -> float | None:
        """The first fire time strictly after `after` (epoch seconds), or None if there is none."""
        zone_info = zone(self.tz)
        start = datetime.datetime.fromtimestamp(int(after) + 1, zone_info).replace(tzinfo=None)
        day = start.date()
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                first = day == start.date()
                for hour in sorted(self.hours):
                    if first and hour < start.hour:
                        continue
                    for minute in sorted(self.minutes):
                        if first and (hour, minute) < (start.hour, start.minute):
                            continue
                        for second in sorted(self.seconds):
                            local = datetime.datetime(day.year, day.month, day.day, hour, minute, second)
                            if local < start:
                                continue
                            fire = local.replace(tzinfo=zone_info).timestamp()
                            if fire > after:  # a local time skipped by a DST change maps past it
                                return fire
            day += datetime.timedelta(days=1)
        return None
