"""The seeded schedule of faults, and the injector that applies it to real processes.

`plan(seed)` draws every choice from `random.Random(seed)`: the order of kinds, the gaps between
faults, how long a node stays down or paused, which follower or worker is hit. Replaying a seed
replays those choices; where the cluster is then (who leads, which worker runs what) is real time.

Faults, one at a time, each followed by its repair (the cluster is whole again before the next):
  kill_leader    SIGKILL the leader; restart it `down` s later
  kill_follower  SIGKILL a follower; restart it `down` s later
  pause_leader   SIGSTOP the leader for `down` s (2-8 s), then SIGCONT
  kill_worker    SIGKILL a worker; start a new one `down` s later
  drop_conn      destroy a worker's TCP connection to its coordinator while it runs a handler
                 (`ss -K`, which needs root and a kernel with CONFIG_INET_DIAG_DESTROY; probed first)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import IO

from qrt.local import LocalCluster, wait_until

from .checks import Fault

KINDS = ("kill_leader", "kill_follower", "pause_leader", "kill_worker", "drop_conn")
# After the first round (each kind once, so that even a 60 s run has them all), drawn with these weights.
WEIGHTS = {"kill_leader": 2, "kill_follower": 1, "pause_leader": 2, "kill_worker": 2, "drop_conn": 3}
DOWN = {"kill_leader": (0.5, 4.0), "kill_follower": (0.5, 4.0), "pause_leader": (2.0, 8.0),
        "kill_worker": (0.5, 3.0), "drop_conn": (0.0, 0.0)}
# Quiet time between the end of one fault's repair and the next fault.
GAP = (2.0, 6.0)
WORKER_MODULE = "tests.chaos.actors"
WORKER_CONCURRENCY = 4
LEADER_TIMEOUT = 30.0
# A worker fault waits up to this long for a worker that is running a handler.
BUSY_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    gap: float  # s of quiet before it
    down: float  # s the node stays down or paused, or before a killed worker is replaced
    pick: float  # in [0, 1): which of the candidate targets (followers, workers) is hit


def plan(seed: int, count: int = 1000) -> list[Step]:
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    kinds = first + rng.choices(list(WEIGHTS), list(WEIGHTS.values()), k=count - len(first))
    return [Step(kind, round(rng.uniform(*GAP), 2), round(rng.uniform(*DOWN[kind]), 2), rng.random())
            for kind in kinds]


def probe_socket_kill() -> str | None:
    """None when `ss -K` destroys a loopback TCP socket here; else why not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            with accepted:
                try:
                    out = subprocess.run(["ss", "-K", "-tnH", "dst", "127.0.0.1", "dport", "=", f":{port}"],
                                         capture_output=True, text=True, timeout=5)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    return f"ss not usable: {exc}"
                client.settimeout(1)
                try:
                    client.send(b"x")
                    client.recv(1)
                except OSError:
                    return None  # the socket is gone: that is what we wanted
                return f"ss -K left the socket open (rc {out.returncode}: {out.stderr.strip()}); needs root"


