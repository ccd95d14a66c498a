"""Simulated workers for the control-plane benchmark: many lightweight workers per process.

    python -m bench.sim_workers URL[,URL...] --count N --name P [--slots 1]

Each worker is a DEALER socket speaking the real worker protocol (docs/protocol.md §6): `hello`
(serving ACTOR), a `heartbeat` every second once welcomed, and an immediate `done` (success, the
freed slots as credit) for every `run`; it follows `redirect`s and says hello again on `not_hello`.
All of a process's sockets are polled by one loop. The process prints its counters as a JSON line
every 0.5 s and stops when its stdin closes. `Simulation` runs a few such processes and sums them.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import threading
import time
from typing import Any

import msgpack
import zmq

ACTOR = "cp.noop"  # no real worker serves it: only the simulated ones
REPORT_EVERY = 0.5


class SimulatedWorkers:
    def __init__(self, urls: list[str], count: int, name: str, slots: int) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.ctx.set(zmq.MAX_SOCKETS, count + 64)
        self.count, self.slots = count, slots
        self.ids = [f"sim-{name}-{i}-{secrets.token_hex(4)}" for i in range(count)]
        self.welcomed = [False] * count
        self.sockets: list[zmq.Socket[bytes] | None] = [None] * count
        self.index: dict[zmq.Socket[bytes], int] = {}
        self.poller = zmq.Poller()
        self.counts = {"sent": 0, "received": 0, "welcomed": 0, "tasks": 0}
        self.pack = msgpack.Packer(use_bin_type=True).pack
        for i in range(count):
            self.connect(i, urls[0])
        start = time.monotonic()
        self.next_beat = [start + 1.0 + i / count for i in range(count)]  # beats spread over the second

    def send(self, i: int, msg: dict[str, Any]) -> None:
        sock = self.sockets[i]
        assert sock is not None
        sock.send(self.pack({"v": 1, **msg}), zmq.NOBLOCK)
        self.counts["sent"] += 1

    def hello(self, i: int) -> None:
        self.send(i, {"t": "hello", "worker_id": self.ids[i], "slots": self.slots, "concurrency": self.slots,
                      "actors": [{"name": ACTOR, "options": {}}], "running": []})

    def connect(self, i: int, url: str) -> None:
        old = self.sockets[i]
        if old is not None:
            self.poller.unregister(old)
            del self.index[old]
            old.close(0)
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.ids[i].encode())  # the protocol: routing id = worker id
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(url)
        self.sockets[i] = sock
        self.index[sock] = i
        self.poller.register(sock, zmq.POLLIN)
        self.hello(i)

    def on_message(self, i: int, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        if t == "welcome" and not self.welcomed[i]:
            self.welcomed[i] = True
            self.counts["welcomed"] += 1
        elif t == "run":
            tasks = msg["tasks"]
            self.counts["tasks"] += len(tasks)
            outcomes = [{"id": task["id"], "attempt": task["attempt"], "ok": True} for task in tasks]
            self.send(i, {"t": "done", "credit": len(tasks), "outcomes": outcomes})
        elif t == "redirect":
            self.connect(i, msg["leader"])
        elif t == "error" and msg.get("code") == "not_hello":
            self.hello(i)

    def run(self, stop: threading.Event) -> None:
        next_report = 0.0
        while not stop.is_set():
            for sock, _ in self.poller.poll(timeout=20):
                while True:
                    try:
                        frame = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.counts["received"] += 1
                    self.on_message(self.index[sock], msgpack.unpackb(frame, raw=False))
            now = time.monotonic()
            for i in range(self.count):
                if self.welcomed[i] and now >= self.next_beat[i]:
                    self.send(i, {"t": "heartbeat"})
                    self.next_beat[i] += 1.0
            if now >= next_report:
                next_report = now + REPORT_EVERY
                print(json.dumps(self.counts), flush=True)


class Simulation:
    """`total` simulated workers in processes of `per_process`; `counters()` sums their latest counts."""

    def __init__(self, urls: list[str], total: int, per_process: int, cwd: str) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.latest: list[dict[str, int]] = []
        for p, first in enumerate(range(0, total, per_process)):
            cmd = [sys.executable, "-m", "bench.sim_workers", ",".join(urls),
                   "--count", str(min(per_process, total - first)), "--name", str(p)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd)
            self.procs.append(proc)
            self.latest.append({})
            threading.Thread(target=self._read, args=(p, proc), daemon=True).start()

    def _read(self, p: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.latest[p] = json.loads(line)

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.latest:
            for k, v in counts.items():
                out[k] = out.get(k, 0) + v
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()  # the process's signal to stop
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", help="coordinator URLs, comma-separated; the first is dialled first")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--name", required=True, help="unique per process: part of every worker id")
    parser.add_argument("--slots", type=int, default=1)
    args = parser.parse_args()
    stop = threading.Event()

    def stop_at_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    SimulatedWorkers(args.urls.split(","), args.count, args.name, args.slots).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
