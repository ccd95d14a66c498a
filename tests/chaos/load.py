"""The client side of a chaos run: a steady, bounded submit load; a collector of final states; a
monitor that times `status` and samples the nodes' memory. Each is a thread with `start`/`stop`.

Every submit carries an idempotency key, and one that fails (no leader answered within the
client's timeout) is sent again with the same key until accepted: whatever the faults, the
harness knows every task the cluster accepted, and a task runs once however often it was sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import qrt

from . import actors
from .checks import Accepted

# Steady load: tasks per second, and the share of each actor (the serial one stays well under its
# one-at-a-time capacity, the limited one under its 20/s, so the queue drains between bursts).
RATE = 8.0
MIX = {"plain": 0.4, "serial": 0.12, "limited": 0.16, "flaky": 0.16, "blocking": 0.16}
# Every BURST_EVERY s a burst, in turn: BURST tasks of the rate-limited actor at once (its limit, not
# the load, must then hold the starts to 20 a second), or BURST plain ones (a backlog of leases to
# hand over when a fault strikes). Bounded: a 10-minute run submits under 7,000 tasks.
BURST_EVERY = 10.0
BURST = 30
# How long a submit may take before the client gives up and the loader sends it again (same key).
CLIENT_TIMEOUT = 15.0
# The collector asks for a task's result this long after it was accepted, and then on every sweep.
COLLECT_AFTER = 0.3
COLLECT_PARALLEL = 32
SWEEP_INTERVAL = 0.25
STATUS_INTERVAL = 0.5
DIGEST_INTERVAL = 2.0


def _seconds(rng: random.Random, actor: str) -> float:
    """How long a handler works: mostly short, some long enough that a killed worker is caught mid-run;
    the serial actor's mean (~0.3 s) keeps it well under its one-at-a-time capacity."""
    short, long, long_share = {"plain": ((0.05, 0.5), (1.0, 3.0), 0.2), "serial": ((0.03, 0.15), (0.5, 1.5), 0.15),
                               "limited": ((0.005, 0.05), (0.005, 0.05), 0.0), "flaky": ((0.05, 0.3), (0.05, 0.3), 0.0),
                               "blocking": ((0.05, 0.3), (0.5, 1.5), 0.1)}[actor]
    return round(rng.uniform(*(long if rng.random() < long_share else short)), 3)


