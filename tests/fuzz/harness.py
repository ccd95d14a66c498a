"""Send hostile frames to a live coordinator's socket and to a live worker's, then check each still
serves: no crash, no wedge (a normal task completes after), memory back near its baseline.

    python -m tests.fuzz.harness --frames 100000 [--seed N]

The coordinator gets them from a client socket and from a socket that said hello as a worker (so
worker messages reach the worker desk). The worker gets them from a fake coordinator it is made to
connect to, which welcomed it first; afterwards a real `run` must come back as a `done`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import zmq
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import qrt
from qrt.local import LocalCluster, free_port, wait_until
from tests import actors

from .frames import TO_COORDINATOR, TO_WORKER, frames

# Peak memory may grow while hostile frames are read; what stays must not (in MiB, over baseline).
MEMORY_SLACK_MIB = 64.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _pack(message: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb({"v": 1, **message}, use_bin_type=True)
    return packed


def _drain(sock: zmq.Socket) -> int:  # type: ignore[type-arg]
    """Read whatever answers are waiting (the fuzz does not wait for them)."""
    n = 0
    while sock.poll(0):
        sock.recv_multipart()
        n += 1
    return n


def _send_all(n: int, seed_value: int, strategy: st.SearchStrategy[bytes], send: Callable[[bytes], None]) -> int:
    sent = 0

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(frame: bytes) -> None:
        nonlocal sent
        send(frame)
        sent += 1
    one()
    return sent


def fuzz_coordinator(n: int, seed_value: int, base_dir: str) -> dict[str, Any]:
    """`n` frames as a client and `n` as a worker; the node alive, serving, its memory back."""
    with LocalCluster(nodes=1, base_dir=base_dir) as cluster:
        cluster.start_worker(["tests.actors"], concurrency=2)
        cluster.wait_for_workers(1)
        node = cluster.coordinator_nodes[0].proc
        assert node is not None
        with qrt.Client(cluster.urls) as client:
            assert client.submit(actors.add, 1, 1).result(timeout=10) == 2
        baseline = rss_mib(node.pid)
        ctx = zmq.Context()
        try:
            as_client = ctx.socket(zmq.DEALER)
            as_worker = ctx.socket(zmq.DEALER)
            for sock in (as_client, as_worker):
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(cluster.urls[0])
            as_worker.setsockopt(zmq.ROUTING_ID, b"fuzz-worker")
            as_worker.send(_pack({"t": "hello", "worker_id": "fuzz-worker", "slots": 0, "concurrency": 1,
                                  "actors": [{"name": "fuzz.nothing"}], "running": []}))

            def send_both(frame: bytes) -> None:
                as_client.send(frame)
                as_worker.send(frame)
                _drain(as_client)
                _drain(as_worker)
            started = time.monotonic()
            sent = _send_all(n, seed_value, frames(TO_COORDINATOR), send_both)
            elapsed = time.monotonic() - started
            for sock in (as_client, as_worker):
                sock.close()
        finally:
            ctx.term()
        assert node.poll() is None, "the coordinator died"
        with qrt.Client(cluster.urls) as client:
            assert client.submit(actors.add, 2, 3).result(timeout=30) == 5, "a normal task after the fuzz"
        after = wait_until(lambda: (lambda m: m if m - baseline < MEMORY_SLACK_MIB else None)(rss_mib(node.pid)),
                           30, 0.5, what="the coordinator's memory back near its baseline")
        return {"frames": 2 * sent, "seconds": round(elapsed, 1), "rss_baseline_mib": round(baseline, 1),
                "rss_after_mib": round(after, 1)}


@contextmanager
def _fake_coordinator() -> Iterator[tuple[zmq.Socket, str]]:  # type: ignore[type-arg]
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    url = f"tcp://127.0.0.1:{free_port()}"
    router.bind(url)
    try:
        yield router, url
    finally:
        router.close()
        ctx.term()


class FakeCoordinator:
    """A leader as a worker sees one: it welcomes every hello and answers every heartbeat, so the
    worker stays connected whatever else it is sent."""

    def __init__(self, router: zmq.Socket) -> None:  # type: ignore[type-arg]
        self.router = router

    def serve(self, kind: str | None, timeout: float) -> tuple[bytes, dict[str, Any]] | None:
        """Answer what the worker sends, until a message of `kind` (None: until nothing is waiting)."""
        deadline = time.monotonic() + timeout
        while kind is None or time.monotonic() < deadline:
            if not self.router.poll(100 if kind else 0):
                if kind is None:
                    return None
                continue
            identity, frame = self.router.recv_multipart()
            message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            if message.get("t") == "hello":
                self.router.send_multipart([identity, _pack({"t": "welcome", "worker_id": message["worker_id"],
                                                             "heartbeat_interval": 1.0, "lease_timeout": 6.0})])
            elif message.get("t") == "heartbeat":
                self.router.send_multipart([identity, _pack({"t": "hb", "seq": message.get("seq")})])
            if message.get("t") == kind:
                return identity, message
        raise TimeoutError(f"no {kind!r} from the worker within {timeout} s")


def fuzz_worker(n: int, seed_value: int, base_dir: str) -> dict[str, Any]:
    """`n` frames to a live worker from a fake coordinator that welcomed it; then a real `run`."""
    with _fake_coordinator() as (router, url):
        log = open(os.path.join(base_dir, "fuzzed-worker.log"), "ab")  # noqa: SIM115 - closed below
        worker = subprocess.Popen([sys.executable, "-m", "qrt.cli", "worker", "tests.actors", "--coordinator", url,
                                   "--concurrency", "2"], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        leader = FakeCoordinator(router)
        try:
            hello = leader.serve("hello", 30)
            assert hello is not None
            identity = hello[0]
            baseline = rss_mib(worker.pid)

            def send(frame: bytes) -> None:
                router.send_multipart([identity, frame])
                leader.serve(None, 0)
            started = time.monotonic()
            sent = _send_all(n, seed_value, frames(TO_WORKER), send)
            elapsed = time.monotonic() - started
            assert worker.poll() is None, "the worker died"
            router.send_multipart([identity, _pack({"t": "welcome", "worker_id": hello[1]["worker_id"],
                                                    "heartbeat_interval": 1.0, "lease_timeout": 6.0})])
            run = {"id": "after-the-fuzz", "actor": actors.add.name, "args": [2, 3], "kwargs": {}, "attempt": 1,
                   "timeout": 10.0}
            router.send_multipart([identity, _pack({"t": "run", "tasks": [run]})])
            deadline = time.monotonic() + 30
            while True:
                answer = leader.serve("done", max(0.1, deadline - time.monotonic()))
                assert answer is not None
                done = answer[1]
                if any(o["id"] == "after-the-fuzz" and o.get("value") == 5 for o in done["outcomes"]):
                    break
            after = wait_until(lambda: (lambda m: m if m - baseline < MEMORY_SLACK_MIB else None)(rss_mib(worker.pid)),
                               30, 0.5, what="the worker's memory back near its baseline")
            return {"frames": sent, "seconds": round(elapsed, 1), "rss_baseline_mib": round(baseline, 1),
                    "rss_after_mib": round(after, 1)}
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
            worker.wait()
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000, help="frames per socket")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix=f"qrt-fuzz-{args.seed}-")
    print(f"fuzz: seed {args.seed}, {args.frames} frames per socket, logs in {base}", flush=True)
    print("coordinator:", fuzz_coordinator(args.frames, args.seed, base), flush=True)
    print("worker:", fuzz_worker(args.frames, args.seed, base), flush=True)


if __name__ == "__main__":
    main()
