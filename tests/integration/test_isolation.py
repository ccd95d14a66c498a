"""isolation="process": sync handlers in supervised child processes, killed at their timeout."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import qrt
from qrt.local import LocalCluster, wait_until
from tests import actors


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a container's init may be slow to reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def pid_in(path: Path) -> int:
    wait_until(path.exists, 20, what=f"the handler writing {path.name}")
    return int(path.read_text())


def test_handlers_past_their_timeout_are_killed_and_their_slots_freed_at_once(cluster: LocalCluster,
                                                                               tmp_path: Path) -> None:
    with qrt.Client(cluster.urls) as client:
        # As many as the worker has slots: if a timed-out handler kept its slot (as a thread does),
        # the tasks after them would wait for the 30 s sleeps to end.
        tasks = [client.submit(actors.stuck_in_c, str(tmp_path / f"stuck{i}")) for i in range(4)]
        for i, task in enumerate(tasks):
            with pytest.raises(qrt.TaskFailed) as info:
                task.result(timeout=20)
            assert info.value.error_type == "timeout"
            # Each sleeps 30 s: only killing it ends it within 15 s of its start (its timeout is
            # 0.5 s). Timed from the handler's start (when it wrote its PID file), not from the
            # submit: starting the children can take seconds on a loaded machine.
            ran_for = time.time() - (tmp_path / f"stuck{i}").stat().st_mtime
            assert ran_for < 15, f"task {i} was reported {ran_for:.1f} s after its handler started"
        pids = [pid_in(tmp_path / f"stuck{i}") for i in range(4)]
        assert cluster.workers[0].pid not in pids
        wait_until(lambda: not any(running(pid) for pid in pids), 5, what="the killed children to be gone")
        assert [h.result(timeout=10) for h in client.submit_many(actors.sync_add, [(i, 1) for i in range(4)])] \
            == [1, 2, 3, 4]
        assert client.submit(actors.isolated_whoami).result(timeout=10)["pid"] not in pids


def test_handler_runs_in_a_reused_child_of_the_worker_and_sees_its_task(cluster: LocalCluster) -> None:
    worker = cluster.workers[0].pid
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.isolated_whoami)
        first = task.result(timeout=10)
        assert first["pid"] != worker and first["ppid"] == worker
        assert first["id"] == task.id and first["actor"] == "tests.actors.isolated_whoami"
        assert first["attempt"] == 1
        again = client.submit(actors.isolated_whoami).result(timeout=10)
        assert again["pid"] == first["pid"]  # children are reused


def test_max_tasks_per_child_replaces_the_child(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        pids = [client.submit(actors.one_task_per_child).result(timeout=10) for _ in range(3)]
        assert len(set(pids)) == 3 and cluster.workers[0].pid not in pids
        wait_until(lambda: not any(running(pid) for pid in pids[:2]), 5, what="the used-up children to be gone")


@pytest.mark.parametrize(("how", "said"), [("exit", "exited with code 3"), ("signal", "killed by signal SIGKILL")])
def test_a_child_that_dies_is_reported_as_child_died(cluster: LocalCluster, how: str, said: str) -> None:
    with qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.TaskFailed) as info:
            client.submit(actors.exits_abruptly, how).result(timeout=20)
        assert info.value.error_type == "ChildDied" and said in info.value.message
        assert client.submit(actors.isolated_whoami).result(timeout=10)["attempt"] == 1


def test_a_child_death_is_retried_in_a_fresh_child(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        result = client.submit(actors.dies_on_first_attempt).result(timeout=20)
        assert result["attempt"] == 2 and result["pid"] != cluster.workers[0].pid


def test_retry_and_errors_in_a_child_are_reported_as_from_a_thread(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.isolated_fail_until, 3).result(timeout=20) == 3
        with pytest.raises(qrt.TaskFailed) as info:
            client.submit(actors.isolated_raises, "nope").result(timeout=20)
        assert info.value.error_type == "ValueError" and info.value.message == "nope"
        assert "isolated_raises" in info.value.traceback


def test_cancelling_a_running_task_kills_its_child(cluster: LocalCluster, tmp_path: Path) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.sleep_in_child, str(tmp_path / "pid"), 60.0)
        pid = pid_in(tmp_path / "pid")
        assert client.cancel(task.id) is True
        with pytest.raises(qrt.TaskCancelled):
            task.result(timeout=10)
        wait_until(lambda: not running(pid), 5, what="the cancelled task's child to be gone")
        assert client.submit(actors.sync_add, 1, 1).result(timeout=10) == 2


def _busy_and_idle_child(c: LocalCluster, tmp_path: Path) -> tuple[qrt.Client, set[int]]:
    """A worker with one child running a long task and one idle child; returns their PIDs."""
    client = qrt.Client(c.urls)
    c.wait_for_workers(1)
    client.submit(actors.sleep_in_child, str(tmp_path / "pid"), 60.0)
    busy = pid_in(tmp_path / "pid")
    idle = client.submit(actors.isolated_whoami).result(timeout=10)["pid"]
    return client, {busy, idle}


def test_a_drained_worker_leaves_no_child_behind(fresh_cluster: LocalCluster, tmp_path: Path) -> None:
    c = fresh_cluster.start()
    worker = c.start_worker(["tests.actors"], concurrency=2, extra=["--drain-timeout", "1"])
    client, pids = _busy_and_idle_child(c, tmp_path)
    with client:
        assert pids <= children_of(worker.pid)
        spawned = children_of(worker.pid)  # with multiprocessing's resource tracker
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        wait_until(lambda: not any(running(pid) for pid in spawned), 5, what="the worker's children to be gone")


def test_children_die_with_a_killed_worker(fresh_cluster: LocalCluster, tmp_path: Path) -> None:
    c = fresh_cluster.start()
    worker = c.start_worker(["tests.actors"], concurrency=2)
    client, pids = _busy_and_idle_child(c, tmp_path)
    with client:
        spawned = children_of(worker.pid)
        assert pids <= spawned
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        wait_until(lambda: not any(running(pid) for pid in spawned), 5, what="the orphaned children to be gone")


def test_a_rate_limit_holds_at_handler_start_in_child_processes(tmp_path: Path) -> None:
    # The limit counts leases; a cold child started its handler late while later leases reused warm
    # children at once: with 5/s, 10 handler starts within 0.76 s. Children are warm before their
    # slot is offered, so a start follows its lease by the same short hop every time.
    from tests.conftest import serving_cluster

    starts = tmp_path / "starts.txt"
    with serving_cluster(tmp_path, workers=1, concurrency=10) as c, qrt.Client(c.urls) as client:
        for handle in client.submit_many(actors.isolated_rated, [(str(starts),)] * 15):
            handle.result(timeout=30)
    times = sorted(float(t) for t in starts.read_text().split())
    busiest = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    # A 0.1 s margin for the hop from a lease to its start, which varies with the machine's load.
    assert busiest <= 5 or min(b - a for a, b in zip(times, times[5:], strict=False)) > 0.9, times
