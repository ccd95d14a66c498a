"""A Raft journal that is on disk before pysyncobj acts on it: `qrt coordinator --fsync`.

pysyncobj 0.3.17 never syncs what it stores (its issue #84): its FileJournal writes each entry into
an mmap (pysyncobj/journal.py, `FileJournal.add`) that is flushed only when the node is destroyed;
the term, vote and commit index go to a `.meta` file written and renamed without fsync
(`MetaStorer.storeMeta`); the snapshot is written and renamed without fsync by a forked child
(serializer.py, `Serializer.serialize`), after which the journal's head is cut in place
(`FileJournal.deleteEntriesTo`). A leader appends an entry and commits it on its next tick when a
majority has it (syncobj.py, `_checkCommandsToApply` then `_onTick`), and a follower acknowledges
entries right after appending them (syncobj.py, `__onMessageReceived`: `add` then
`__sendNextNodeIdx`), so no node waits for the disk. A killed process loses nothing (the page cache
is the kernel's), a power cut loses what the kernel had not yet written back (up to ~30 s by
default).

`DurableJournal` keeps pysyncobj's on-disk format (a data directory moves between `--fsync` and
not) and is durable before each method returns, which is before pysyncobj can act on it: an entry
is on disk before the leader counts itself in a majority, and before a follower acknowledges it.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from pysyncobj.journal import (
    APP_NAME,
    APP_VERSION,
    FIRST_RECORD_OFFSET,
    JOURNAL_FORMAT_VERSION,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
    Journal,
)
from pysyncobj.pickle import dumps, loads, to_bytes

Entry = tuple[bytes, int, int]  # (command, log index, term), as pysyncobj keeps them

HEADER = (APP_NAME.ljust(NAME_SIZE, b"\0") + APP_VERSION.ljust(VERSION_SIZE, b"\0")
          + struct.pack("<II", JOURNAL_FORMAT_VERSION, FIRST_RECORD_OFFSET))
assert len(HEADER) == FIRST_RECORD_OFFSET


def fsync_path(path: str) -> None:
    """fsync a file or a directory by name (a directory: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that after a power cut it holds the old or the new bytes."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(path) or ".")


def record(entry: Entry) -> bytes:
    command, idx, term = entry
    body: bytes = struct.pack("<QQ", idx, term) + to_bytes(command)
    size = struct.pack("<I", len(body))
    return size + body + size


class DurableJournal(Journal):  # type: ignore[misc]
    """pysyncobj's `Journal` interface over a file that is synced before each change returns.

    An append syncs twice: the record, then the header's end offset that makes it visible. One
    sync of both could reach the disk as a header pointing at a record that never arrived: a
    journal that no longer loads (pysyncobj keeps no checksums).
    """

    def __init__(self, path: str, dump_path: str) -> None:
        self._path = path
        self._dir = os.path.dirname(path) or "."
        self._dump_path = dump_path  # pysyncobj's snapshot: synced before the journal is cut
        self._meta_path = path + ".meta"
        self._entries: list[Entry] = []
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size < FIRST_RECORD_OFFSET:
            os.pwrite(self._fd, HEADER, 0)
        self._end = self._load()
        os.fsync(self._fd)  # whatever pysyncobj's own journal wrote on this file before us
        fsync_path(self._dir)
        self._meta: dict[str, Any] = {}
        if os.path.exists(self._meta_path):
            try:
                with open(self._meta_path, "rb") as f:
                    self._meta = loads(f.read())
            except Exception as exc:  # pickle raises any of a dozen types on a damaged file
                raise ValueError(f"Raft term file {self._meta_path} is unreadable ({exc!r})") from None
        self._meta_saved = True

    def _load(self) -> int:
        with open(self._path, "rb") as f:
            data = f.read()
        (end,) = struct.unpack_from("<I", data, LAST_RECORD_OFFSET_OFFSET)
        if end > len(data):
            raise ValueError(f"Raft journal {self._path} ends at {end}, past its {len(data)} bytes")
        offset: int = FIRST_RECORD_OFFSET
        while offset < end:
            (size,) = struct.unpack_from("<I", data, offset)
            idx, term = struct.unpack_from("<QQ", data, offset + 4)
            self._entries.append((data[offset + 20:offset + 4 + size], idx, term))
            offset += size + 8
        return offset

    def _set_end(self, end: int) -> None:
        os.pwrite(self._fd, struct.pack("<I", end), LAST_RECORD_OFFSET_OFFSET)
        os.fdatasync(self._fd)
        self._end = end

    def add(self, command: bytes, idx: int, term: int) -> None:
        data = record((command, idx, term))
        os.pwrite(self._fd, data, self._end)
        os.fdatasync(self._fd)
        self._entries.append((command, idx, term))
        self._set_end(self._end + len(data))

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        end = self._end - sum(len(record(e)) for e in self._entries[entryFrom:])
        del self._entries[entryFrom:]
        self._set_end(end)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop what a snapshot now holds: that snapshot first on disk, then a new journal."""
        self._rewrite(self._entries[entryTo:])

    def clear(self) -> None:
        """pysyncobj clears the journal to load a snapshot (then adds the snapshot's last entries)."""
        self._rewrite([])

    def _rewrite(self, entries: list[Entry]) -> None:
        # The snapshot (written and renamed by pysyncobj without fsync) holds what is dropped.
        if os.path.exists(self._dump_path):
            fsync_path(self._dump_path)
            fsync_path(os.path.dirname(self._dump_path) or ".")
        body = b"".join(record(e) for e in entries)
        header = HEADER[:LAST_RECORD_OFFSET_OFFSET] + struct.pack("<I", FIRST_RECORD_OFFSET + len(body))
        # A new file renamed over the old, not pysyncobj's rewrite in place: a power cut halfway
        # through leaves the old journal or the new one, never half of each.
        write_durably(self._path, header + body)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR)
        self._entries = list(entries)
        self._end = FIRST_RECORD_OFFSET + len(body)

    def __getitem__(self, item: int | slice) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd >= 0:
            self.onOneSecondTimer()
            os.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        os.fdatasync(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Raft needs no durable commit index (a restarted node learns it again), so it is stored
        # once a second, as pysyncobj does.
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_saved = False

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # On disk before any vote or request reflecting it is sent (Raft, section 5.2).
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        if not self._meta_saved:
            self._store_meta()

    def _store_meta(self) -> None:
        write_durably(self._meta_path, dumps(self._meta))
        self._meta_saved = True
