"""A rolling deploy: workers of old and new code declare different options for one actor. The
options of the worker started last are in force, an old worker reconnecting does not undo them,
and `status` shows the conflict (before, the latest hello replaced them: a rate limit vanished)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import zmq

import qrt
from qrt.local import LocalCluster, wait_until

ACTOR = "deploy.send_mail"
NEW = {"rate_limits": [[10, 1.0, None]]}  # the new code adds a rate limit
OLD: dict[str, Any] = {}


@contextmanager
def fake_worker(url: str, worker_id: str, options: dict[str, Any], started: float) -> Iterator[zmq.Socket]:  # type: ignore[type-arg]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, worker_id.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    try:
        sock.send(msgpack.packb({"v": 1, "t": "hello", "worker_id": worker_id, "slots": 0, "concurrency": 1,
                                 "actors": [{"name": ACTOR, "options": options}], "running": [],
                                 "started": started}))
        assert sock.poll(5000) and msgpack.unpackb(sock.recv())["t"] == "welcome"
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()


def registered(client: qrt.Client) -> Any:
    return client.limits().get(ACTOR, {}).get("registered", {}).get("rate_limits")


def test_the_latest_started_workers_options_win_and_the_conflict_is_shown(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client, \
            fake_worker(cluster.urls[0], "new-code", NEW, started=2000.0), \
            fake_worker(cluster.urls[0], "old-code", OLD, started=1000.0):  # says hello last
        wait_until(lambda: ACTOR in client.status()["option_conflicts"], 5, what="the conflict in status")
        assert registered(client) == NEW["rate_limits"]
        [one, two] = client.status()["option_conflicts"][ACTOR]
        assert {json.dumps(one["options"]), json.dumps(two["options"])} == {json.dumps(NEW), json.dumps(OLD)}
        out = subprocess.run([sys.executable, "-m", "qrt.cli", "status", "--coordinator", cluster.urls[0]],
                             capture_output=True, text=True, env={**os.environ}, timeout=30).stdout
        assert f"CONFLICT: the workers of {ACTOR}" in out
