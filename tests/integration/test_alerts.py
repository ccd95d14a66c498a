"""Alerts (issue 12, item 4): a rule fires once per incident, resolves once, does not fire twice
across a failover, and reaches a webhook, Slack and e-mail (an HTTP receiver and an SMTP server
on 127.0.0.1, started here)."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from qrt.alerts.rules import load, parse
from qrt.cli.main import main
from qrt.local import LocalCluster, free_port, wait_until
from tests.conftest import serving


class Receiver:
    """An HTTP server on 127.0.0.1 keeping every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode())
        return "250 OK"


@pytest.fixture
def sinks() -> Iterator[tuple[Receiver, Receiver, Mailbox, int]]:
    hook, slack, mailbox = Receiver(), Receiver(), Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        yield hook, slack, mailbox, smtp.port
    finally:
        smtp.stop()
        hook.close()
        slack.close()


def test_a_rule_fires_once_resolves_once_and_not_again_after_a_failover(
        tmp_path: Path, sinks: tuple[Receiver, Receiver, Mailbox, int]) -> None:
    hook, slack, mailbox, smtp_port = sinks
    rules = tmp_path / "alerts.toml"
    rules.write_text(f"""
[[sink]]
name = "ops"
webhook = "{hook.url}"

[[sink]]
name = "chat"
slack = "{slack.url}"

[[sink]]
name = "mail"
smtp = "smtp://127.0.0.1:{smtp_port}"
to = ["ops@example.com"]

[[rule]]
name = "backlog"
queue_age = "1s"
sinks = ["ops", "chat", "mail"]

[[rule]]
name = "no worker"
no_worker = true
for = "1s"
sinks = ["ops"]
""")
    c = LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path), node_args=["--alerts", str(rules)])
    with serving(c, workers=0, concurrency=1), c.client() as client:
        stuck = client.submit_many("tests.nobody_serves_this", [(i,) for i in range(3)])

        def firing(rule: str) -> list[dict[str, Any]]:
            return [b for b in hook.bodies if b["rule"] == rule and b["state"] == "firing"]
        wait_until(lambda: firing("backlog") and firing("no worker"), 20, 0.1, "both rules firing")
        body = firing("backlog")[0]
        assert (body["actor"], body["state"]) == ("tests.nobody_serves_this", "firing")
        assert body["value"] >= 1.0 and isinstance(body["at"], float) and "waited" in body["text"]
        wait_until(lambda: slack.bodies and mailbox.messages, 10, 0.1, "the Slack and e-mail notices")
        assert "backlog" in slack.bodies[0]["text"] and "[qrt firing] backlog" in mailbox.messages[0]
        listed = {r["name"]: r for r in client.alerts()}
        assert listed["backlog"]["firing"][0]["actor"] == "tests.nobody_serves_this"

        leader = c.wait_for_leader()
        c.kill_node(leader, signal.SIGKILL)
        assert c.wait_for_leader() != leader
        client.cancel_many([h.id for h in stuck])  # the incident ends
        wait_until(lambda: [b for b in hook.bodies if b["state"] == "resolved"] and
                   len([b for b in hook.bodies if b["state"] == "resolved"]) == 2, 20, 0.1, "both resolved")
        states = [(b["rule"], b["state"]) for b in hook.bodies]
        assert sorted(states) == sorted([("backlog", "firing"), ("no worker", "firing"), ("backlog", "resolved"),
                                         ("no worker", "resolved")]), states  # once each, across the failover
        alive = [url for i, url in enumerate(c.urls) if i != leader]
        out = CliRunner().invoke(main, ["alerts", "list", *(a for url in alive for a in ("--coordinator", url))],
                                 catch_exceptions=False)
        assert "backlog" in out.output and "ok" in out.output


def test_a_rules_file_with_a_mistake_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sink named 'nowhere'"):
        parse({"rule": [{"name": "r", "queue_age": "1m", "sinks": ["nowhere"]}]})
    with pytest.raises(ValueError, match="exactly one condition"):
        parse({"rule": [{"name": "r", "queue_age": "1m", "failure_rate": 0.5}]})
    with pytest.raises(ValueError, match="failure_rate is a share between 0 and 1"):
        parse({"rule": [{"name": "r", "failure_rate": 5}]})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load(str(bad))
    result = CliRunner().invoke(main, ["coordinator", "--alerts", str(bad), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not valid TOML" in result.output
