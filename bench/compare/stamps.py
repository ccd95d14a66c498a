"""Handler stamps: the one measurement taken the same way in every system compared.

A handler calls `started(tag)` first and `ended(tag)` last. Each worker process appends lines
`S <tag> <time>` / `E <tag> <time>` to its own file, `<worker>-<pid>.log` in the directory named by
$QRT_BENCH_STAMPS. One line is one write(2) on an O_APPEND descriptor: a SIGKILL loses nothing
already stamped, and a forked child (Celery's prefork pool) opens a file of its own.

Standard library only: the peers' virtualenv imports this module too.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

ENV_DIR = "QRT_BENCH_STAMPS"
ENV_WORKER = "QRT_BENCH_WORKER"  # the worker instance ("w0", "w1", ...): its children inherit it

_lock = threading.Lock()
_fd: int | None = None
_fd_pid = 0


def _file() -> int:
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:
        with _lock:
            if _fd is None or _fd_pid != pid:
                name = f"{os.environ.get(ENV_WORKER, 'w')}-{pid}.log"
                _fd = os.open(os.path.join(os.environ[ENV_DIR], name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _fd_pid = pid
    return _fd


def started(tag: str) -> None:
    os.write(_file(), f"S {tag} {time.time():.6f}\n".encode())


def ended(tag: str) -> None:
    os.write(_file(), f"E {tag} {time.time():.6f}\n".encode())


@dataclass
class Stamp:
    time: float
    worker: str  # the worker instance
    pid: int  # the process that ran the handler


@dataclass
class StampLog:
    """Every stamp written in `directory` so far; `poll()` reads what is new since the last call."""

    directory: str
    starts: dict[str, list[Stamp]] = field(default_factory=dict)
    ends: dict[str, list[Stamp]] = field(default_factory=dict)
    _offsets: dict[str, int] = field(default_factory=dict)

    def poll(self) -> None:
        for name in os.listdir(self.directory):
            if not name.endswith(".log"):
                continue
            worker, _, pid = name[:-4].rpartition("-")
            path = os.path.join(self.directory, name)
            with open(path, "rb") as f:
                f.seek(self._offsets.get(name, 0))
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
            self._offsets[name] = self._offsets.get(name, 0) + len(complete)
            for line in complete.decode().splitlines():
                kind, tag, t = line.split()
                book = self.starts if kind == "S" else self.ends
                book.setdefault(tag, []).append(Stamp(float(t), worker, int(pid)))

    def wait_ended(self, tags: set[str], timeout: float, interval: float = 0.02) -> bool:
        """Poll until every tag has an end stamp, or `timeout` seconds pass; True if all ended."""
        deadline = time.monotonic() + timeout
        pending = set(tags)
        while True:
            self.poll()
            pending = {tag for tag in pending if tag not in self.ends}
            if not pending:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def first_start(self, tag: str) -> float:
        return min(s.time for s in self.starts[tag])

    def first_end(self, tag: str) -> float:
        return min(s.time for s in self.ends[tag])
