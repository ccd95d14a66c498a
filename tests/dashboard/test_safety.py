"""The dashboard's safety (issue 13): loopback by default, a password or token beyond it, CSRF on
every action, a read-only mode that refuses actions posted by hand, and every action logged with
who did it. Real cluster, real `qrt dashboard` processes; beyond loopback in network namespaces."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from qrt.local import LocalCluster, wait_until
from tests import actors
from tests.netns import NetLab

from .conftest import Dashboard, start_dashboard


def csrf_of(dash: Dashboard, path: str = "/tasks") -> str:
    status, body, _ = dash.request(path)
    assert status == 200, body
    found = re.search(r'name="csrf" value="([^"]+)"', body) or re.search(r'"X-CSRF-Token": "([^"]*)"', body)
    assert found is not None
    return found.group(1)


def test_beyond_loopback_it_refuses_to_start_without_a_password_or_token(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "qrt.cli", "dashboard", "--listen", "10.213.0.9:7780",
                           "--coordinator", "tcp://127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "beyond loopback" in proc.stderr and "--password-file" in proc.stderr


def test_an_action_needs_the_sessions_csrf_token_and_is_logged_with_who(cluster: LocalCluster,
                                                                        dashboard: Dashboard) -> None:
    with cluster.client() as client:
        handle = client.submit_with(actors.add, (1, 2), delay=300)
        assert dashboard.request(f"/tasks/{handle.id}/cancel", data={})[0] == 403
        assert dashboard.request(f"/tasks/{handle.id}/cancel", data={"csrf": "forged"})[0] == 403
        assert client.describe(handle.id)["state"] == "delayed"
        token = csrf_of(dashboard)
        status, _, headers = dashboard.request(f"/tasks/{handle.id}/cancel", data={"csrf": token})
        assert status == 303 and headers["location"] == f"/tasks/{handle.id}"
        assert client.describe(handle.id)["state"] == "cancelled"
    wait_until(lambda: f"action by local from 127.0.0.1: cancel {handle.id}" in dashboard.log.read_text(), 5, 0.1,
               "the action in the dashboard's log")


def test_read_only_shows_no_action_and_refuses_one_posted_by_hand(cluster: LocalCluster, tmp_path: Path,
                                                                  dashboard: Dashboard) -> None:
    read_only = start_dashboard(cluster, tmp_path, "--read-only")
    try:
        with cluster.client() as client:
            handle = client.submit_with(actors.add, (1, 2), delay=300)
            status, body, _ = read_only.request(f"/tasks/{handle.id}")
            assert status == 200 and 'id="read-only"' in body
            assert 'id="cancel"' not in body and "/cancel" not in body
            assert 'id="cancel"' in dashboard.request(f"/tasks/{handle.id}")[1]  # the other one shows it
            for path in (f"/tasks/{handle.id}/cancel", "/actors/tests.actors.add/pause",
                         "/dead/act"):
                status, body, _ = read_only.request(path, data={"csrf": "anything", "action": "purge"},
                                                    headers={"X-CSRF-Token": "anything"})
                assert status == 403 and "read-only" in body
            assert client.describe(handle.id)["state"] == "delayed"
            assert "tests.actors.add" not in client.limits() or not client.limits()["tests.actors.add"]["paused"]
            client.cancel(handle.id)
    finally:
        read_only.stop()


def test_beyond_loopback_a_page_needs_the_password(tmp_path: Path) -> None:
    """The dashboard and a node in one namespace, the requests from another: no page, chart, live
    stream or action without signing in (or a bearer token); with either, the page."""
    lab = NetLab.create_or_skip(["node", "dash", "browser"])
    cluster = LocalCluster(nodes=1, base_dir=str(tmp_path), curve=True, hosts=[lab.address("node")],
                           node_prefixes=[lab.prefix("node")])
    (tmp_path / "password").write_text("correct horse battery\n")
    (tmp_path / "token").write_text("t0ken-for-scripts\n")
    dash = None
    try:
        cluster.start(wait=False)
        dash = start_dashboard(cluster, tmp_path, "--password-file", str(tmp_path / "password"), "--token-file",
                               str(tmp_path / "token"), prefix=lab.prefix("dash"), host=lab.address("dash"),
                               wait=False)

        def probe(*steps: list[object]) -> list[list[object]]:
            out = subprocess.run([*lab.prefix("browser"), sys.executable, "-m", "tests.dashboard.probe", dash.url,
                                  json.dumps(steps)], capture_output=True, text=True, timeout=60,
                                 cwd=str(Path(__file__).parents[2]))
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        def up() -> bool:
            try:
                return probe(["GET", "/signin", None, None])[0][0] == 200
            except AssertionError:  # not listening yet
                return False
        wait_until(up, 30, 0.3, "the dashboard answering in its namespace")
        refused = probe(["GET", "/", None, None], ["GET", "/tasks?state=dead", None, None],
                        ["GET", "/events/overview", None, None], ["GET", "/charts", None, None],
                        ["POST", "/actors/a/pause", {"csrf": "x"}, None],
                        ["GET", "/", None, {"Authorization": "Bearer wrong-token"}])
        assert [r[0] for r in refused] == [303, 303, 401, 303, 303, 303]
        assert refused[0][1] == "/signin?next=%2F" and refused[1][1] == "/signin?next=%2Ftasks%3Fstate%3Ddead"
        wrong = probe(["POST", "/signin", {"name": "ana", "secret": "guess", "next": "/"}, None])
        assert wrong[0][0] == 401 and "do not sign in" in wrong[0][2]
        signed = probe(["POST", "/signin", {"name": "ana", "secret": "correct horse battery", "next": "/tasks"}, None],
                       ["GET", "/tasks", None, None])
        assert signed[0][:2] == [303, "/tasks"]
        assert signed[1][0] == 200 and "task-list" in signed[1][2] and "ana" in signed[1][2]
        bearer = probe(["GET", "/tasks", None, {"Authorization": "Bearer t0ken-for-scripts"}])
        assert bearer[0][0] == 200 and "task-list" in bearer[0][2]
        guesses = probe(*[["POST", "/signin", {"name": "eve", "secret": f"guess{i}", "next": "/"}, None]
                          for i in range(5)])
        assert [g[0] for g in guesses] == [401, 401, 401, 401, 429]  # 5 failures a minute from one address
    finally:
        if dash is not None:
            dash.stop()
            print(dash.log.read_text())
        cluster.stop()
        lab.close()
        print(cluster.dump_logs())


def test_a_page_asked_for_under_another_host_name_is_refused(dashboard: Dashboard) -> None:
    """DNS rebinding: a site whose name points at 127.0.0.1 gets nothing from a loopback dashboard."""
    assert dashboard.request("/tasks", headers={"Host": "evil.example"})[0] == 400
    assert dashboard.request("/tasks", headers={"Host": "localhost"})[0] == 200


def test_a_bulk_action_acts_only_on_the_count_confirmed(cluster: LocalCluster, dashboard: Dashboard) -> None:
    with cluster.client() as client:
        dead = [client.submit(actors.always_fails, "for the count") for _ in range(2)]
        wait_until(lambda: all(client.describe(h.id)["state"] == "dead" for h in dead), 30, 0.1, "2 dead letters")
        wait_until(lambda: len(client.list_tasks(state="dead", error="for the count")["tasks"]) == 2, 10, 0.1,
                   "the dead letters in the history")
        group = client.task_history(dead[0].id)
        fingerprint = next(g["fingerprint"] for g in client.dead_groups()["groups"]
                           if g["sample_id"] in {h.id for h in dead})
        token = csrf_of(dashboard)
        status, body, _ = dashboard.request("/dead/act", data={"csrf": token, "action": "purge",
                                                                "fingerprint": fingerprint, "count": "1"})
        assert status == 400 and "not the 1 you confirmed" in body
        assert all(client.describe(h.id)["state"] == "dead" for h in dead) and group["state"] == "dead"
        status, _, _ = dashboard.request("/dead/act", data={"csrf": token, "action": "purge",
                                                             "fingerprint": fingerprint, "count": "2"})
        assert status == 303
        wait_until(lambda: client.list_tasks(state="failed", error="for the count")["tasks"] != [], 10, 0.1,
                   "the purged letters")
