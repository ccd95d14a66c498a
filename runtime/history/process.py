"""The history's writer in a process of its own, fed by the coordinator through a pipe.

In the coordinator's process the writer thread shared the GIL with the event loop and
pysyncobj's thread: each row SQLite stepped let go of the GIL and waited for it back, and the
three threads convoyed (measured: 1-node throughput 4,100 tasks/s with the history, 6,600
without; 72 % of the writer's time in one INSERT). Here the coordinator only packs each batch's
events (msgpack, in C) and writes them to the child's stdin from a thread; the child writes SQLite
(writer.py) with nobody to wait for, and says on its stdout which batch it has written.

On the pipe: a stream of msgpack `[batch, events]` (tuples become lists, a TaskError its map: the
recorder takes them so). Lines back: `written N`. The child dies with the coordinator; if it dies
alone, it is started again, and the batches lost on the way are a gap it fills from a peer
(writer.py, `_backfill`). The child reads and writes on one thread: no GIL to share there either.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from typing import IO, Any

import msgpack

from .. import logs
from ..state.model import HistoryEvent, TaskError
from .writer import Batches, History, Retention, Source

log = logging.getLogger("qrt.history")

SEND_EVERY = 0.05  # seconds between writes to the child (it flushes every writer.FLUSH_EVERY anyway)
# The child's niceness: under CPU contention the scheduler favours dispatch (the coordinator, the
# workers) and the history lags, then catches up when the CPU is free. With workers and clients on
# the same 2 cores, 1-node throughput cost 14 % at niceness 0, 12 % at 10, 7 % at 19 (measured,
# medians of 3); with a core to spare it changes nothing. `lag` and the metrics show how far behind.
NICE = 19
LAG_WARNING = 20_000  # batches behind the log: logged (at most once a minute)
# A pipe holds 64 KiB: a larger read only allocates (and page-faults in) a buffer it cannot fill
# (measured: 0.5 ms per 1 MiB read, a third of the child's time).
READ_SIZE = 64 * 1024


def _wire(value: Any) -> Any:
    if isinstance(value, TaskError):
        return value.to_wire()
    raise TypeError(f"cannot pack {type(value).__name__}")


class HistoryProcess(Batches):
    """The coordinator's side: `record` (pysyncobj's thread) queues, a thread writes to the child,
    and the child's `written N` lines move `last_batch`."""

    def __init__(self, data_dir: str, retention: Retention, node_url: str, curve_key: str | None = None) -> None:
        super().__init__()
        self.path = os.path.join(data_dir, "history.sqlite3")
        self._args = [sys.executable, "-m", "qrt.history.process", "--data-dir", data_dir,
                      "--max-age", str(retention.max_age), "--max-bytes", str(retention.max_bytes),
                      "--value-bytes", str(retention.value_bytes), "--node", node_url,
                      "--parent", str(os.getpid()), *(["--curve-key", curve_key] if curve_key else [])]
        self._warned_at = 0.0
        self._closing = False
        self._child = self._start()
        self._sender = threading.Thread(target=self._send_forever, name="qrt-history-send", daemon=True)
        self._sender.start()

    def _start(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(self._args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout is not None
        threading.Thread(target=self._hear, args=(child.stdout,), name="qrt-history-hear", daemon=True).start()
        return child

    def close(self) -> None:
        self._closing = True
        self._queue.put(None)
        self._sender.join(timeout=10.0)
        try:
            self._child.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()

    def _send_forever(self) -> None:
        """Every SEND_EVERY, what has gathered in one write: waking for each batch made this thread
        take the GIL from the event loop hundreds of times a second (measured: 12 µs per task)."""
        pack = msgpack.Packer(use_bin_type=True, default=_wire).pack
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(b"".join(pack(item) for item in items if item is not None))
            if None in items:
                assert self._child.stdin is not None
                self._child.stdin.close()  # the child writes what it has, and exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    # Not before: a child started again by this thread dies with it (die_with_parent).
                    self._child.wait(timeout=10.0)
                return
            if self.lag > LAG_WARNING and time.monotonic() - self._warned_at > 60.0:
                self._warned_at = time.monotonic()
                log.warning("the task history is %d batches behind the log (its process yields the CPU to "
                            "dispatch: it catches up when the CPU is free)", self.lag)
            time.sleep(SEND_EVERY)

    def _write(self, data: bytes) -> None:
        for _ in range(2):
            try:
                assert self._child.stdin is not None
                self._child.stdin.write(data)
                self._child.stdin.flush()
                return
            except (BrokenPipeError, ValueError, OSError):
                if self._closing:
                    return
                log.error("the task history's process died (exit %s): starting it again; the batches on "
                          "their way are filled from a peer", self._child.poll())
                self._child = self._start()

    def _hear(self, out: IO[bytes]) -> None:
        for line in out:
            words = line.split()
            if len(words) == 2 and words[0] == b"written":
                self._set_written(int(words[1]))


# -- the child -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qrt.history.process")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--max-age", type=float, required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--value-bytes", type=int, required=True)
    parser.add_argument("--node", required=True, help="this coordinator's client URL (to find its peers)")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--curve-key", help="the coordinator's .key_secret (its key is a client of every node)")
    args = parser.parse_args(argv)
    from ..lifetime import die_with_parent
    die_with_parent(args.parent)
    os.nice(NICE)
    logs.setup("info", os.environ.get(logs.ENV_FORMAT, "text"))
    history = History(args.data_dir, Retention(args.max_age, args.max_bytes, args.value_bytes),
                      on_written=_say_written, thread=False)
    history.fetch = _peers_journal(args.node, args.curve_key)
    history.serve(_from_stdin(sys.stdin.buffer.fileno()))


def _from_stdin(fd: int) -> Source:
    """The batches the coordinator writes to our stdin, one at a time, as `History.serve` asks."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 31)

    def next_batch(timeout: float | None) -> tuple[int, list[HistoryEvent]] | None:
        while True:
            try:
                batch, events = next(unpacker)
                return batch, events
            except StopIteration:
                pass
            if timeout is not None and not select.select([fd], [], [], timeout)[0]:
                raise queue.Empty
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return None  # the coordinator closed the pipe: the end
            unpacker.feed(chunk)
    return next_batch


def _say_written(batch: int) -> None:
    sys.stdout.write(f"written {batch}\n")
    sys.stdout.flush()


def _peers_journal(node: str, curve_key: str | None) -> Any:
    """A `History.fetch`: the peers' URLs from this node's status, then the first whose history
    holds the batches (queries.journal)."""
    from ..client import Client
    from ..errors import QrtError
    keys = {} if curve_key is None else {"curve_secret_key": curve_key, "curve_server_key": curve_key}

    def fetch(after: int, before: int) -> dict[str, Any]:
        with Client([node], timeout=5.0, **keys) as own:
            peers = [n["url"] for n in own.status(local=True)["nodes"] if n["url"] != node]
        if not peers:
            raise LookupError("no peer to copy the task history from")
        for url in peers:
            try:
                with Client([url], timeout=5.0, **keys) as peer:
                    page = peer.history_journal(after, before)
            except QrtError as exc:
                log.debug("the history of %s did not answer: %s", url, exc)
                continue
            if page.get("complete"):
                return page
        raise RuntimeError("no peer's history holds those batches (yet)")
    return fetch


if __name__ == "__main__":
    main()
