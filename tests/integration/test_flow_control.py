"""Global limits hold across worker processes: decided once, in the replicated coordinator."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

import qrt
from qrt.local import LocalCluster
from tests import actors
from tests.conftest import serving_cluster


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with serving_cluster(tmp_path_factory.mktemp("flow"), workers=2, concurrency=8) as c:
        yield c


def test_global_rate_limit_holds_across_two_workers(two_workers: LocalCluster) -> None:
    with qrt.Client(two_workers.urls) as client:
        handles = client.submit_many(actors.rate_limited, [(i,) for i in range(15)])
        starts = sorted(h.result(timeout=30) for h in handles)
    # 15 starts at 5/s: at least two full windows between the first and the last.
    assert starts[-1] - starts[0] >= 2.0 - 0.05
    # No window of (nearly) one second holds more than 5; the margin absorbs the gap between the
    # lease commit (what the limit counts) and the handler's own start stamp.
    for i, start in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < start + 0.95) <= 5


def test_light_load_is_spread_over_the_idle_workers(two_workers: LocalCluster) -> None:
    # One task at a time: each finds both workers idle. The longest idle one gets it, so both work
    # (offered in a fixed order, the first worker used to get every task while the other sat idle).
    with qrt.Client(two_workers.urls) as client:
        pids = [client.submit(actors.whoami).result(timeout=10)["pid"] for _ in range(10)]
    assert len(set(pids)) == 2


def test_concurrency_per_tenant_holds_and_tenants_share_fairly(two_workers: LocalCluster) -> None:
    with qrt.Client(two_workers.urls) as client:
        busy = [client.submit(actors.one_per_tenant, "busy", 0.3) for _ in range(4)]
        quiet = client.submit(actors.one_per_tenant, "quiet", 0.3)
        spans = [h.result(timeout=30) for h in busy]
        quiet_span = quiet.result(timeout=30)
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.01, "two tasks of one tenant overlapped"
    assert quiet_span[0] < spans[1][0], "the quiet tenant waited behind the busy one's backlog"
