"""Where alerts go: a generic webhook (JSON POST), a Slack incoming webhook, e-mail over SMTP.
Sent from a thread (blocking I/O, a timeout each); at most `per_minute` per sink, the rest
dropped and logged, so a flapping rule cannot flood anyone."""

from __future__ import annotations

import json
import logging
import smtplib
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlparse

from .rules import Sink

log = logging.getLogger("qrt.alerts")

TIMEOUT = 10.0  # seconds per delivery


@dataclass(frozen=True, slots=True)
class Notice:
    rule: str
    state: str  # "firing" or "resolved"
    actor: str | None
    value: float
    at: float  # epoch seconds (leader time)
    text: str

    def body(self) -> dict[str, Any]:
        return {"rule": self.rule, "state": self.state, "actor": self.actor, "value": self.value, "at": self.at,
                "text": self.text}


class Sender:
    def __init__(self) -> None:
        self._sent: dict[str, deque[float]] = {}  # sink -> when it was last sent to, within a minute

    def send(self, sink: Sink, notice: Notice) -> bool:
        """Deliver `notice` (blocking): False when the sink's rate dropped it or delivery failed."""
        recent = self._sent.setdefault(sink.name, deque())
        now = time.monotonic()
        while recent and recent[0] < now - 60.0:
            recent.popleft()
        if len(recent) >= sink.per_minute:
            log.warning("alert %r (%s) not sent to %s: over its %d per minute", notice.rule, notice.state, sink.name,
                        sink.per_minute)
            return False
        recent.append(now)
        try:
            if sink.kind == "smtp":
                _mail(sink, notice)
            else:
                body = notice.body() if sink.kind == "webhook" else {"text": notice.text}
                request = urllib.request.Request(sink.url, json.dumps(body).encode(), method="POST",
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                    reply.read()
        except Exception as exc:  # a sink down must not take the leader's alerting with it
            log.error("alert %r (%s) could not be sent to %s: %s", notice.rule, notice.state, sink.name, exc)
            return False
        return True


def _mail(sink: Sink, notice: Notice) -> None:
    url = urlparse(sink.url)
    message = EmailMessage()
    message["Subject"] = f"[qrt {notice.state}] {notice.rule}" + (f" ({notice.actor})" if notice.actor else "")
    message["From"] = sink.sender
    message["To"] = ", ".join(sink.to)
    message.set_content(f"{notice.text}\n\n{json.dumps(notice.body(), indent=2)}\n")
    with smtplib.SMTP(url.hostname or "localhost", url.port or 25, timeout=TIMEOUT) as smtp:
        smtp.send_message(message)
