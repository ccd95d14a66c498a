"""A rolling deploy: workers of old and new code declare different options for one actor. The
options of the worker started last are in force, an old worker reconnecting does not undo them,
and `status` shows the conflict (before, the latest hello replaced them: a rate limit vanished)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import qrt
from qrt.local import LocalCluster, wait_until
from tests.fake_worker import FakeWorker

ACTOR = "deploy.send_mail"
NEW = {"rate_limits": [[10, 1.0, None]]}  # the new code adds a rate limit
OLD: dict[str, Any] = {}


def registered(client: qrt.Client) -> Any:
    return client.limits().get(ACTOR, {}).get("registered", {}).get("rate_limits")


def test_the_latest_started_workers_options_win_and_the_conflict_is_shown(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client, \
            FakeWorker(cluster.urls[0], "new-code", {ACTOR: NEW}, slots=0, started=2000.0), \
            FakeWorker(cluster.urls[0], "old-code", {ACTOR: OLD}, slots=0, started=1000.0):  # says hello last
        wait_until(lambda: ACTOR in client.status()["option_conflicts"], 5, what="the conflict in status")
        assert registered(client) == NEW["rate_limits"]
        [one, two] = client.status()["option_conflicts"][ACTOR]
        assert {json.dumps(one["options"]), json.dumps(two["options"])} == {json.dumps(NEW), json.dumps(OLD)}
        out = subprocess.run([sys.executable, "-m", "qrt.cli", "status", "--coordinator", cluster.urls[0]],
                             capture_output=True, text=True, env={**os.environ}, timeout=30).stdout
        assert f"CONFLICT: the workers of {ACTOR}" in out
