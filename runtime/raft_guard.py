"""What keeps a stranger out of the Raft port: the cluster secret, and caps on what a peer may send.

pysyncobj unpickles every frame its port receives (tcp_connection.py, `__processParseMessage`), so
the port is safe only if no unauthenticated byte reaches `pickle.loads`:

- **Always a secret.** A node of a multi-node cluster must be given one (`--raft-password-file`);
  a one-node cluster generates its own (`node_secret`). With a secret set, pysyncobj gives every
  connection its `encryptor` (qrt's RaftCipher) before the first frame is read, the first frame of
  an incoming connection (the peer's random key, then its address) included, and a frame that fails
  decryption closes the connection before `pickle.loads` runs. `GuardedConnection` closes any
  connection that has no encryptor, so that rule cannot be lost by a mistake elsewhere.
- **Frames capped before they are buffered.** pysyncobj reads whatever a frame's 4-byte length
  claims before it decrypts anything (an unauthenticated peer claimed 2 GiB and was buffered).
  `GuardedConnection` checks each claim as soon as its header arrives and stops reading once a
  whole frame is buffered: a stranger can make a node hold at most `HANDSHAKE_FRAME_BYTES` plus one
  read; a peer that proved it holds the secret, a frame up to `MAX_FRAME_BYTES`.
- **Few strangers at once.** `GuardedTransport` keeps at most `MAX_STRANGERS` connections that have
  not finished the handshake, closing the oldest (pysyncobj would keep an idle one forever: its
  connection timeout is checked only when the socket has an event).

The overrides use pysyncobj's private names: it is pinned (pyproject.toml), and
tests/failures/test_raft_security.py attacks the port through them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import struct
import time
import zlib
from collections import deque
from typing import Any

from pysyncobj import tcp_connection
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from . import defaults

log = logging.getLogger("qrt.raft")

SECRET_FILE = "raft-secret"  # in a one-node coordinator's data directory

# Largest Raft entry (one proposed batch) qrt appends; Replication.propose fails a larger one with
# its reason. Far above a batch of MAX_COMMANDS_PER_ENTRY ordinary commands (~2 MB at 1 KiB each);
# 64 full-size client frames. Below pysyncobj's own limit: it frames with a signed 32-bit length.
MAX_ENTRY_BYTES = 64 * defaults.MAX_FRAME_BYTES  # 1 GiB
# Largest frame from a peer that has proved it holds the secret. pysyncobj cuts snapshots and a lone
# large entry into 64 KiB pieces, but sends an entry whole behind smaller ones (at most 64 KiB of
# them, its appendEntriesBatchSizeBytes: a follower catching up), and a follower forwards a proposal
# whole: a frame is at most one entry plus 64 KiB, pickle's framing, zlib's growth of incompressible
# data (0.03 %) and the cipher's 53 bytes. Measured on 3 nodes: a lone 12 MiB entry and a snapshot
# go in frames of at most 80 KB; the same entry behind a small one, to a follower that was down,
# in one frame of 7.3 MB (what zlib left of it).
MAX_FRAME_BYTES = MAX_ENTRY_BYTES + 16 * 1024 * 1024
# Largest frame before the peer has proved it holds the secret: the handshake's two frames carry a
# random key and the node's address (at most 230 bytes, measured).
HANDSHAKE_FRAME_BYTES = 4096
# Incoming connections not yet through the handshake, at once: a cluster has at most 4 peers, and
# a peer's handshake takes one round trip.
MAX_STRANGERS = 32
# Refused connections are logged at most this often (a stranger could otherwise fill the log).
REFUSAL_LOG_INTERVAL = 10.0

_HEADER = struct.Struct("i")  # pysyncobj's length prefix: native signed 32-bit


def node_secret(data_dir: str) -> str:
    """The Raft secret of a one-node cluster: read from `data_dir/raft-secret`, generated there
    (random, 0600) when absent, so a restarted node uses the same one."""
    path = os.path.join(data_dir, SECRET_FILE)
    if not os.path.exists(path):
        os.makedirs(data_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process wrote one first: use it
                os.link(tmp, path)  # atomic, and never over an existing secret
        finally:
            os.unlink(tmp)
        log.info("generated a Raft secret in %s", path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise ValueError(f"{path} can be read by other users (mode {mode:o}): chmod 600 it")
    with open(path) as f:
        secret = f.read().strip()
    if not secret:
        raise ValueError(f"{path} is empty: remove it and a new secret is generated")
    return secret


class _Refusals:
    """Counts refused connections; logs them at most every REFUSAL_LOG_INTERVAL seconds."""

    def __init__(self) -> None:
        self._count = 0
        self._last = float("-inf")

    def add(self, reason: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= REFUSAL_LOG_INTERVAL:
            log.warning("refused %d Raft connection(s) (latest: %s); is a node using another secret?",
                        self._count, reason)
            self._count, self._last = 0, now


class FrameCompression:
    """What pysyncobj's connections call `zlib`: a small frame goes as it is, a large one cheaply
    deflated.

    pysyncobj deflates every frame at level 3 before encrypting it. A small frame (a heartbeat, a
    1-task batch) gains nothing from it; a large batch of msgpack does (its field names and hex ids
    repeat: it shrinks 2-3x, and pysyncobj's read buffer copies less), and level 1 does nearly as
    well for less. Measured on 3 nodes (bench.throughput, medians of 3 interleaved): 2 workers x 1
    slot 923 -> 978 tasks/s, 2 x 8 slots 3,917 -> 4,307; not deflating large frames either was
    slower, 3,917 -> 3,580. A frame that starts with 0 is read as it is; any other is inflated (a
    zlib stream never starts with 0: its first byte names deflate, 8, in its low bits), so a node
    reads frames of either kind.
    """

    RAW = b"\x00"
    SMALL = 2048  # bytes: up to this, a frame goes as it is

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        if len(data) > FrameCompression.SMALL:
            return zlib.compress(data, 1)
        return FrameCompression.RAW + data

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return data[1:] if data[:1] == FrameCompression.RAW else zlib.decompress(data)


tcp_connection.zlib = FrameCompression  # this process's pysyncobj connections


class GuardedConnection(TcpConnection):  # type: ignore[misc]
    """pysyncobj's TcpConnection with every frame's length capped and encryption required.

    Trust: a connection is trusted once a frame has arrived that carried the random key this side
    sent on it (pysyncobj checks it: `recvRandKey`, tcp_connection.py). A frame that only decrypts
    may be replayed from a recording; one with our fresh key cannot.
    """

    _qrt_trusted = False
    _qrt_refusals: _Refusals | None = None

    def _qrt_limit(self) -> int:
        return MAX_FRAME_BYTES if self._qrt_trusted else HANDSHAKE_FRAME_BYTES

    def _qrt_refuse(self, reason: str) -> None:
        if self._qrt_refusals is not None:
            self._qrt_refusals.add(reason)
        self.disconnect()

    def _qrt_claim_too_large(self, buffer: bytes) -> bool:
        """Whether the frame at the head of `buffer` claims more than this connection may send."""
        if len(buffer) < _HEADER.size:
            return False
        (claimed,) = _HEADER.unpack_from(buffer)
        if 0 < claimed <= self._qrt_limit():
            return False
        self._qrt_refuse(f"a frame claimed {claimed} bytes, over {self._qrt_limit()}"
                         f"{'' if self._qrt_trusted else ' before the handshake'}")
        return True

    def _TcpConnection__processRead(self) -> bool:
        """One recv into the buffer (pysyncobj's); then the claim of the frame at its head is checked,
        and reading stops once a whole frame of the largest allowed size could be buffered: the
        frames are parsed (consumed) first, and the rest stays in the socket for the next event."""
        if not super()._TcpConnection__processRead():
            return False
        buffer = self._TcpConnection__readBuffer
        if self._qrt_claim_too_large(buffer):
            return False
        return len(buffer) < _HEADER.size + self._qrt_limit()

    def _TcpConnection__processParseMessage(self) -> Any:
        """pysyncobj's parse (length, decrypt, unpickle, check the random key), with the frame's
        claim checked first and an encryptor required; a connection that fails it is logged."""
        if not self.encryptor:  # qrt always sets a secret: a plaintext connection is a bug, not a peer
            self._qrt_refuse("no Raft cipher on the connection")
            return None
        if self._qrt_claim_too_large(self._TcpConnection__readBuffer):
            return None
        checks_key = self.recvRandKey is not None
        message = super()._TcpConnection__processParseMessage()
        if self.state == CONNECTION_STATE.DISCONNECTED:  # pysyncobj closed it: decryption or its key failed
            if self._qrt_refusals is not None:
                self._qrt_refusals.add("a frame failed authentication")
            return None
        if message is not None and checks_key:
            self._qrt_trusted = True
        return message

    def disconnect(self) -> None:
        self._qrt_trusted = False  # an outgoing connection object is reused for the next connect
        super().disconnect()


class GuardedTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with every connection a GuardedConnection.

    pysyncobj builds its connections itself (TcpServer on accept, `addNode` for outgoing ones), so
    each is given the subclass right after it is built, before its socket is first read (the
    poller runs on this same thread). The class adds checks, and no state but `_qrt_trusted` and
    the transport's `_qrt_refusals`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._qrt_refusals = _Refusals()
        self._qrt_strangers: deque[GuardedConnection] = deque()
        super().__init__(*args, **kwargs)

    def _qrt_guard(self, conn: TcpConnection) -> None:
        conn.__class__ = GuardedConnection
        conn._qrt_refusals = self._qrt_refusals

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:
        self._qrt_guard(conn)
        super()._onNewIncomingConnection(conn)
        unknown = self._unknownConnections  # pysyncobj's: incoming connections not yet through the handshake
        strangers = self._qrt_strangers  # the same, oldest first (and some that have since finished it)
        strangers.append(conn)
        while len(unknown) > MAX_STRANGERS and strangers:
            oldest = strangers.popleft()
            if oldest in unknown:
                self._qrt_refusals.add(f"over {MAX_STRANGERS} connections in their handshake")
                oldest.disconnect()  # its callback removes it from _unknownConnections
        if len(strangers) > 2 * MAX_STRANGERS:
            self._qrt_strangers = deque(c for c in strangers if c in unknown)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            self._qrt_guard(conn)