def tcp_peers(pid: int, ports: set[int]) -> list[int]:
    """The local ports of `pid`'s established TCP connections to one of `ports` on 127.0.0.1."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True, timeout=5).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        fields = line.split()
        local, peer = fields[2], fields[3]
        if peer.startswith("127.0.0.1:") and int(peer.rsplit(":", 1)[1]) in ports:
            found.append(int(local.rsplit(":", 1)[1]))
    return found


class StampWatcher:
    """What each worker is running now, read incrementally from its stamp file."""

    def __init__(self, stamps_dir: str) -> None:
        self.stamps_dir = stamps_dir
        self._offsets: dict[int, int] = {}
        self._open: dict[int, dict[tuple[str, int], str]] = {}  # pid -> (id, attempt) -> actor

    def running(self, pid: int) -> list[str]:
        """The actors of the handlers `pid` has started and not yet ended."""
        runs = self._open.setdefault(pid, {})
        try:
            with open(os.path.join(self.stamps_dir, f"stamps-{pid}.jsonl"), "rb") as f:
                f.seek(self._offsets.get(pid, 0))
                data = f.read()
        except OSError:
            return []
        whole = data[:data.rfind(b"\n") + 1]
        self._offsets[pid] = self._offsets.get(pid, 0) + len(whole)
        for line in whole.splitlines():
            s = json.loads(line)
            key = (s["id"], s["attempt"])
            if s["e"] == "start":
                runs[key] = s["actor"]
            else:
                runs.pop(key, None)
        return list(runs.values())


class Injector:
    """Applies steps to a running LocalCluster and its workers, recording each fault."""

    def __init__(self, cluster: LocalCluster, stamps_dir: str, workers: int, log: IO[str]) -> None:
        self.c = cluster
        self.stamps = StampWatcher(stamps_dir)
        self.log = log
        self.workers: list[subprocess.Popen[bytes]] = []
        self._started = 0
        self.faults: list[Fault] = []
        self.skipped: dict[str, str] = {}
        self.paused: set[int] = set()
        self._lives: dict[int, tuple[float, float]] = {}
        self.socket_kill = probe_socket_kill()
        for _ in range(workers):
            self.start_worker()

    def start_worker(self) -> None:
        proc = self.c.start_worker([WORKER_MODULE], concurrency=WORKER_CONCURRENCY, name=f"worker{self._started}.log")
        self.workers.append(proc)
        self._lives[proc.pid] = (time.monotonic(), math.inf)
        self._started += 1

    def lifetimes(self) -> dict[int, tuple[float, float]]:
        """Each worker process's (start, SIGKILL) in monotonic time; infinity while it lives."""
        return dict(self._lives)

    def pids(self) -> dict[str, int]:
        return {f"node{i}": n.proc.pid for i, n in enumerate(self.c.coordinator_nodes)
                if n.proc is not None and n.proc.poll() is None}

    def release(self) -> None:
        """SIGCONT anything still stopped (a fault interrupted by an error), so that stop() can end it."""
        for pid in list(self.paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.paused.discard(pid)

    def _note(self, text: str) -> None:
        self.log.write(f"{time.monotonic():.3f} {text}\n")
        self.log.flush()

    def apply(self, step: Step) -> None:
        kind = step.kind
        if kind == "drop_conn" and self.socket_kill is not None:
            self.skipped[kind] = self.socket_kill
            return
        self._note(f"fault {kind} down={step.down} pick={step.pick:.3f}")
        getattr(self, kind)(step)
        self._note(f"fault {kind} repaired")

    # -- the faults -------------------------------------------------------------------------

    def kill_leader(self, step: Step) -> None:
        i = self.c.wait_for_leader(LEADER_TIMEOUT)
        self._kill_node(i, "kill_leader", step.down, failover=True)

    def kill_follower(self, step: Step) -> None:
        leader = self.c.wait_for_leader(LEADER_TIMEOUT)
        followers = [j for j in range(len(self.c.coordinator_nodes)) if j != leader]
        self._kill_node(followers[int(step.pick * len(followers))], "kill_follower", step.down, failover=False)

    def _kill_node(self, i: int, kind: str, down: float, failover: bool) -> None:
        node = self.c.coordinator_nodes[i]
        assert node.proc is not None
        pid, began = node.proc.pid, time.monotonic()
        self.c.kill_node(i, signal.SIGKILL)
        detail: dict[str, object] = {"down_s": down}
        if failover:  # how long the others took to elect a leader
            wait_until(lambda: self.c.leader_index() not in (None, i), LEADER_TIMEOUT, 0.05, "a new leader")
            detail["new_leader_after_s"] = round(time.monotonic() - began, 2)
        time.sleep(max(0.0, began + down - time.monotonic()))  # ok-sleep: the node stays down this long
        self.c.start_node(i)
        self.faults.append(Fault(kind, f"node{i}", began, time.monotonic(), pid, detail))
        self.c.wait_for_leader(LEADER_TIMEOUT)

    def pause_leader(self, step: Step) -> None:
        i = self.c.wait_for_leader(LEADER_TIMEOUT)
        proc = self.c.coordinator_nodes[i].proc
        assert proc is not None
        began = time.monotonic()
        self.paused.add(proc.pid)
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(step.down)  # ok-sleep: the pause itself (a new leader is elected meanwhile)
        finally:
            proc.send_signal(signal.SIGCONT)
            self.paused.discard(proc.pid)
        self.faults.append(Fault("pause_leader", f"node{i}", began, time.monotonic(), proc.pid,
                                 {"paused_s": step.down}))
        self.c.wait_for_leader(LEADER_TIMEOUT)

    def kill_worker(self, step: Step) -> None:
        proc, running = self._busy_worker(step)
        self.workers.remove(proc)
        began = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self._lives[proc.pid] = (self._lives[proc.pid][0], began)
        self.faults.append(Fault("kill_worker", f"pid {proc.pid}", began, began, proc.pid,
                                 {"running": running, "replaced_after_s": step.down}))
        time.sleep(step.down)  # ok-sleep: the worker stays dead this long before its replacement starts
        self.start_worker()

    def drop_conn(self, step: Step) -> None:
        proc, running = self._busy_worker(step)
        ports = {int(url.rsplit(":", 1)[1]) for url in self.c.urls}
        began = time.monotonic()
        local_ports = tcp_peers(proc.pid, ports)
        for port in local_ports:  # both ends: the worker's socket, and the coordinator's to it
            subprocess.run(["ss", "-K", "-tnH", "(", "sport", "=", f":{port}", "or", "dport", "=", f":{port}", ")"],
                           capture_output=True, timeout=5, check=True)
        self.faults.append(Fault("drop_conn", f"pid {proc.pid}", began, time.monotonic(), proc.pid,
                                 {"sockets": len(local_ports), "running": running}))

    def _busy_worker(self, step: Step) -> tuple[subprocess.Popen[bytes], list[str]]:
        """A worker running a handler (mid-run), waiting a little for one; one running the serial
        actor when there is one and `pick` < 0.5, since its lost leases test the concurrency limit."""
        def busy() -> list[tuple[subprocess.Popen[bytes], list[str]]]:
            return [(w, running) for w in self.workers if (running := self.stamps.running(w.pid))]
        candidates: list[tuple[subprocess.Popen[bytes], list[str]]]
        try:
            candidates = wait_until(busy, BUSY_WAIT, 0.02, "a worker running a handler")
        except TimeoutError:
            candidates = [(w, []) for w in self.workers]
        serial = [c for c in candidates if "serial" in c[1]]
        if serial and step.pick < 0.5:
            candidates = serial
        return candidates[int(step.pick * len(candidates))]
