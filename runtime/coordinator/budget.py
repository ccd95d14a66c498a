"""What each connection's requests hold in the leader: bytes in, bytes out when answered.

ZeroMQ bounds a frame (MAXMSGSIZE) but not how many a peer sends without reading its answers:
each submit waits for its commit, each wait for its task, and a peer that never stops sending
would grow the leader's memory without end. A byte budget per routing id bounds that; past it the
request is answered `unavailable` at once, holding nothing (defaults.HELD_FRAMES_PER_PEER).
"""

from __future__ import annotations

from .. import defaults


class PeerBudget:
    def __init__(self, limit: int, floor: int = defaults.REQUEST_FLOOR_BYTES) -> None:
        self.limit = limit
        self.floor = floor
        self._held: dict[bytes, int] = {}  # routing id -> bytes held (no zeros)

    def take(self, identity: bytes, size: int) -> int | None:
        """Hold a request of `size` bytes for `identity`: what it is charged (give it back when
        answered), or None when that would pass the limit (a request larger than the limit alone
        is still let in, so that one frame at the size limit always passes)."""
        charge = max(size, self.floor)
        held = self._held.get(identity, 0)
        if held and held + charge > self.limit:
            return None
        self._held[identity] = held + charge
        return charge

    def give(self, identity: bytes, charge: int) -> None:
        left = self._held.get(identity, 0) - charge
        if left > 0:
            self._held[identity] = left
        else:
            self._held.pop(identity, None)

    def held(self, identity: bytes) -> int:
        return self._held.get(identity, 0)

    def clear(self) -> None:
        self._held.clear()
