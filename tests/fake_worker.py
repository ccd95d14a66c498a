"""A worker written from docs/protocol.md on a raw DEALER socket: a test drives each frame, so it
can lose a `run`, ignore a `cancel`, leave `running` out of its heartbeats, or reconnect."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq


class FakeWorker:
    def __init__(self, url: str, worker_id: str, actors: dict[str, dict[str, Any]], slots: int = 1,
                 started: float = 0.0) -> None:
        self.url = url
        self.hello = {"t": "hello", "worker_id": worker_id, "slots": slots, "concurrency": slots,
                      "actors": [{"name": name, "options": options} for name, options in actors.items()],
                      "running": [], "started": started}
        self.ctx = zmq.Context()
        self.sock: zmq.Socket | None = None  # type: ignore[type-arg]

    def __enter__(self) -> FakeWorker:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """A new socket (what a reconnecting worker does: what the old one held is gone), and hello."""
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, self.hello["worker_id"].encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.url)
        self.send(self.hello)
        welcome = self.receive(5.0)
        assert welcome is not None and welcome["t"] == "welcome", welcome

    def send(self, message: dict[str, Any]) -> None:
        assert self.sock is not None
        self.sock.send(msgpack.packb({"v": 1, **message}, use_bin_type=True))

    def receive(self, timeout: float) -> dict[str, Any] | None:
        assert self.sock is not None
        if not self.sock.poll(int(timeout * 1000)):
            return None
        message: dict[str, Any] = msgpack.unpackb(self.sock.recv(), raw=False, strict_map_key=False)
        return message

    def report(self, task_id: str, attempt: int, **outcome: Any) -> None:
        """`done` with one outcome (ok with `value` unless given otherwise) and one slot back."""
        self.send({"t": "done", "credit": 1, "outcomes": [{"id": task_id, "attempt": attempt, "ok": True,
                                                            "value": None, **outcome}]})

    def serve(self, seconds: float, heartbeat: Callable[[], dict[str, Any] | None],
              until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Heartbeat once a second (`heartbeat()`: its message, None for none) and read frames for up
        to `seconds`, until `until(frame)` says so; returns every frame read."""
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        last_beat = 0.0
        while time.monotonic() < deadline:
            beat = heartbeat()
            if beat is not None and time.monotonic() - last_beat > 1.0:
                self.send(beat)
                last_beat = time.monotonic()
            frame = self.receive(0.1)
            if frame is not None:
                frames.append(frame)
                if until(frame):
                    break
        return frames

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        self.ctx.term()
