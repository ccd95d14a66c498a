"""The `qrt` command, as a user runs it: the real binary against a real cluster, and CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import qrt
from qrt.cli.main import main
from qrt.local import LocalCluster, wait_until
from tests import actors


def qrt_cmd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrt.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [[], ["coordinator"], ["worker"], ["submit"], ["wait"], ["status"], ["cancel"],
                                     ["dlq"], ["dlq", "list"], ["dlq", "show"], ["dlq", "replay"], ["dlq", "purge"],
                                     ["limits"], ["limits", "show"], ["limits", "set"], ["limits", "reset"],
                                     ["queue"], ["queue", "pause"], ["queue", "resume"], ["queue", "purge"],
                                     ["cron"], ["cron", "add"], ["cron", "remove"], ["cron", "list"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["submit", "a", "[1,"], "not valid JSON"),
    (["submit", "a", '{"x": 1}'], "must be a JSON array"),
    (["submit", "a", "--kwargs", "[1]"], "must be a JSON object"),
    (["submit", "a", "--delay", "-1"], "-1"),
    (["coordinator", "--peer", "127.0.0.1:9"], "odd number"),
    (["coordinator", "--raft", "10.1.2.3:7701", "--peer", "127.0.0.1:1", "--peer", "127.0.0.1:2"],
     "a Raft password is required"),
    (["coordinator", "--raft", "nonsense"], "HOST:PORT"),
    (["worker", "no_such_module_xyz"], "cannot import module 'no_such_module_xyz'"),
    (["dlq", "replay"], "either a task ID or --all"),
    (["status", "--coordinator", "localhost:7700"], "must be a URL"),
])
def test_bad_arguments_give_a_message_and_no_traceback(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["worker", "tests.actors"], ["submit", "a"], ["wait", "x"], ["status"],
                                     ["cancel", "x"], ["dlq", "list"], ["dlq", "show", "x"],
                                     ["dlq", "replay", "--all"], ["dlq", "purge", "--all"], ["limits", "show"],
                                     ["limits", "set", "a", "--concurrency", "1"], ["limits", "reset", "a"],
                                     ["queue", "pause", "a"], ["queue", "resume", "a"], ["queue", "purge", "a"],
                                     ["cron", "add", "n", "a", "* * * * *"], ["cron", "remove", "n"],
                                     ["cron", "list"]])
def test_every_command_that_talks_to_the_cluster_uses_its_coordinator_option(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--coordinator", "localhost:7700"])
    assert result.exit_code != 0 and "'localhost:7700' must be a URL" in result.output
    assert "Traceback" not in result.output


NOWHERE = "tcp://127.0.0.1:9"  # nothing listens there: a command that sent a request would fail with NoLeader


@pytest.mark.parametrize(("args", "message"), [
    (["limits", "set", "tests.actors.add"], "rate"),
    (["limits", "set", "tests.actors.add", "--weight", "2"], "key"),
    (["limits", "set", "tests.actors.add", "--key", "k"], "key"),
    (["limits", "set", "tests.actors.add", "--rate", "5 per s"], "'5 per s'"),
    (["cron", "add", "hb", "tests.actors.add", "61 * * * *"], "outside 0-59"),
    (["cron", "add", "hb", "tests.actors.add", "* * * * *", "--tz", "Mars/Olympus"], "'Mars/Olympus'"),
])
def test_the_library_refuses_bad_limits_and_cron_before_sending(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [*args, "--coordinator", NOWHERE])
    assert result.exit_code == 2, result.output  # a usage error, not NoLeader (exit 1): nothing was sent
    assert message in result.output.partition("Error: ")[2]
    assert "Traceback" not in result.output


def test_submit_wait_status_and_dlq_with_the_real_binary(cluster: LocalCluster) -> None:
    env = {"QRT_COORDINATORS": ",".join(cluster.urls)}
    done = qrt_cmd("submit", "tests.actors.add", "[2, 3]", "--wait", "--timeout", "20", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 5

    task_id = qrt_cmd("submit", "tests.actors.add", "[1]", "--kwargs", '{"y": 1}', env=env).stdout.strip()
    waited = qrt_cmd("wait", task_id, "--timeout", "20", "--coordinator", cluster.urls[0])
    assert waited.returncode == 0 and json.loads(waited.stdout) == 2

    failed = qrt_cmd("submit", "tests.actors.not_retryable", "--wait", "--timeout", "20", env=env)
    assert failed.returncode == 1
    error = json.loads(failed.stderr.splitlines()[0])
    assert error["state"] == "failed" and error["error_type"] == "NonRetryable"
    dead_id = error["id"]

    status = json.loads(qrt_cmd("status", "--json", env=env).stdout)
    assert status["is_leader"] and status["leader"] == cluster.urls[0] and status["term"] >= 1
    assert status["workers"][0]["concurrency"] == 4
    assert "tests.actors.add" in status["queues"]
    assert "tests.actors.add" in qrt_cmd("status", env=env).stdout

    listed = json.loads(qrt_cmd("dlq", "list", "--json", env=env).stdout)
    assert dead_id in [e["id"] for e in listed]
    shown = json.loads(qrt_cmd("dlq", "show", dead_id, env=env).stdout)
    assert shown["error"]["type"] == "NonRetryable" and "Traceback" in shown["error"]["traceback"]
    missing = qrt_cmd("dlq", "show", "nope", env=env)
    assert missing.returncode == 1 and "no dead letter" in missing.stderr and "Traceback" not in missing.stderr

    assert qrt_cmd("dlq", "replay", dead_id, env=env).stdout.strip() == "replayed 1"
    with qrt.Client(cluster.urls) as client, pytest.raises(qrt.TaskFailed):  # it fails again: back in the DLQ
        client.task(dead_id).result(timeout=20)
    assert qrt_cmd("dlq", "purge", dead_id, env=env).stdout.strip() == "purged 1"
    assert qrt_cmd("dlq", "purge", "--all", env=env).returncode == 0


def test_cancel_command(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit_with(actors.add, (1, 2), delay=60)
        result = qrt_cmd("cancel", task.id, "--coordinator", cluster.urls[0])
        assert result.returncode == 0 and "cancelled" in result.stdout
        with pytest.raises(qrt.TaskCancelled):
            task.result(timeout=5)


def test_client_command_without_a_coordinator_fails_cleanly() -> None:
    # The command's client is handed in with a short timeout (the default waits 15 s for a leader).
    with qrt.Client(NOWHERE, timeout=0.5) as client:
        result = CliRunner().invoke(main, ["status"], obj=client)
    assert result.exit_code == 1, result.output
    assert "no coordinator leader answered within 0.5 s" in result.output and "Traceback" not in result.output


def test_coordinator_on_a_port_in_use_fails_cleanly(cluster: LocalCluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from qrt.local import free_port

    node = cluster.coordinator_nodes[0]
    taken_listen = qrt_cmd("coordinator", "--listen", node.url, "--raft", f"127.0.0.1:{free_port()}",
                           "--data-dir", str(tmp_path / "a"))
    assert taken_listen.returncode == 1
    assert "cannot listen on" in taken_listen.stderr and "Traceback" not in taken_listen.stderr
    taken_raft = qrt_cmd("coordinator", "--listen", f"tcp://127.0.0.1:{free_port()}", "--raft", node.raft,
                         "--data-dir", str(tmp_path / "b"))
    assert taken_raft.returncode == 1
    assert "cannot listen for Raft" in taken_raft.stderr and "Traceback" not in taken_raft.stderr


def test_a_coordinator_url_that_is_not_tcp_is_a_usage_error() -> None:
    result = qrt_cmd("status", "--coordinator", "http://127.0.0.1:7700")
    assert result.returncode == 2 and "must be a URL such as tcp://" in result.stderr
    assert "Traceback" not in result.stderr


def test_limits_and_queue_commands_take_effect_at_once(cluster: LocalCluster) -> None:
    env = {"QRT_COORDINATORS": ",".join(cluster.urls)}
    assert qrt_cmd("limits", "set", "tests.actors.add", "--concurrency", "4", env=env).returncode == 0
    shown = json.loads(qrt_cmd("limits", "show", "--json", env=env).stdout)["tests.actors.add"]
    assert shown["concurrency"] == [[4, None]] and shown["override"] == {"cap": 4}
    assert "concurrency 4" in qrt_cmd("limits", "show", env=env).stdout
    bad = qrt_cmd("limits", "set", "tests.actors.add", "--rate", "5 per s", env=env)
    assert bad.returncode == 2 and "'5 per s'" in bad.stderr and "Traceback" not in bad.stderr
    assert "reset" in qrt_cmd("limits", "reset", "tests.actors.add", env=env).stdout
    assert json.loads(qrt_cmd("limits", "show", "--json", env=env).stdout)["tests.actors.add"]["override"] == {}

    assert qrt_cmd("queue", "pause", "tests.actors.add", env=env).returncode == 0
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.add, 1, 2)
        with pytest.raises(qrt.ResultTimeout):
            task.result(timeout=0.5)
        assert qrt_cmd("queue", "resume", "tests.actors.add", env=env).returncode == 0
        assert task.result(timeout=10) == 3

        doomed = client.submit_many("nobody.purges.this", [(1,), (2,), (3,)])
        asked = qrt_cmd("queue", "purge", "nobody.purges.this", env=env)
        assert asked.returncode == 1 and "3 queued or delayed tasks" in asked.stdout  # no answer: aborted
        purged = qrt_cmd("queue", "purge", "nobody.purges.this", "--yes", env=env)
        assert purged.stdout.strip() == "purged 3 tasks of nobody.purges.this"
        for handle in doomed:
            with pytest.raises(qrt.TaskCancelled):
                handle.result(timeout=5)


def test_cron_commands(cluster: LocalCluster) -> None:
    env = {"QRT_COORDINATORS": ",".join(cluster.urls)}
    bad = qrt_cmd("cron", "add", "hb", "tests.actors.add", "61 * * * *", "[2, 2]", env=env)
    assert bad.returncode == 2 and "outside 0-59" in bad.stderr
    added = qrt_cmd("cron", "add", "hb", "tests.actors.add", "* * * * * *", "[2, 2]", env=env)
    assert added.returncode == 0 and "next fire" in added.stdout
    with qrt.Client(cluster.urls) as client:
        fired = wait_until(lambda: client.cron_list()[0]["last_fire"], 10, what="a cron fire")
        assert client.task(f"cron:hb:{int(fired)}").result(timeout=10) == 4
    listed = qrt_cmd("cron", "list", env=env).stdout
    assert listed.startswith("hb  tests.actors.add  '* * * * * *' (UTC, operator)")
    assert qrt_cmd("cron", "remove", "hb", env=env).returncode == 0
    again = qrt_cmd("cron", "remove", "hb", env=env)
    assert again.returncode == 1 and "no cron entry named 'hb'" in again.stderr
