"""Framing: one msgpack map per ZeroMQ frame, ``{"v": 1, "t": <type>, ...}``, read within limits.

Sans-I/O, like h11: bytes in, maps out, and back; no socket here. `decode` checks the size before
anything is unpacked and hands msgpack explicit limits, so a frame can never make the unpacker
allocate more than the frame's own size allows.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..defaults import MAX_FRAME_BYTES
from ..errors import ProtocolError

VERSION = 1
# How much of an oversized or unreadable frame is read to find its "rid", so that the error can
# name the request. A client that writes "rid" before its bulky fields (docs/protocol.md §4 asks
# it to; messages.Request.to_wire does) needs a few bytes; the bound caps what a hostile frame can
# make us read.
RID_PEEK_BYTES = 64 * 1024
# A frame larger than this is unpacked counting its arrays and maps, at most one per
# BYTES_PER_CONTAINER of the frame. Each costs ~60 bytes of memory for as little as 1 byte of
# msgpack: a 16 MiB frame of empty arrays took 1.17 GiB (measured). Real frames hold one per ~25
# bytes (a task: its map, its args and kwargs). Smaller frames are not counted: they cannot cost
# much, and counting costs ~40 % of unpacking.
COUNT_CONTAINERS_ABOVE = 256 * 1024
BYTES_PER_CONTAINER = 8


class _TooManyContainers(Exception):
    pass


class ErrorCode:
    """Codes carried by ``error`` messages (docs/protocol.md, "Error codes")."""

    BAD_FRAME = "bad_frame"  # not msgpack, or not a map
    BAD_VERSION = "bad_version"  # "v" missing or not a version this node speaks
    UNKNOWN_TYPE = "unknown_type"  # "t" names no message
    BAD_FIELD = "bad_field"  # a field is missing, of the wrong type, or out of range
    TOO_LARGE = "too_large"  # the frame exceeds the node's size limit
    NO_LEADER = "no_leader"  # no leader is elected right now: retry shortly
    NOT_FOUND = "not_found"  # the task or dead letter named does not exist
    UNAVAILABLE = "unavailable"  # the node could not commit the request (lost leadership): retry
    NOT_HELLO = "not_hello"  # a worker message arrived before its hello
    FORBIDDEN = "forbidden"  # with CURVE: the sender's key lacks the role this message needs
    NO_HISTORY = "no_history"  # this node keeps no task history (--no-history): ask another
    INTERNAL = "internal"  # the node failed to handle a valid request (a bug): report it


_packer = msgpack.Packer(use_bin_type=True, datetime=False)


def encode(message: dict[str, Any]) -> bytes:
    """Pack a message map; the caller has already put "t" in it."""
    message["v"] = VERSION
    packed: bytes = _packer.pack(message)
    return packed


def request_id(message: Any) -> int | None:
    """The "rid" of a (possibly invalid) request, so an error reply can name it."""
    rid = message.get("rid") if isinstance(message, dict) else None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def peek_rid(frame: bytes) -> int | None:
    """The int "rid" of a frame that cannot be decoded whole (too large, or invalid further on).

    Reads the map header, then key after key, skipping values, within the first RID_PEEK_BYTES
    only; nothing beyond them is unpacked. None when the frame is not a map, "rid" is not an int
    (a bool is not), or it lies past anything unreadable or past the bound.
    """
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=RID_PEEK_BYTES)
    unpacker.feed(memoryview(frame)[:RID_PEEK_BYTES])
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "rid":
                rid = unpacker.unpack()
                return rid if type(rid) is int else None
            unpacker.skip()
    except (ValueError, TypeError, msgpack.UnpackException):
        pass  # cut off at the bound, garbage, not a map, an unhashable key: the error goes without rid
    return None


def _unpack(frame: bytes, max_bytes: int) -> Any:
    """msgpack with explicit limits (its defaults derive from max_buffer_size): no string, array or
    map longer than the frame itself could describe; and, in a large frame, no more arrays and maps
    than one per BYTES_PER_CONTAINER of it, so that what a frame costs is proportional to its size."""
    limits: dict[str, Any] = {"max_str_len": max_bytes, "max_bin_len": max_bytes, "max_array_len": max_bytes,
                              "max_map_len": max_bytes // 2, "max_ext_len": max_bytes}
    if len(frame) > COUNT_CONTAINERS_ABOVE:
        left = len(frame) // BYTES_PER_CONTAINER

        def count(container: Any) -> Any:
            nonlocal left
            left -= 1
            if left < 0:
                raise _TooManyContainers
            return container
        limits["list_hook"] = limits["object_hook"] = count
    return msgpack.unpackb(frame, raw=False, strict_map_key=False, **limits)


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Unpack one frame into a map with a known version and a type string."""
    if len(frame) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame of {len(frame)} bytes exceeds the limit of {max_bytes}",
                            peek_rid(frame))
    try:
        message = _unpack(frame, max_bytes)
    except _TooManyContainers:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame of {len(frame)} bytes holds more than "
                            f"{len(frame) // BYTES_PER_CONTAINER} arrays and maps (at most one per "
                            f"{BYTES_PER_CONTAINER} bytes)", peek_rid(frame)) from None
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame is not valid msgpack: {exc}", peek_rid(frame)) from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a msgpack map")
    version = message.get("v")
    if type(version) is not int or version != VERSION:
        problem = "is required" if version is None else "is not a protocol version this node speaks"
        raise ProtocolError(ErrorCode.BAD_VERSION, f"field 'v' (protocol version) {problem}: send the int {VERSION}",
                            request_id(message))
    kind = message.get("t")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "field 't' (message type) is required and must be str",
                            request_id(message))
    return message
