"""Logging for `qrt coordinator` and `qrt worker`: text for people, JSON lines for machines.

A line about one task carries its id, actor and attempt, in the text and, with `--log-format
json`, as fields of their own (`task_id`, `actor`, `attempt`): `about(task_id, actor, attempt)` is
the `extra` that says so.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

FORMATS = ("text", "json")
ENV_FORMAT = "QRT_LOG_FORMAT"  # how a coordinator's history process is told
TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
TASK_FIELDS = ("task_id", "actor", "attempt", "worker")


def about(task_id: str, actor: str | None = None, attempt: int | None = None,
          worker: str | None = None) -> dict[str, Any]:
    """`extra=` for a log line about one task."""
    return {"task_id": task_id, "actor": actor, "attempt": attempt, "worker": worker}


class JsonLines(logging.Formatter):
    """One JSON object per line: ts (epoch seconds), level, logger, message, the task's fields when
    the line is about one, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
