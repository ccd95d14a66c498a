"""From @actor to a result through a real coordinator process and a real worker process."""

from __future__ import annotations

import asyncio
import datetime
import signal
import time
from pathlib import Path

import pytest

import qrt
from qrt.local import LocalCluster, wait_until
from qrt.worker.session import BYE_WAIT
from tests import actors


def test_sync_client_submits_and_gets_results(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.add, 1, 2)
        assert isinstance(task.id, str) and task.id
        assert task.result(timeout=10) == 3
        assert client.submit(actors.sync_add, 2, 3).result(timeout=10) == 5
        assert client.submit("tests.actors.add", 4, 5).result(timeout=10) == 9
        assert client.task(task.id).result(timeout=10) == 3


async def test_async_client_is_awaitable(cluster: LocalCluster) -> None:
    async with qrt.AsyncClient(cluster.urls) as client:
        task = await client.submit(actors.add, 1, 2)
        assert await task.result(timeout=10) == 3
        handles = await client.submit_many(actors.add, [(i, i) for i in range(50)])
        assert [await h.result(timeout=10) for h in handles] == [2 * i for i in range(50)]


def test_submit_many_returns_handles_in_order(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        handles = client.submit_many(actors.add, [(1, 2), (3, 4)])
        assert [h.result(timeout=10) for h in handles] == [3, 7]
        assert len({h.id for h in handles}) == 2


def test_handler_sees_its_task_and_attempt(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.whoami)
        info = task.result(timeout=10)
        assert info["id"] == task.id and info["actor"] == "tests.actors.whoami" and info["attempt"] == 1


def test_retry_requests_another_attempt(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        assert client.submit(actors.fail_until, 3).result(timeout=20) == 3


def test_failure_after_retries_raises_task_failed_with_details(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.always_fails, "nope")
        with pytest.raises(qrt.TaskFailed) as info:
            task.result(timeout=20)
        assert isinstance(info.value, qrt.QrtError)
        assert info.value.error_type == "ValueError" and info.value.message == "nope"
        assert "always_fails" in info.value.traceback
        entry = client.dlq_show(task.id)
        assert entry["attempt"] == 2 and entry["error"]["type"] == "ValueError"


def test_non_retryable_goes_straight_to_the_dlq(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.not_retryable)
        with pytest.raises(qrt.TaskFailed) as info:
            task.result(timeout=10)
        assert info.value.error_type == "NonRetryable"
        assert client.dlq_show(task.id)["attempt"] == 1


@pytest.mark.parametrize("actor", [actors.too_slow, actors.too_slow_sync])
def test_handler_timeout_is_reported_as_timeout(cluster: LocalCluster, actor: qrt.Actor) -> None:  # type: ignore[type-arg]
    with qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.TaskFailed) as info:
            client.submit(actor).result(timeout=10)
        assert info.value.error_type == "timeout"


def test_delayed_task_runs_after_its_delay(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        started = time.monotonic()
        task = client.submit_with(actors.add, args=(1, 2), kwargs={}, delay=1.0)
        with pytest.raises(qrt.ResultTimeout):
            task.result(timeout=0.5)
        assert task.result(timeout=10) == 3
        assert time.monotonic() - started >= 1.0


def test_result_timeout_is_a_timeout_error(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit(actors.sleep_then, 2.0)
        with pytest.raises(TimeoutError):
            task.result(timeout=0.2)


def test_an_unknown_task_is_not_found(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client, pytest.raises(qrt.TaskNotFound):
        client.task("no-such-task").result(timeout=5)


async def test_an_unstored_result_reaches_only_the_clients_already_waiting(cluster: LocalCluster,
                                                                          tmp_path: Path) -> None:
    release = tmp_path / "release"
    async with qrt.AsyncClient(cluster.urls) as client:
        task = await client.submit(actors.no_result, str(release))
        async with asyncio.TaskGroup() as group:
            waiting = group.create_task(task.result(timeout=10))
            await asyncio.sleep(0)  # its `wait` is sent
            # The coordinator handles one client's requests in order: once the status is answered,
            # the wait sent before it is held there. Only then may the handler return.
            await client.status()
            release.touch()
        assert waiting.result() == 1
        with pytest.raises(qrt.TaskNotFound):  # result_ttl=0: nothing was kept for a later wait
            await client.task(task.id).result(timeout=5)


def test_cancelled_delayed_task_never_runs(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit_with(actors.add, (1, 1), delay=30)
        assert client.cancel(task.id) is True
        with pytest.raises(qrt.TaskCancelled):
            task.result(timeout=5)


def test_bad_arguments_fail_at_submit_naming_the_argument(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.InvalidArgument, match="argument 'x'"):
            client.submit(actors.add, object(), 2)
        with pytest.raises(qrt.InvalidArgument, match="do not fit"):
            client.submit(actors.add, 1)
        with pytest.raises(qrt.InvalidArgument, match=r"exceeds the frame limit"):
            client.submit("tests.actors.add", "x" * (17 * 1024 * 1024), 1)


def test_unpackable_result_is_a_failure_not_a_crash(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.TaskFailed) as info:
            client.submit(actors.unpackable).result(timeout=10)
        assert info.value.error_type == "UnpackableResult"
        assert client.submit(actors.add, 1, 1).result(timeout=10) == 2


def test_unserved_actor_is_accepted_and_queued(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        task = client.submit("nobody.serves.this", 1)
        with pytest.raises(qrt.ResultTimeout):
            task.result(timeout=0.3)
        row = client.status()["queues"]["nobody.serves.this"]
        assert row["queued"] >= 1 and row["served"] is False
        client.cancel(task.id)


def test_calling_an_actor_directly_runs_it_locally() -> None:
    assert actors.sync_add(2, 2) == 4


def test_a_result_over_the_frame_limit_fails_the_task_cleanly(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.TaskFailed) as info:
            client.submit(actors.huge_result).result(timeout=20)
        assert info.value.error_type == "ResultTooLarge"
        assert client.submit(actors.add, 1, 1).result(timeout=10) == 2


async def test_sequential_round_trips_never_stall(cluster: LocalCluster) -> None:
    """Regression: a reply sent from a commit callback could swallow the socket's wake-up, and a
    dispatch could leave a freed slot unoffered: both stalled a task for a second or forever."""
    async with qrt.AsyncClient(cluster.urls) as client:
        for i in range(1000):
            task = await client.submit(actors.add, i, 1)
            assert await task.result(timeout=3) == i + 1


def test_eta_holds_a_task_until_its_time(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=0.5)
        task = client.submit_with(actors.add, (1, 2), eta=eta)
        assert task.result(timeout=10) == 3
        assert datetime.datetime.now(datetime.UTC) >= eta  # ignoring its eta, it would be done in a few ms


def test_an_idempotency_key_gives_back_the_first_task(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        first = client.submit_with(actors.add, (2, 2), idempotency_key="once")
        again = client.submit_with(actors.add, (9, 9), idempotency_key="once")
        assert again.id == first.id and again.result(timeout=10) == 4


def test_a_task_not_started_before_it_expires_fails_as_expired(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        doomed = client.submit_with("nobody.serves.this", (), expires=0.2)
        with pytest.raises(qrt.TaskExpired) as info:
            doomed.result(timeout=10)
        assert isinstance(info.value, qrt.TaskFailed) and info.value.error_type == "expired"


def test_bad_submit_options_are_refused_naming_the_option(cluster: LocalCluster) -> None:
    with qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.InvalidArgument, match="naive datetime"):
            client.submit_with(actors.add, (1, 1), eta=datetime.datetime.now())
        with pytest.raises(qrt.InvalidArgument, match="priority"):
            client.submit_with(actors.add, (1, 1), priority="high")  # type: ignore[arg-type]


def test_a_worker_stopped_during_a_task_leaves_once_it_ends(fresh_cluster: LocalCluster) -> None:
    # The task ends, the worker reports it and says bye at once: the ack of that outcome must come
    # before the answer to its bye (a worker that has left reads nothing more). Held for a `run`
    # that would never come, it kept the worker waiting BYE_WAIT (3 s), then its outcome unacked.
    c = fresh_cluster.start()
    worker = c.start_worker(["tests.actors"], concurrency=1)
    c.wait_for_workers(1)
    with qrt.Client(c.urls) as client:
        task = client.submit(actors.sleep_then, 0.5)
        wait_until(lambda: client.status()["workers"][0]["free"] == 0, 5.0, 0.02, "the task to start")
        worker.send_signal(signal.SIGTERM)
        assert task.result(timeout=5)["attempt"] == 1  # it ran to its end
        ended = time.monotonic()
        worker.wait(timeout=10)
        assert time.monotonic() - ended < BYE_WAIT - 1.0
