"""The alert rules file (`qrt coordinator --alerts FILE`): sinks and rules, read and checked.

    [[sink]]
    name = "ops"
    webhook = "http://127.0.0.1:9000/hook"   # or slack = "https://hooks.slack.com/…",
                                             # or smtp = "smtp://host:25" with to = ["ops@example.com"]
    [[rule]]
    name = "mail failing"
    actor = "mail.send"        # absent: every actor
    failure_rate = 0.2         # share of finished attempts that failed, over `window`
    window = "5m"
    sinks = ["ops"]

A rule has one condition: `failure_rate` (with `window`, default 5m, and `min_attempts`, default
5), `queue_age` (the oldest queued task older than this), `dead_letters` (at least this many new
dead letters in `window`), `stuck_lease = true` (a task running past its timeout and the lease
grace), `missed_cron = true` (a cron fire missed), `no_worker = true` (queued tasks and no
connected worker serving the actor). `for` (a duration): the condition must hold that long first.
ValueError names what is wrong, with the rule or sink.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

CONDITIONS = ("failure_rate", "queue_age", "dead_letters", "stuck_lease", "missed_cron", "no_worker")
SINK_KINDS = ("webhook", "slack", "smtp")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: Any, where: str) -> float:
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return float(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd])\s*", text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{where}: {text!r} is not a duration such as 30s, 5m, 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Sink:
    name: str
    kind: str  # webhook, slack, smtp
    url: str
    to: tuple[str, ...] = ()
    sender: str = "qrt@localhost"
    per_minute: int = 20  # notifications at most; more are dropped (and logged)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    condition: str  # one of CONDITIONS
    threshold: float  # the rate, the age or count; 1 for the boolean conditions
    actor: str | None = None
    window: float = 300.0
    min_attempts: int = 5
    hold: float = 0.0  # `for`: how long the condition must hold before it fires
    sinks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertConfig:
    sinks: dict[str, Sink] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()


def load(path: str) -> AlertConfig:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read the alerts file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the alerts file {path} is not valid TOML: {exc}") from None
    return parse(raw)


def parse(raw: dict[str, Any]) -> AlertConfig:
    unknown = set(raw) - {"sink", "rule"}
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(sorted(unknown))}: an alerts file has [[sink]] and [[rule]]")
    sinks: dict[str, Sink] = {}
    for i, entry in enumerate(raw.get("sink", [])):
        sink = _sink(entry, f"sink {i + 1}")
        if sink.name in sinks:
            raise ValueError(f"two sinks are named {sink.name!r}")
        sinks[sink.name] = sink
    rules: list[Rule] = []
    for i, entry in enumerate(raw.get("rule", [])):
        rule = _rule(entry, f"rule {i + 1}")
        missing = [s for s in rule.sinks if s not in sinks]
        if missing:
            raise ValueError(f"rule {rule.name!r}: no sink named {', '.join(map(repr, missing))}")
        if any(r.name == rule.name for r in rules):
            raise ValueError(f"two rules are named {rule.name!r}")
        rules.append(rule)
    return AlertConfig(sinks, tuple(rules))


def _named(entry: dict[str, Any], where: str, what: str, choices: tuple[str, ...]) -> tuple[str, str]:
    """An entry's name, and which one of `choices` (its kind, or its condition) it gives."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: `name` is required (a string)")
    given = [c for c in choices if c in entry]
    if len(given) != 1:
        raise ValueError(f"{what} {name!r}: give exactly one {'condition ' if what == 'rule' else ''}of "
                         f"{', '.join(choices)}")
    return name, given[0]


def _sink(entry: dict[str, Any], where: str) -> Sink:
    name, kind = _named(entry, where, "sink", SINK_KINDS)
    url = entry[kind]
    scheme = urlparse(url).scheme if isinstance(url, str) else ""
    if kind == "smtp":
        to = entry.get("to")
        if scheme != "smtp" or not isinstance(to, list) or not to or not all(isinstance(t, str) for t in to):
            raise ValueError(f"sink {name!r}: smtp = \"smtp://HOST:PORT\" with to = [\"address\", ...]")
        return Sink(name, kind, url, tuple(to), str(entry.get("from", "qrt@localhost")),
                    int(entry.get("per_minute", 20)))
    if scheme not in ("http", "https"):
        raise ValueError(f"sink {name!r}: {kind} must be an http(s) URL, not {url!r}")
    return Sink(name, kind, url, per_minute=int(entry.get("per_minute", 20)))


def _rule(entry: dict[str, Any], where: str) -> Rule:
    name, condition = _named(entry, where, "rule", CONDITIONS)
    value = entry[condition]
    if condition == "failure_rate":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"rule {name!r}: failure_rate is a share between 0 and 1, not {value!r}")
        threshold = float(value)
    elif condition == "queue_age":
        threshold = duration(value, f"rule {name!r}: queue_age")
    elif condition == "dead_letters":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"rule {name!r}: dead_letters is a count (at least 1), not {value!r}")
        threshold = float(value)
    else:
        if value is not True:
            raise ValueError(f"rule {name!r}: write {condition} = true")
        threshold = 1.0
    sinks = entry.get("sinks", [])
    if not isinstance(sinks, list) or not all(isinstance(s, str) for s in sinks):
        raise ValueError(f"rule {name!r}: sinks is a list of sink names")
    actor = entry.get("actor")
    if actor is not None and not isinstance(actor, str):
        raise ValueError(f"rule {name!r}: actor is a string")
    return Rule(name, condition, threshold, actor, duration(entry.get("window", "5m"), f"rule {name!r}: window"),
                int(entry.get("min_attempts", 5)), duration(entry.get("for", 0), f"rule {name!r}: for"),
                tuple(sinks))
