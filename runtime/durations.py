"""Durations ("5m", "7d"), sizes ("1GiB") and times (ISO or epoch) as people type them: the
command line's options and the dashboard's filters read them alike. ValueError names the text."""

from __future__ import annotations

import datetime
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZES = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_duration(text: str) -> float:
    """"90s", "5m", "1h", "7d", "2w" (or a bare number of seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 1h or 7d")
    return float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1)


def parse_size(text: str) -> int:
    """"500MB", "1GiB", "65536" (bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _SIZES:
        raise ValueError(f"{text!r} is not a size such as 500MB or 1GiB")
    return int(float(match.group(1)) * _SIZES[match.group(2).lower()])


def parse_time(text: str) -> float:
    """Epoch seconds, or an ISO 8601 time (local time when it names no zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch seconds nor an ISO time such as 2026-11-30T09:00") from None
    return moment.timestamp()  # a naive time is local time


def local(ts: float | None) -> str:
    """Epoch seconds as local ISO time, to the millisecond ("-" for None)."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="milliseconds")
