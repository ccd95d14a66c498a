"""A sync handler that overruns its timeout keeps its slot and its limit units until its thread
returns: its retry never runs beside it, and its outcome says it overran."""

from __future__ import annotations

import pytest

import qrt
from qrt.local import LocalCluster, wait_until
from tests import actors
from tests.conftest import serving_cluster


def test_an_overrunning_thread_keeps_its_concurrency_unit_until_it_returns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Before, the timeout was reported at once: the concurrency unit came free and the retry ran on
    # the other worker beside the first attempt's thread (attempts overlapped by ~1.3 s).
    spans = tmp_path / "spans.txt"
    cluster: LocalCluster
    with serving_cluster(tmp_path, workers=2, concurrency=2) as cluster, qrt.Client(cluster.urls) as client:
        with pytest.raises(qrt.TaskFailed) as failed:
            client.submit(actors.overruns, str(spans), 2.5).result(timeout=30)
        # Before the fix the failure came back while both threads still ran: wait for them.
        wait_until(lambda: spans.exists() and len(spans.read_text().splitlines()) == 2, 10, what="both attempts ended")
        runs = sorted(tuple(map(float, line.split())) for line in spans.read_text().splitlines())
        (_, first_end), (second_start, _) = runs
        assert second_start >= first_end, f"attempts overlapped by {first_end - second_start:.2f} s"
        assert failed.value.error_type == "timeout"
        assert "overran" in failed.value.message
