"""Network partitions: coordinator nodes, workers and the client each in a network namespace (tests/netns.py).

A cut is silent (frames vanish, as behind a firewall's DROP rule) and lasts until healed. What must hold:
the majority elects a leader and keeps committing; the minority commits nothing; a worker cut off from
the leader fences itself before its lease is granted elsewhere; after healing every node agrees.

Each test prints its measured figures (`pytest -s` shows them): failover time, the fence and lease
timing, the time nodes take to agree after a heal, and whether the returning node forced an election.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qrt import defaults
from qrt.local import LocalCluster, wait_until
from tests.netns import NetLab, new_task_id

NODES = ["n0", "n1", "n2"]
WORKERS = ["w0", "w1"]
CLIENT = "c"
# A partition long enough that the cut-off node campaigns on its own many times over (issue 10 saw
# it force an election on its return after 15 s).
PARTITION_SECONDS = 15.0
# Generous bounds, to fail on a wedge and not on a slow machine: an election takes 0.4-2.5 s
# (DESIGN.md); nodes agreed 8 s after a heal without the pending replication change (measured).
ELECTION_BOUND = 10.0
AGREE_BOUND = 20.0
# The goal of issue 10, defect 10, for a heal: every node agrees within this, with no new election.
HEAL_TARGET = 3.0
# Status fields that every node must report alike once it agrees: the log digest proves the same
# batches were applied. The state digest (computed at checkpoints, in a child) is compared after.
AGREEING = ("leader", "term", "applied_batches", "digest")


def report(name: str, figures: dict[str, Any]) -> None:
    print(f"partition figures, {name}: {json.dumps(figures, sort_keys=True)}")


@dataclass
class NetCluster:
    """A 3-node cluster, workers and a client, each in a namespace of `lab`; views from each node's own namespace."""

    lab: NetLab
    cluster: LocalCluster
    workers: dict[str, int] = field(default_factory=dict)  # member -> PID of its worker process

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls

    def view(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        """Node i's own view (status local), asked from inside its namespace: it answers even when cut off."""
        return self.lab.agent(NODES[i]).status(self.urls[i], local=True, timeout=timeout)

    def must_view(self, i: int) -> dict[str, Any]:
        view = self.view(i, timeout=5.0)
        assert view is not None, f"{NODES[i]} did not answer status from its own namespace"
        return view

    def views(self, nodes: list[int] | None = None) -> list[dict[str, Any] | None]:
        return [self.view(i) for i in (range(len(NODES)) if nodes is None else nodes)]

    def agreed(self, nodes: list[int] | None = None) -> dict[str, Any] | None:
        """The common view when these nodes agree on leader, term, applied batches and digests; else None."""
        views = self.views(nodes)
        if any(v is None or v["leader"] is None for v in views):
            return None
        if len({tuple(v.get(k) for k in AGREEING) for v in views if v is not None}) != 1:
            return None
        if sum(1 for v in views if v is not None and v["is_leader"]) != 1:
            return None
        return views[0]

    def states_agree(self) -> bool:
        """Every node's newest state digest is the same checkpoint's, and none found a divergence."""
        views = self.views()
        if any(v is None for v in views):
            return False
        digests = [v.get("state_digest") for v in views if v is not None]
        assert all(d is None or not d.get("diverged") for d in digests), digests
        return len({json.dumps(d, sort_keys=True) for d in digests}) == 1

    def leader(self, nodes: list[int] | None = None, above_term: int = 0) -> int | None:
        """The node that leads with all `nodes` agreeing, in a term above `above_term`; else None."""
        nodes = list(range(len(NODES))) if nodes is None else nodes
        common = self.agreed(nodes)
        if common is None or common["term"] <= above_term:
            return None
        return next(i for i in nodes if self.urls[i] == common["leader"])

    def wait_for_leader(self, nodes: list[int] | None = None, above_term: int = 0,
                        timeout: float = ELECTION_BOUND) -> int:
        found: list[int] = []

        def elected() -> bool:
            i = self.leader(nodes, above_term)
            found[:] = [] if i is None else [i]
            return bool(found)
        wait_until(elected, timeout, 0.05, "a leader that the nodes agree on")
        return found[0]

    def start_worker(self, member: str, modules: list[str], concurrency: int = 2) -> None:
        proc = self.cluster.start_worker(modules, concurrency=concurrency, prefix=self.lab.prefix(member),
                                         name=f"{member}.log")
        self.workers[member] = proc.pid

    def wait_for_workers(self, n: int, timeout: float = 20.0) -> None:
        def connected() -> bool:
            leader = self.leader()
            view = None if leader is None else self.view(leader)
            return view is not None and sum(w["connected"] for w in view["workers"]) >= n
        wait_until(connected, timeout, 0.1, f"{n} connected worker(s)")

    def submit(self, actor: str, args: list[Any], timeout: float = 15.0) -> str:
        """Submit from the client's namespace (the qrt client: redirects, failover); the task's id."""
        reply = self.lab.agent(CLIENT).submit(self.urls, actor, args, timeout)
        assert "ok" in reply, f"submit of {actor} not accepted: {reply}"
        return str(reply["ok"])

    def result(self, task_id: str, timeout: float = 20.0) -> Any:
        reply = self.lab.agent(CLIENT).result(self.urls, task_id, timeout)
        assert "ok" in reply, f"no result for {task_id}: {reply}"
        return reply["ok"]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[NetCluster]:
    with net_cluster(tmp_path) as cluster:
        yield cluster


@contextmanager
def net_cluster(base: Path) -> Iterator[NetCluster]:
    """Started nodes with an agreed leader; the test starts its workers. Everything is stopped and
    every namespace deleted afterwards, whatever happened (processes by PID first, then the lab)."""
    lab = NetLab.create_or_skip([*NODES, *WORKERS, CLIENT])
    # Off loopback, the client/worker port requires CURVE keys (docs/security.md).
    cluster = LocalCluster(nodes=len(NODES), password="partition-test", base_dir=str(base), curve=True,
                           hosts=[lab.address(n) for n in NODES], node_prefixes=[lab.prefix(n) for n in NODES])
    keys = cluster.curve_keys("client")
    lab.agent_env = {"QRT_CURVE_SECRET_KEY": keys["curve_secret_key"], "QRT_CURVE_SERVER_KEY": keys["curve_server_key"]}
    try:
        cluster.start(wait=False)  # its own wait asks from the root namespace, which reaches no node
        net = NetCluster(lab, cluster)
        net.wait_for_leader(timeout=20)
        yield net
    finally:
        cluster.stop()
        lab.close()
        print(cluster.dump_logs())


def test_an_isolated_leader_is_replaced_and_commits_nothing_on_its_side(net: NetCluster) -> None:
    net.start_worker("w0", ["tests.actors"])
    net.wait_for_workers(1)
    assert net.result(net.submit("tests.actors.add", [1, 2])) == 3
    old = net.wait_for_leader()
    majority = [i for i in range(len(NODES)) if i != old]
    term = net.must_view(old)["term"]

    # A client beside the cut-off leader submits, first while that node still believes it leads (it
    # steps down after leaderFallbackTimeout), then after; neither may be accepted.
    minority_ids = [new_task_id(), new_task_id()]
    minority_replies: list[dict[str, Any]] = []

    def submit_on_the_minority_side() -> None:
        agent = net.lab.agent(NODES[old])
        for task_id in minority_ids:
            body = {"t": "submit", "tasks": [{"id": task_id, "actor": "tests.actors.add", "args": [40, 2]}]}
            minority_replies.append(agent.ask(net.urls[old], body, timeout=2 * defaults.RAFT_LEADER_FALLBACK_TIMEOUT))

    cut = time.monotonic()
    net.lab.isolate(NODES[old])
    minority_client = threading.Thread(target=submit_on_the_minority_side)
    minority_client.start()
    try:
        new = net.wait_for_leader(majority, above_term=term)
        failover = time.monotonic() - cut
    finally:
        minority_client.join(timeout=30)
    cut_off_view = net.must_view(old)

    # The majority commits: submits are accepted and run (the worker followed the new leader).
    submitted = time.monotonic()
    ids = [net.submit("tests.actors.add", [i, 1]) for i in range(5)]
    assert [net.result(task_id) for task_id in ids] == [i + 1 for i in range(5)]
    served_in = time.monotonic() - submitted

    # The cut-off side committed and applied nothing since it was cut off, and accepted nothing.
    later = net.must_view(old)
    assert (later["commit_index"], later["applied_batches"]) == (cut_off_view["commit_index"],
                                                                  cut_off_view["applied_batches"])
    assert [r["t"] for r in minority_replies] and all(r["t"] != "accepted" for r in minority_replies), minority_replies
    assert minority_replies[-1].get("code") == "no_leader", minority_replies  # it knows it has no leader

    net.lab.heal(NODES[old])
    healed = time.monotonic()
    common = wait_until(net.agreed, AGREE_BOUND, 0.05, "every node agreeing after the heal")
    agreed_in = time.monotonic() - healed
    wait_until(net.states_agree, AGREE_BOUND, 0.1, "equal state digests")
    # What the minority side took in is gone: the new leader's log replaced it.
    for task_id in minority_ids:
        reply = net.lab.agent(CLIENT).result(net.urls, task_id, timeout=1.0)
        assert reply.get("error") == "TaskNotFound", reply
    report("isolated leader", {
        "failover_s": round(failover, 2), "majority_served_5_tasks_s": round(served_in, 2),
        "minority_replies": [r.get("code", r["t"]) for r in minority_replies],
        "minority_commit_index": later["commit_index"], "majority_commit_index": common["commit_index"],
        "new_leader": NODES[new], "term_before": term, "term_after_heal": common["term"],
        "agreed_after_heal_s": round(agreed_in, 2)})


def _runs(trace_dir: Path) -> list[dict[str, Any]]:
    """Every run's trace (tests/partition_actors.py): pid, attempt, start and how it stopped."""
    runs = []
    for path in sorted(trace_dir.iterdir()):
        _, attempt, pid = path.name.rsplit(".", 2)
        events = dict(line.split() for line in path.read_text().splitlines() if line)
        runs.append({"pid": int(pid), "attempt": int(attempt), **{k: float(v) for k, v in events.items()}})
    return runs


@pytest.mark.parametrize("side", ["alone", "with the leader"])
def test_a_cut_off_worker_fences_before_its_task_runs_elsewhere(net: NetCluster, tmp_path: Path, side: str) -> None:
    """Cut off alone, the worker stops hearing any leader at once. Cut off with the leader (the
    minority side), it still hears that stale leader until it steps down (leaderFallbackTimeout),
    while the majority elects a new one whose lease timers start at its election."""
    for member in WORKERS:
        net.start_worker(member, ["tests.partition_actors"], concurrency=1)
    net.wait_for_workers(len(WORKERS))
    traces = tmp_path / "traces"
    traces.mkdir()
    # Long enough that the cut-off run is still going when its worker fences (~4 s after the cut).
    task_id = net.submit("tests.partition_actors.traced_sleep", [str(traces), 8.0])
    first = wait_until(lambda: _runs(traces), 10, 0.05, "the task's first run")[0]
    cut_off = next(m for m, pid in net.workers.items() if pid == first["pid"])
    other = next(m for m in WORKERS if m != cut_off)
    leader = net.wait_for_leader()
    cut = time.time()
    net.lab.isolate(cut_off, *([NODES[leader]] if side == "with the leader" else []))

    result = net.result(task_id, timeout=30)
    runs = _runs(traces)
    fenced = next(r for r in runs if r["pid"] == net.workers[cut_off])
    again = next(r for r in runs if r["pid"] == net.workers[other])
    assert result["pid"] == net.workers[other]
    # The cut-off run was cancelled by the fence, reported nothing and never finished.
    assert "cancelled" in fenced and "end" not in fenced, fenced
    assert "fenced" in net.cluster.log(f"{cut_off}.log")
    # Timing (docs/protocol.md §8): the worker fences 4 s after the last frame it heard from the
    # leader (an `hb`, once a second, so 3-4 s after the cut); the leader expires the lease 5 s after
    # the worker's last heartbeat. So the fence comes first: the two runs never overlap.
    fence_after = fenced["cancelled"] - cut
    rerun_after = again["start"] - cut
    overlap = fenced["cancelled"] - again["start"]
    report(f"worker cut off {side}", {
        "fence_after_cut_s": round(fence_after, 2), "rerun_after_cut_s": round(rerun_after, 2),
        "overlap_s": round(overlap, 3), "attempts": [fenced["attempt"], again["attempt"]]})
    slack = 0.5  # the worker's timer ticks every 0.1 s, the leader's housekeeping too; a loaded machine
    stale = defaults.RAFT_LEADER_FALLBACK_TIMEOUT if side == "with the leader" else 0.0  # hb heard meanwhile
    assert defaults.WORKER_FENCE_AFTER - defaults.HEARTBEAT_INTERVAL - slack < fence_after \
        < stale + defaults.WORKER_FENCE_AFTER + slack, fence_after
    assert overlap < 0, f"the run on {other} started {overlap:.3f} s before the cut-off run was fenced"

    # Healed, the fenced worker comes back and serves again.
    net.lab.heal()
    net.wait_for_workers(len(WORKERS))


@dataclass
class HealRun:
    """What one partition of a follower and its heal showed (shared by the tests below)."""

    agreed_in: float  # seconds from the heal until every node agreed
    term_at_heal: int  # the healthy leader's term when the cut-off node came back
    common: dict[str, Any]  # the agreed view
    leader_before: str  # the leader's URL before the partition
    cut_off_term: int  # the cut-off node's term just before the heal
    figures: dict[str, Any]


@pytest.fixture(scope="module")
def heal_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealRun]:
    """Cut a follower off for PARTITION_SECONDS under a submit load on the majority, heal, and wait
    until every node agrees (or AGREE_BOUND passes: then the run holds no agreed view)."""
    with net_cluster(tmp_path_factory.mktemp("heal")) as net:
        net.start_worker("w0", ["tests.actors"])
        net.wait_for_workers(1)
        leader = net.wait_for_leader()
        follower = (leader + 1) % len(NODES)
        majority = [i for i in range(len(NODES)) if i != follower]
        before = net.agreed()
        assert before is not None
        net.lab.isolate(NODES[follower])
        cut = time.monotonic()
        submitted = 0
        while time.monotonic() - cut < PARTITION_SECONDS:  # the majority keeps committing meanwhile
            net.submit("tests.actors.add", [submitted, 0])
            submitted += 1
            time.sleep(0.2)  # ok-sleep: paces the load over the partition's duration
        at_heal = net.agreed(majority)
        cut_off_view = net.must_view(follower)
        assert at_heal is not None
        net.lab.heal(NODES[follower])
        healed = time.monotonic()
        try:
            common = wait_until(net.agreed, AGREE_BOUND, 0.05, "every node agreeing after the heal")
        except TimeoutError:
            common = {}
        agreed_in = time.monotonic() - healed
        if common:
            wait_until(net.states_agree, AGREE_BOUND, 0.1, "equal state digests")
        figures = {
            "partition_s": PARTITION_SECONDS, "submits_during_partition": submitted,
            "term_before": before["term"], "cut_off_term_at_heal": cut_off_view["term"],
            "leader_term_at_heal": at_heal["term"], "term_after": common.get("term"),
            "leader_changed_at_heal": common.get("leader") != at_heal["leader"],
            "agreed_after_heal_s": round(agreed_in, 2)}
        report("heal", figures)
        yield HealRun(agreed_in, at_heal["term"], common, before["leader"], cut_off_view["term"], figures)


