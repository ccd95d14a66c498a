"""A state machine replica in a process of its own (another PYTHONHASHSEED): the stateful test
applies every batch here too and compares state digests, so that nothing the state machine does
may depend on the hash seed or on anything else the process holds.

Frames on stdin: 4-byte length, then one byte of kind and its data: b"R" reset, b"A" + a batch to
apply, b"D" digest (answered on stdout as 4-byte length + the hex digests of the state and the log).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from typing import IO

from qrt.state import StateMachine
from qrt.state.digest import state_digest

HEADER = struct.Struct("!I")


def _read(stream: IO[bytes]) -> bytes | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return stream.read(HEADER.unpack(header)[0])


def serve() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    machine = StateMachine()
    while (frame := _read(stdin)) is not None:
        kind, data = frame[:1], frame[1:]
        if kind == b"R":
            machine = StateMachine()
        elif kind == b"A":
            machine.apply_batch(data)
        elif kind == b"D":
            answer = f"{state_digest(machine)} {machine.digest}".encode()
            stdout.write(HEADER.pack(len(answer)) + answer)
            stdout.flush()


class RemoteReplica:
    """The test's handle on the replica process."""

    def __init__(self) -> None:
        ours = os.environ.get("PYTHONHASHSEED", "")
        hash_seed = str(int(ours) + 1) if ours.isdigit() else "12345"  # ours is random, or differs
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.unit.replica_process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": hash_seed})

    def _send(self, kind: bytes, data: bytes = b"") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(HEADER.pack(len(data) + 1) + kind + data)

    def reset(self) -> None:
        self._send(b"R")

    def apply_batch(self, payload: bytes) -> None:
        self._send(b"A", payload)

    def digests(self) -> tuple[str, str]:
        """(state digest, log digest) after everything sent so far."""
        self._send(b"D")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.flush()
        answer = _read(self.proc.stdout)
        assert answer is not None, "the replica process died"
        state, log = answer.decode().split()
        return state, log

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    serve()
