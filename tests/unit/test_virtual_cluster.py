"""qrt.testing: users' flow-control assertions on a virtual clock; also the project's own."""

from __future__ import annotations

import datetime

import pytest

import qrt
from qrt.testing import VirtualCluster

calls: list[int] = []


@qrt.actor(name="vt.limited", rate_limit="5/s")
def limited(i: int) -> int:
    calls.append(i)
    return i


@qrt.actor(name="vt.per_tenant", concurrency=qrt.Concurrency(2, key="tenant"), retries=0)
async def per_tenant(tenant: str, n: int) -> str:
    return f"{tenant}-{n}"


@qrt.actor(name="vt.flaky", retries=2)
def flaky() -> int:
    attempt = qrt.current_task().attempt
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt}")
    return attempt


@qrt.actor(name="vt.ticker", cron="*/15 * * * * *")
def ticker() -> None:
    return None


def test_rate_limit_on_the_virtual_clock() -> None:
    with VirtualCluster([limited], workers=2) as vc:
        handles = [vc.submit(limited, i) for i in range(12)]
        assert len(vc.starts("vt.limited")) == 5
        vc.advance(1.02)  # the window is closed, and guarded (2 % of it): the first starts still count
        assert len(vc.starts("vt.limited")) == 5
        vc.advance(0.001)
        assert len(vc.starts("vt.limited")) == 10
        vc.run_until_idle()
        assert [h.result() for h in handles] == list(range(12))
        times = [s.at for s in vc.starts("vt.limited")]
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u <= t + 1.0) <= 5


def test_concurrency_per_tenant_and_fairness_with_durations() -> None:
    with VirtualCluster([per_tenant], workers=1, concurrency=10, durations={"vt.per_tenant": 1.0}) as vc:
        for n in range(6):
            vc.submit(per_tenant, "big", n)
        small = vc.submit(per_tenant, "small", 0)
        started = {s.task_id for s in vc.starts()}
        assert len(started) == 3 and small.id in started  # 2 of "big" (its cap) and "small" at once
        vc.advance(1.0)
        assert len(vc.starts()) == 5
        vc.run_until_idle()
        assert small.result() == "small-0" and vc.now - 0 > 0


def test_retries_back_off_on_the_virtual_clock() -> None:
    with VirtualCluster([flaky]) as vc:
        task = vc.submit(flaky)
        with pytest.raises(qrt.ResultTimeout):
            task.result()
        vc.run_until_idle()
        assert task.result() == 3
        gaps = [b.at - a.at for a, b in zip(vc.starts(), vc.starts()[1:], strict=False)]
        assert 1.0 <= gaps[0] <= 1.5 and 2.0 <= gaps[1] <= 3.0  # 1 s, then 2 s, with jitter


def test_cron_fires_once_per_scheduled_time() -> None:
    start = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    with VirtualCluster([ticker], start=start) as vc:
        vc.advance(60)
        fired = [s.at - start.timestamp() for s in vc.starts("vt.ticker")]
        assert fired == [15.0, 30.0, 45.0, 60.0]
        assert vc.cron_list()[0]["missed"] == 0


def test_delays_expiry_and_operator_limits() -> None:
    with VirtualCluster([limited]) as vc:
        later = vc.submit_with(limited, (1,), delay=30)
        vc.advance(29.9)
        assert later.state == "delayed"
        vc.advance(0.1)
        assert later.result() == 1
        vc.pause("vt.limited")
        doomed = vc.submit_with(limited, (2,), expires=5)
        vc.advance(10)
        with pytest.raises(qrt.TaskExpired):
            doomed.result()
        vc.resume("vt.limited")
        vc.set_limits("vt.limited", rate="1/m")  # `later` started at +30 s: the next start is at +90 s
        handles = [vc.submit(limited, i) for i in range(3)]
        vc.advance(121)  # to +161 s: starts at +90 and +150
        assert sum(h.state == "succeeded" for h in handles) == 2
        assert [round(s.at - vc.starts()[0].at) for s in vc.starts()][-2:] == [60, 120]
