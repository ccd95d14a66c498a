"""A leader paused under load (GC, VM steal, SIGSTOP) and resumed leaves no task running forever."""

from __future__ import annotations

import signal
import time

import qrt
from qrt.local import LocalCluster, wait_until
from tests import actors


def test_a_leader_paused_under_load_leaves_no_lease_that_nobody_delivers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # On resume, its loop handled buffered frames and proposed a dispatch from its stale view;
    # pysyncobj forwarded it to the new leader, which committed it: leases that no one sent and no
    # timer expired (8 tasks `running` for good, in every run on this machine).
    with LocalCluster(nodes=3, password="test-secret", base_dir=str(tmp_path)) as c:
        c.start_worker(["tests.actors"], concurrency=4)
        c.start_worker(["tests.actors"], concurrency=4)
        c.wait_for_workers(2)
        with qrt.Client(c.urls) as client:
            handles = client.submit_many(actors.sleep_then, [(0.2,)] * 200)
            wait_until(lambda: client.status()["queues"].get(actors.sleep_then.name, {}).get("running", 0) > 0, 10,
                       what="work under way when the leader stops")
            leader = c.coordinator_nodes[c.wait_for_leader()].proc
            assert leader is not None
            leader.send_signal(signal.SIGSTOP)
            time.sleep(2.5)  # ok-sleep: the pause itself (a new leader is elected meanwhile)
            leader.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 40
            unfinished = []
            for handle in handles:
                try:
                    handle.result(timeout=max(0.1, deadline - time.monotonic()))
                except qrt.ResultTimeout:
                    unfinished.append(handle.id)
            assert not unfinished, f"{len(unfinished)} tasks never finished: {client.status()['queues']}"
            # And no slot was lost or counted twice on the way: every worker is offered all of its.
            wait_until(lambda: all(w["free"] == w["concurrency"] == 4 for w in client.status()["workers"]), 10,
                       what="every slot free again")