def test_after_a_partition_heals_every_node_agrees(heal_run: HealRun) -> None:
    # Same leader, term, applied batches and digest on every node (the cut-off one caught up).
    assert heal_run.common, f"nodes did not agree within {AGREE_BOUND} s of the heal: {heal_run.figures}"
    assert heal_run.common["term"] >= heal_run.term_at_heal


def test_a_returning_node_neither_forces_an_election_nor_lags(heal_run: HealRun) -> None:
    # pysyncobj has no pre-vote and no connect timeout: the returning node, whose term rose while it
    # campaigned alone, deposed the leader, and nodes agreed ~8 s after the heal (measured). Fixed in
    # raft_node.py (RaftNode: a pre-vote; a stuck connect started afresh).
    assert heal_run.common, heal_run.figures
    forced = heal_run.common["term"] != heal_run.term_at_heal
    assert not forced, f"the returning node forced an election: {heal_run.figures}"
    assert heal_run.agreed_in < HEAL_TARGET, f"nodes agreed {heal_run.agreed_in:.1f} s after the heal"


def test_the_lab_leaves_no_namespace_behind(tmp_path: Path) -> None:
    """The helper's own promise: every namespace it made is gone after close(), even after a failure."""
    lab = NetLab.create_or_skip(["a", "b"])
    names = [lab.hub, lab.namespace("a"), lab.namespace("b")]
    with pytest.raises(RuntimeError), lab:
        lab.agent("a")
        raise RuntimeError("a failing test")
    assert not any(os.path.exists(f"/run/netns/{ns}") for ns in names)
