"""qrt.local's ports: a server's port must not be one an outgoing connection can be given."""

from __future__ import annotations

import socket

from qrt.local import free_port


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = f.read().split()
        return int(low), int(high)
    except OSError:
        return 32768, 60999


def test_ports_handed_out_are_free_distinct_and_below_the_ephemeral_range() -> None:
    """A port from bind(0) lies in the ephemeral range, where an outgoing connection could take it
    before the server binds it (CI: a coordinator's 'Address already in use' on 127.0.0.1:48787)."""
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < low for port in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
