"""An actor's queue: one heap per lane (a combination of key values), lanes served round-robin.

Priority first, then fairness: the next task is the highest priority among the lanes' heads that
are permitted to start; among lanes whose head has that priority, the one that waited longest
for its turn (round-robin). So a tenant with 10,000 queued tasks delays a tenant with 3 by at
most one turn, and a higher priority still goes first. A lane may be weighted: a weight of 3
gives it three tasks per turn.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

Entry = tuple[int, int, str]  # (-priority, order, task id)


def lane_of(keys: dict[str, Any]) -> str:
    """A deterministic name for a combination of key values (the same on every replica)."""
    return "\x1f".join(f"{name}={keys[name]!r}" for name in sorted(keys)) if keys else ""


class ActorQueue:
    def __init__(self) -> None:
        self.lanes: dict[str, list[Entry]] = {}  # insertion order is the round-robin order
        self.prioritised = 0  # queued entries with a priority other than 0
        self.turns: dict[str, int] = {}  # picks a weighted lane has had in its current turn
        self.size = 0  # entries in all lanes, stale ones included (the store compares it with its count)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """From a snapshot written before `size` existed: count it."""
        self.__dict__.update(state)
        if "size" not in state:
            self.size = sum(len(heap) for heap in self.lanes.values())

    def push(self, lane: str, entry: Entry) -> None:
        heapq.heappush(self.lanes.setdefault(lane, []), entry)
        self.size += 1
        if entry[0]:
            self.prioritised += 1

    def compact(self, valid: Callable[[Entry], bool]) -> None:
        """Drop stale entries (and the lanes left empty, with their turns), keeping the lanes' order."""
        for lane in list(self.lanes):
            heap = [entry for entry in self.lanes[lane] if valid(entry)]
            if heap:
                heapq.heapify(heap)
                self.lanes[lane] = heap
            else:
                del self.lanes[lane]
                self.turns.pop(lane, None)
        self.size = sum(len(heap) for heap in self.lanes.values())
        self.prioritised = sum(1 for heap in self.lanes.values() for entry in heap if entry[0])

    def heads(self, valid: Callable[[Entry], bool]) -> Iterator[tuple[str, Entry]]:
        """Each lane's best valid entry, in round-robin order; drops stale entries and empty lanes."""
        for lane in list(self.lanes):
            heap = self.lanes[lane]
            while heap and not valid(heap[0]):
                self._pop(lane)
                heap = self.lanes.get(lane, [])
            if heap:
                yield lane, heap[0]

    def take(self, lane: str, weight: int = 1) -> Entry:
        """Pop the lane's head; after `weight` picks in a row, the lane goes to the back of the round."""
        entry = self._pop(lane)
        taken = self.turns.pop(lane, 0) + 1
        if lane in self.lanes and taken < weight:
            self.turns[lane] = taken  # its turn goes on: it keeps its place
            return entry
        heap = self.lanes.pop(lane, None)
        if heap:
            self.lanes[lane] = heap
        return entry

    def claim(self, lane: str, entry: Entry, valid: Callable[[Entry], bool]) -> None:
        """A lease the leader chose itself took `entry` (state machine, `grant`): drop it if it heads
        its lane (after the stale entries before it), else it stays behind as a stale entry; either
        way the lane's turn ends, as `take` ends it."""
        heap = self.lanes.get(lane)
        while heap and heap[0] != entry and not valid(heap[0]):
            self._pop(lane)
            heap = self.lanes.get(lane)
        if heap and heap[0] == entry:
            self.take(lane)
        elif heap:
            self.turns.pop(lane, None)
            self.lanes[lane] = self.lanes.pop(lane)

    def _pop(self, lane: str) -> Entry:
        heap = self.lanes[lane]
        entry = heapq.heappop(heap)
        self.size -= 1
        if entry[0]:
            self.prioritised -= 1
        if not heap:
            del self.lanes[lane]
            self.turns.pop(lane, None)  # a lane that comes back starts a new turn (as after `take`)
        return entry


def first(heap: list[Entry], ok: Callable[[Entry], bool]) -> Entry | None:
    """The least entry of `heap` that `ok` accepts, without changing the heap: a best-first walk
    from the root, so it looks at the entries it skips and their children only."""
    if not heap or ok(heap[0]):
        return heap[0] if heap else None
    frontier = [(heap[0], 0)]
    while frontier:
        entry, i = heapq.heappop(frontier)
        if ok(entry):
            return entry
        for child in (2 * i + 1, 2 * i + 2):
            if child < len(heap):
                heapq.heappush(frontier, (heap[child], child))
    return None
