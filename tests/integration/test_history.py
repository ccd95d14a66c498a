"""The task history on real processes: every node holds the same one, any node answers, it
survives restarts, and the CLI answers the operator's questions (issue 12, items 1, 2 and 7)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import qrt
from qrt.cli.main import main
from qrt.local import LocalCluster, wait_until
from tests import actors
from tests.conftest import serving


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path_factory.mktemp("history3")))
    with serving(c, workers=1, concurrency=4):
        yield c


def listed(c: LocalCluster, **filters: str) -> list[dict[str, Any]]:
    """The tasks the history of the node `cli` asks lists: each node answers from its own copy,
    written a moment after the leader's (its commit notice, its history's next write)."""
    with qrt.Client([c.urls[0]]) as node:
        return node.list_tasks(**filters)["tasks"]  # type: ignore[no-any-return]


def cli(c: LocalCluster, *args: str, url: str | None = None) -> str:
    result = CliRunner().invoke(main, [*args, "--coordinator", url or c.urls[0]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_node_answers_with_the_same_history(three: LocalCluster) -> None:
    with three.client() as client:
        ok = client.submit_many(actors.add, [(i, 1) for i in range(20)])
        bad = [client.submit(actors.always_fails, f"boom {i}") for i in range(3)]
        assert [h.result(timeout=20) for h in ok] == [i + 1 for i in range(20)]
        for h in bad:
            with pytest.raises(qrt.TaskFailed):
                h.result(timeout=20)

    def pages() -> list[str] | None:
        seen = []
        for url in three.urls:  # followers answer from their own copy
            with qrt.Client([url]) as one:
                seen.append(json.dumps(one.list_tasks(limit=1000), sort_keys=True))
        settled = {t["id"] for t in json.loads(seen[0])["tasks"] if t["state"] in ("succeeded", "dead")}
        return seen if len(set(seen)) == 1 and settled >= {h.id for h in ok + bad} else None
    wait_until(pages, 10, 0.2, "the same history on every node, with every task's end")
    dead = json.loads(cli(three, "tasks", "list", "--state", "dead", "--json", url=three.urls[2]))
    assert {t["id"] for t in dead["tasks"]} >= {h.id for h in bad}
    assert all(t["error_type"] == "ValueError" for t in dead["tasks"])
    shown = json.loads(cli(three, "tasks", "show", bad[0].id, "--json", url=three.urls[1]))
    assert (shown["state"], shown["args"], shown["attempt"]) == ("dead", ["boom 0"], 2)
    assert "boom 0" in shown["traceback"]
    assert [e["event"] for e in shown["events"]] == ["submitted", "leased", "retried", "queued", "leased", "dead"]
    assert set(shown) >= {"id", "actor", "state", "args", "kwargs", "keys", "result", "error_type",
                          "error_message", "traceback", "events"}


def test_stats_answer_which_actor_fails_and_how_fast(three: LocalCluster) -> None:
    with three.client() as client:
        start = time.time() - 1
        handles = client.submit_many(actors.add, [(i, i) for i in range(10)])
        for h in handles:
            h.result(timeout=20)
        wait_until(lambda: client.stats(start, by="actor")["rows"], 10, 0.1, "stats")
        reply = json.loads(cli(three, "stats", "--since", "10m", "--by", "actor", "--json"))
    rows = {r["group"]: r for r in reply["rows"]}
    assert rows["tests.actors.add"]["submitted"] >= 10
    assert rows["tests.actors.add"]["failure_rate"] == 0.0
    assert rows["tests.actors.add"]["run_p50"] is not None and rows["tests.actors.add"]["queue_wait_p99"] < 5.0
    text = cli(three, "stats", "--since", "10m", "--by", "worker")
    assert "run p50/p95/p99" in text


def test_describe_gives_the_present_state_without_waiting(three: LocalCluster) -> None:
    with three.client() as client:
        handle = client.submit(actors.sleep_then, 1.5, "done")
        seen = wait_until(lambda: (d := client.describe(handle.id))["state"] == "running" and d, 10, 0.05,
                          "the task running")
        assert seen["worker"] and seen["attempt"] == 1
        later = client.submit_with(actors.add, [1, 2], delay=60)
        assert client.describe(later.id)["state"] == "delayed"
        assert client.describe(later.id)["eta"] > time.time() + 50
        client.cancel(later.id)
        handle.result(timeout=10)
        assert client.describe(handle.id)["state"] == "succeeded"
        with pytest.raises(qrt.TaskNotFound):
            client.describe("never-submitted")


def test_bulk_cancel_acts_on_exactly_what_the_filter_shows(three: LocalCluster) -> None:
    with three.client() as client:
        doomed = client.submit_many("tests.no_worker_serves_this", [(i,) for i in range(5)])
        keep = client.submit_with("tests.no_worker_serves_this_either", [1])
        wait_until(lambda: len(listed(three, actor="tests.no_worker_serves_this", state="queued")) == 5,
                   10, 0.1, "the queued tasks in the history the CLI reads")
        out = cli(three, "tasks", "cancel", "--actor", "tests.no_worker_serves_this", "--yes")
        assert "cancelled 5" in out
        for h in doomed:
            with pytest.raises(qrt.TaskCancelled):
                h.result(timeout=5)
        assert client.describe(keep.id)["state"] == "queued"
        client.cancel(keep.id)


def test_history_survives_a_restart(tmp_path: Path) -> None:
    c = LocalCluster(nodes=1, base_dir=str(tmp_path))
    with serving(c, workers=1, concurrency=2):
        with c.client() as client:
            task_id = client.submit(actors.add, 20, 22).id
            assert client.task(task_id).result(timeout=10) == 42
            wait_until(lambda: client.list_tasks(state="succeeded")["tasks"], 10, 0.1, "the history")
        c.kill_node(0, signal.SIGTERM)
        c.start_node(0)
        c.wait_for_leader()
        c.wait_for_workers(1)
        with c.client() as client:
            shown = client.task_history(task_id)
            assert (shown["state"], shown["result"]) == ("succeeded", 42)
            assert [e["event"] for e in shown["events"]] == ["submitted", "leased", "succeeded"]  # once each
            again = client.submit(actors.add, 1, 1)
            assert again.result(timeout=10) == 2
            wait_until(lambda: client.list_tasks(limit=10)["tasks"][0]["id"] == again.id, 10, 0.1, "the new task")


def test_a_node_that_installs_a_snapshot_copies_the_history_it_missed(tmp_path: Path) -> None:
    # Node 2 is down while tasks run and the others compact their logs (a snapshot every second):
    # back, it receives a snapshot of the state rather than the batches, and copies their history
    # from a peer, so that it answers as the others do.
    c = LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path),
                     env={"QRT_RAFT_COMPACTION": "50,1"})
    with serving(c, workers=1, concurrency=4):
        with c.client() as client:
            first = client.submit_many(actors.add, [(i, 0) for i in range(10)])
            for h in first:
                h.result(timeout=10)
            c.kill_node(2, signal.SIGTERM)
            missed = [client.submit(actors.add, i, 1) for i in range(100)]  # a batch each, and more
            for h in missed:
                h.result(timeout=20)
            time.sleep(2.5)  # ok-sleep: compaction runs once a second (the setting above): let it, twice
            c.start_node(2)
            wait_until(lambda: "copied from a peer" in c.log("node2.log"), 30, 0.2, "node 2 copying what it missed")
            assert "installed a snapshot" in c.log("node2.log")

        def same() -> bool:
            pages = []
            for url in c.urls:
                with qrt.Client([url]) as one:
                    pages.append(json.dumps(one.list_tasks(limit=1000), sort_keys=True))
            return len(set(pages)) == 1 and len(json.loads(pages[0])["tasks"]) == 110
        wait_until(same, 20, 0.2, "the same history on every node")
        with qrt.Client([c.urls[2]]) as node2:
            shown = node2.task_history(missed[50].id)
            assert (shown["state"], shown["result"]) == ("succeeded", 51)
            assert [e["event"] for e in shown["events"]] == ["submitted", "leased", "succeeded"]
            rows = node2.stats(time.time() - 600)["rows"]
            assert {r["group"]: r["succeeded"] for r in rows}["tests.actors.add"] == 110


def test_a_history_process_killed_is_started_again_and_misses_nothing(three: LocalCluster) -> None:
    node = three.coordinator_nodes[0]
    assert node.proc is not None
    child = int(subprocess.run(["pgrep", "-P", str(node.proc.pid), "-f", "qrt.history.process"],
                               capture_output=True, text=True, check=True).stdout.split()[0])
    assert os.getpriority(os.PRIO_PROCESS, child) == 19  # it yields the CPU to dispatch (history/process.py)
    os.kill(child, signal.SIGKILL)
    with three.client() as client:
        handles = client.submit_many(actors.add, [(i, 100) for i in range(30)])
        assert [h.result(timeout=20) for h in handles] == [i + 100 for i in range(30)]

    def same() -> bool:
        pages = []
        for url in three.urls:
            with qrt.Client([url]) as one:
                pages.append(json.dumps(one.list_tasks(limit=1000), sort_keys=True))
        ids = {t["id"] for t in json.loads(pages[0])["tasks"] if t["state"] == "succeeded"}
        return len(set(pages)) == 1 and ids >= {h.id for h in handles}
    wait_until(same, 30, 0.2, "node 0's history, started again, equal to the others'")
    assert "the task history's process died" in three.log("node0.log")


def test_many_results_come_back_in_a_few_requests_in_the_order_they_end(three: LocalCluster) -> None:
    with three.client() as client:
        slow = client.submit(actors.sleep_then, 1.0, "slow")
        quick = client.submit_many(actors.add, [(i, 1) for i in range(50)])
        failing = client.submit(actors.not_retryable)
        order = [h.id for h in client.as_completed([slow, *quick, failing], timeout=20)]
        assert order[-1] == slow.id and set(order) == {slow.id, failing.id, *(h.id for h in quick)}
        assert client.results(quick, timeout=10) == [i + 1 for i in range(50)]
        with pytest.raises(qrt.TaskFailed):
            client.results([slow, failing], timeout=10)
        never = client.submit_with("tests.no_worker_serves_this", [1])
        with pytest.raises(qrt.ResultTimeout):
            list(client.as_completed([never], timeout=0.5))
        client.cancel(never.id)


def test_bulk_replay_runs_dead_letters_and_finished_tasks_again(three: LocalCluster) -> None:
    with three.client() as client:
        done = client.submit(actors.add, 40, 2)
        assert done.result(timeout=10) == 42
        dead = client.submit(actors.not_retryable)
        with pytest.raises(qrt.TaskFailed):
            dead.result(timeout=10)
        wait_until(lambda: dead.id in {t["id"] for t in listed(three, actor="tests.actors.not_retryable",
                                                               state="dead")},
                   10, 0.1, "the dead letter in the history the CLI reads")  # (written every 0.5 s)
        out = cli(three, "tasks", "replay", "--actor", "tests.actors.not_retryable", "--state", "dead", "--yes")
        assert re.search(r"replayed [1-9]\d* dead letters", out), out  # (an earlier test's may be there too)
        wait_until(lambda: client.task_history(dead.id)["events"][-1]["event"] == "dead" and
                   "replayed" in [e["event"] for e in client.task_history(dead.id)["events"]], 10, 0.1,
                   "the dead letter run again, and dead again")
        again = client.submit_again(done.id)
        assert again.id != done.id and again.result(timeout=10) == 42
