"""Hypothesis strategies for hostile frames: valid messages of every type (the round trips of
tests/unit/test_protocol.py, one per message class), with a field dropped, replaced by any msgpack
value or joined by a stray one; their bytes flipped, cut, repeated or spliced; or plain garbage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
from hypothesis import strategies as st

from qrt import protocol as P
from tests.unit.test_protocol import ROUND_TRIPS

# What each side receives: the coordinator reads requests and worker messages, a worker the rest.
TO_COORDINATOR = [m for m in ROUND_TRIPS if isinstance(m, P.Request | P.WorkerMessage)]
# Not `redirect`: the corpus's leader URL is off loopback, where nothing may be sent from here.
TO_WORKER = [m for m in ROUND_TRIPS if isinstance(m, P.Welcome | P.Hb | P.Run | P.Ack | P.CancelRun | P.Error)]

values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _wire(message: P.Message) -> dict[str, Any]:
    return {"v": 1, **message.to_wire()}


@st.composite
def field_mutation(draw: st.DrawFn, corpus: Sequence[P.Message]) -> bytes:
    wire = _wire(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 3))):
        if not wire:
            break
        key = draw(st.sampled_from(sorted(wire)))
        how = draw(st.sampled_from(["drop", "replace", "add", "nest"]))
        if how == "drop":
            wire.pop(key, None)
        elif how == "replace":
            wire[key] = draw(values)
        elif how == "add":
            wire[draw(st.text(max_size=8))] = draw(values)
        else:  # deeper: the same mutation inside a list or map value
            inner = wire.get(key)
            if isinstance(inner, list) and inner and isinstance(inner[0], dict) and inner[0]:
                entry = dict(inner[0])
                entry[draw(st.sampled_from(sorted(entry)))] = draw(values)
                wire[key] = [entry, *inner[1:]]
    packed: bytes = msgpack.packb(wire, use_bin_type=True)
    return packed


@st.composite
def byte_mutation(draw: st.DrawFn, corpus: Sequence[P.Message]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)).encode())
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "cut", "repeat", "insert", "huge_length"]))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:]
        elif how == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 16))] * draw(st.integers(1, 8))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:  # a length prefix claiming far more than follows (array 32, map 32, str 32, bin 32)
            data[at:at] = bytes([draw(st.sampled_from([0xDD, 0xDF, 0xDB, 0xC6]))]) + b"\xff\xff\xff\xf0"
    return bytes(data)


def frames(corpus: Sequence[P.Message]) -> st.SearchStrategy[bytes]:
    return field_mutation(corpus) | byte_mutation(corpus) | st.binary(max_size=64) | \
        values.map(lambda v: msgpack.packb(v, use_bin_type=True))
