"""The Raft cipher that replaces pysyncobj's Fernet: what pysyncobj relies on, and tampering refused."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from qrt.raft_cipher import RaftCipher


@pytest.fixture(scope="module")
def pair() -> tuple[RaftCipher, RaftCipher]:
    return RaftCipher("secret"), RaftCipher("secret")  # two nodes: each its own sending key


def test_a_node_reads_what_another_sent(pair: tuple[RaftCipher, RaftCipher]) -> None:
    sender, receiver = pair
    token = sender.encrypt_at_time(b"append entries", 1234)
    assert receiver.extract_timestamp(token) == 1234
    assert receiver.decrypt(token) == b"append entries"
    assert b"append entries" not in token


def test_nonces_never_repeat(pair: tuple[RaftCipher, RaftCipher]) -> None:
    sender, _ = pair
    tokens = [sender.encrypt_at_time(b"same", 1) for _ in range(100)]
    assert len({t[25:37] for t in tokens}) == 100
    assert len(set(tokens)) == 100


def test_tampering_is_refused(pair: tuple[RaftCipher, RaftCipher]) -> None:
    sender, receiver = pair
    token = bytearray(sender.encrypt_at_time(b"payload", 7))
    forged_time = bytes(token[:1]) + (8).to_bytes(8, "big") + bytes(token[9:])  # a later timestamp
    with pytest.raises(InvalidTag):
        receiver.decrypt(forged_time)
    token[-1] ^= 1
    with pytest.raises(InvalidTag):
        receiver.decrypt(bytes(token))


def test_another_password_or_cipher_is_refused() -> None:
    token = RaftCipher("secret").encrypt_at_time(b"payload", 1)
    with pytest.raises(InvalidTag):
        RaftCipher("other").decrypt(token)
    with pytest.raises(ValueError, match="not a qrt Raft message"):
        RaftCipher("secret").extract_timestamp(b"gAAAAAB" + b"x" * 60)  # what Fernet sends


def test_forged_senders_are_not_remembered() -> None:
    receiver = RaftCipher("secret")
    forged = RaftCipher("other").encrypt_at_time(b"payload", 1)  # a salt of its own, a key it cannot have
    with pytest.raises(InvalidTag):
        receiver.decrypt(forged)
    assert receiver._receiving == {}  # a flood of forged salts cannot evict the real senders' keys


def test_raft_frames_go_raw_when_small_and_deflated_when_large_and_either_reads() -> None:
    import zlib

    from pysyncobj import tcp_connection

    from qrt.raft_guard import FrameCompression

    assert tcp_connection.zlib is FrameCompression  # pysyncobj's connections use it
    small, large = b"heartbeat", bytes(range(256)) * 40
    assert FrameCompression.compress(small, 3) == b"\x00" + small
    assert len(FrameCompression.compress(large, 3)) < len(large)
    for data in (small, large, b""):
        assert FrameCompression.decompress(FrameCompression.compress(data, 3)) == data
        assert FrameCompression.decompress(zlib.compress(data, 3)) == data  # as pysyncobj's own deflate wrote it
    assert all(zlib.compress(b"x", level)[:1] != b"\x00" for level in range(10))