@dataclass
class CallTimes:
    """The longest a client call took, per kind, with when it began (monotonic)."""

    longest: dict[str, tuple[float, float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, began: float, took: float) -> None:
        with self.lock:
            if took > self.longest.get(kind, (0.0, 0.0))[1]:
                self.longest[kind] = (began, took)

    def failed(self, kind: str) -> None:
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1


class Background:
    """A daemon thread that runs `work()` until `stop()`; what it raised is kept in `error` (the
    harness reports it: a thread that died silently would hide everything)."""

    NAME = "chaos"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=self.NAME, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def work(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self.work()
        except BaseException as exc:
            self.error = exc


class Loader(Background):
    """Submits the load until stopped; `accepted` lists every task the cluster accepted."""

    NAME = "chaos-load"

    def __init__(self, urls: list[str], seed: int, log_path: str, times: CallTimes) -> None:
        self.urls = urls
        self.rng = random.Random(f"{seed}/load")
        self.run_id = f"{seed}-{time.time_ns()}"  # idempotency keys unique to this run
        self.log_path = log_path
        self.times = times
        self.accepted: list[Accepted] = []
        self.lock = threading.Lock()
        super().__init__()

    def snapshot(self) -> list[Accepted]:
        with self.lock:
            return list(self.accepted)

    def work(self) -> None:
        with qrt.Client(self.urls, timeout=CLIENT_TIMEOUT) as client, open(self.log_path, "a") as log:
            self._submit_loop(client, log)

    def _submit_loop(self, client: qrt.Client, log: Any) -> None:
        names, weights = list(MIX), list(MIX.values())
        seq = bursts = 0
        next_at = time.monotonic()
        next_burst = next_at + BURST_EVERY
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            burst = time.monotonic() >= next_burst
            if burst:
                next_burst += BURST_EVERY
                bursts += 1
                batch = ["limited" if bursts % 2 else "plain"] * BURST
            else:
                batch = self.rng.choices(names, weights)
            for actor in batch:
                if not self._submit(client, log, seq, actor, burst):
                    return
                seq += 1
            # No catching up after a stall: the load stays steady and bounded.
            next_at = max(next_at + 1.0 / RATE, time.monotonic())

    def _submit(self, client: qrt.Client, log: Any, seq: int, actor: str, burst: bool) -> bool:
        seconds = _seconds(self.rng, actor)
        args: tuple[Any, ...] = (seq, seconds, self.rng.random() < 0.33) if actor == "flaky" else (seq, seconds)
        key = f"chaos-{self.run_id}-{seq}"
        submitted = time.monotonic()
        while True:
            began = time.monotonic()
            try:
                handle = client.submit_with(actors.ACTORS[actor], args, idempotency_key=key)
                break
            except qrt.QrtError:
                self.times.failed("submit")
                if self._stop.is_set() and time.monotonic() - submitted > 2 * CLIENT_TIMEOUT:
                    return False  # given up at the end; reported as a submit failure
            finally:
                self.times.record("submit", began, time.monotonic() - began)
        now = time.monotonic()
        self.times.record("submit_until_accepted", submitted, now - submitted)
        record = Accepted(seq, handle.id, actor, submitted, now, burst)
        with self.lock:
            self.accepted.append(record)
        log.write(json.dumps({"seq": seq, "id": handle.id, "actor": actor, "submitted": submitted,
                              "accepted": now, "burst": burst}) + "\n")
        log.flush()
        return True


class Collector(Background):
    """Asks for each accepted task's result until it is final: `final` maps id -> state."""

    NAME = "chaos-collect"

    def __init__(self, urls: list[str], tasks: Callable[[], list[Accepted]]) -> None:
        self.urls = urls
        self.tasks = tasks
        self.final: dict[str, str] = {}
        self.finished_at: dict[str, float] = {}
        super().__init__()

    def pending(self) -> list[Accepted]:
        return [a for a in self.tasks() if a.id not in self.final]

    def work(self) -> None:
        asyncio.run(self._sweep())

    async def _sweep(self) -> None:
        async with qrt.AsyncClient(self.urls, timeout=5.0) as client:
            limit = asyncio.Semaphore(COLLECT_PARALLEL)
            while not self._stop.is_set():
                due = [a for a in self.pending() if time.monotonic() - a.accepted >= COLLECT_AFTER]
                await asyncio.gather(*(self._ask(client, limit, a) for a in due))
                await asyncio.sleep(SWEEP_INTERVAL)  # ok-sleep: the interval between sweeps

    async def _ask(self, client: qrt.AsyncClient, limit: asyncio.Semaphore, task: Accepted) -> None:
        async with limit:
            try:
                await client.task(task.id).result(timeout=0.2)
                state = "succeeded"
            except qrt.ResultTimeout:
                return
            except qrt.TaskExpired:
                state = "expired"
            except qrt.TaskFailed as exc:
                state = f"failed: {exc}"
            except qrt.TaskCancelled:
                state = "cancelled"
            except qrt.TaskNotFound:
                state = "not_found"
            except qrt.QrtError:
                return  # no leader for now: the next sweep asks again
            self.final[task.id] = state
            self.finished_at[task.id] = time.monotonic()


class Monitor(Background):
    """Times a `status` every half second, notes each leader change, and samples the nodes' RSS."""

    NAME = "chaos-monitor"

    def __init__(self, urls: list[str], times: CallTimes, pids: Callable[[], dict[str, int]]) -> None:
        self.urls = urls
        self.times = times
        self.pids = pids
        self.leaders: list[tuple[float, str | None, int | None]] = []  # (monotonic, leader url, term)
        self.peak_rss: dict[str, int] = {}
        super().__init__()

    def work(self) -> None:
        with qrt.Client(self.urls, timeout=CLIENT_TIMEOUT) as client:
            while not self._stop.wait(STATUS_INTERVAL):
                self._look(client)

    def _look(self, client: qrt.Client) -> None:
        began = time.monotonic()
        try:
            status = client.status()
        except qrt.QrtError:
            self.times.failed("status")
            return
        finally:
            self.times.record("status", began, time.monotonic() - began)
        leader, term = status.get("leader"), status.get("term")
        if not self.leaders or self.leaders[-1][1:] != (leader, term):
            self.leaders.append((began, leader, term))
        for name, pid in self.pids().items():
            rss = rss_kib(pid)
            if rss is not None:
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)


def rss_kib(pid: int) -> int | None:
    """A process's resident memory (VmRSS, KiB), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class DigestSampler(Background):
    """Every few seconds, each node's own `status(local=True)`: its applied count and digests, so
    that replicas are compared during the run too, wherever two of them stand at the same point.
    After `stop`, `sample` may still be called (the harness's last looks); `close` ends the clients."""

    NAME = "chaos-digests"

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.samples: list[dict[str, Any]] = []
        self._clients = [qrt.Client([url], timeout=1.0) for url in urls]
        super().__init__()

    def close(self) -> None:
        self.stop()
        for client in self._clients:
            client.close()

    def work(self) -> None:
        while not self._stop.wait(DIGEST_INTERVAL):
            self.sample()

    def sample(self) -> None:
        for url, client in zip(self.urls, self._clients, strict=True):
            try:
                status = client.status(local=True)
            except qrt.QrtError:
                continue  # down or paused: a fault
            self.samples.append({"node": url, "at": time.monotonic(), "applied_batches": status.get("applied_batches"),
                                 "digest": status.get("digest"), "state_digest": status.get("state_digest")})
