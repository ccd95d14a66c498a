"""A private network of Linux network namespaces that a test can cut and heal (partition tests).

Layout, a star: a hub namespace holds a bridge; every member (a coordinator node, a worker, a client)
gets a namespace of its own, joined to the bridge by a veth pair, with the address 10.213.0.N/24.
Nothing is added to the root namespace: its addresses, routes and links are untouched, and two labs
never see each other (each has its own hub), so the same addresses serve every lab at once.

A partition moves members' ports from the main bridge to an island bridge of their own (`ip link
set pN master brK`): the island's members reach one another and no one else, in both directions,
while every link stays up. Neighbour (ARP) entries are
permanent, so the cut is silent, as a firewall's DROP rule makes it: no "host unreachable" tells
TCP to give up early. That is the hard case for a Raft transport, and the only drop this machine
class offers (it has neither nft nor iptables; measured). Healing puts the port back on the bridge;
with STP off it forwards at once.

The test process stays in the root namespace and cannot reach the members. It talks to them through
an `Agent`: a small Python process started inside a member's namespace (`python -m tests.netns`),
which sends requests for it (the qrt client, or one raw protocol frame) and answers over a pipe.

Every namespace is deleted on `close()` (and the agents stopped, by PID), whatever failed; names
carry the PID and a random tag, so runs never collide. Where namespaces cannot be made (not root,
no `ip`, a container without CAP_SYS_ADMIN), `NetLab.create_or_skip` skips the test saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgpack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A private range no other test or service uses; each lab has it to itself, inside its own namespaces.
SUBNET = "10.213.0"
# `ip` commands are quick; one that hangs means a broken host, which should fail the test, not stall it.
IP_TIMEOUT = 10.0
# How long an agent may take to start (a Python process importing qrt: ~0.3 s measured).
AGENT_START_TIMEOUT = 20.0


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here; the message says why."""


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


class NetLab:
    """Namespaces for `members`, joined by one bridge; `isolate(m)` cuts a member off, `heal(m)` joins it."""

    def __init__(self, members: Sequence[str]) -> None:
        self.agent_env: dict[str, str] = {}  # more environment for the agents (e.g. CURVE keys)
        if len(set(members)) != len(members) or not 0 < len(members) < 250:
            raise ValueError(f"members must be distinct, 1 to 249 of them: {members!r}")
        self.members = list(members)
        self.tag = f"qrt{os.getpid()}-{secrets.token_hex(3)}"
        self.hub = f"{self.tag}-hub"
        self._made: list[str] = []  # namespaces created so far, deleted by close()
        self._agents: dict[str, Agent] = {}
        self.isolated: set[str] = set()
        self._islands = 0

    @classmethod
    def create_or_skip(cls, members: Sequence[str]) -> NetLab:
        """A ready lab, or pytest.skip naming what is missing (namespaces are root-only)."""
        import pytest

        lab = cls(members)
        try:
            lab.create()
        except NetnsUnavailable as exc:
            lab.close()
            pytest.skip(f"network namespaces unavailable: {exc}")
        return lab

    def namespace(self, member: str) -> str:
        return f"{self.tag}-{self.members.index(member)}"

    def address(self, member: str) -> str:
        return f"{SUBNET}.{self.members.index(member) + 1}"

    def prefix(self, member: str) -> list[str]:
        """The command prefix that runs a program in `member`'s namespace (it execs: the PID is the program's)."""
        return ["ip", "netns", "exec", self.namespace(member)]

    def _port(self, member: str) -> str:
        return f"p{self.members.index(member)}"

    def create(self) -> None:
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the `ip` command (iproute2) is not installed")
        if os.geteuid() != 0:
            raise NetnsUnavailable("creating network namespaces needs root (run the partition tests as root)")
        try:
            self._add_namespace(self.hub)
        except RuntimeError as exc:
            raise NetnsUnavailable(str(exc)) from None
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        macs: dict[str, str] = {}
        for member in self.members:
            ns = self.namespace(member)
            self._add_namespace(ns)
            port = self._port(member)
            # Made inside the hub and the member at once: no name is ever taken in the root namespace.
            _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(member)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            macs[member] = json.loads(_ip("-j", "-n", ns, "link", "show", "eth0"))[0]["address"]
        for member in self.members:  # permanent neighbours: a cut is silence, never "unreachable"
            for other in self.members:
                if other != member:
                    _ip("-n", self.namespace(member), "neigh", "replace", self.address(other), "lladdr",
                        macs[other], "dev", "eth0", "nud", "permanent")

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def isolate(self, *members: str) -> None:
        """Cut `members` off from all others, silently, both ways; they still reach one another (an island)."""
        self._islands += 1
        bridge = f"br{self._islands}"
        _ip("-n", self.hub, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("-n", self.hub, "link", "set", bridge, "up")
        for member in members:
            _ip("-n", self.hub, "link", "set", self._port(member), "master", bridge)
        self.isolated.update(members)

    def heal(self, *members: str) -> None:
        """Join `members` (every cut-off member when none is named) to the main bridge again."""
        for member in members or sorted(self.isolated):
            _ip("-n", self.hub, "link", "set", self._port(member), "master", "br0")
            self.isolated.discard(member)

    def agent(self, member: str) -> Agent:
        """The agent in `member`'s namespace (started on first use, stopped by close())."""
        if member not in self._agents:
            self._agents[member] = Agent(self.prefix(member), self.agent_env)
        return self._agents[member]

    def close(self) -> None:
        """Stop the agents and delete every namespace made (their links go with them). Never raises."""
        for agent in self._agents.values():
            agent.close()
        self._agents.clear()
        for ns in reversed(self._made):
            with contextlib.suppress(Exception):
                _ip("netns", "delete", ns)
        self._made.clear()

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_frame(stream: Any, value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _read_frame(stream: Any) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError("the other end closed the pipe")
    (size,) = struct.unpack(">I", header)
    return msgpack.unpackb(stream.read(size), raw=False)


class Agent:
    """A Python process inside a namespace that makes requests for the test, one at a time.

    Every reply is a map: {"ok": value} or {"error": exception class name, "message": text}.
    """

    def __init__(self, prefix: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "tests.netns"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=REPO, env=env)
        reply = self._call({"op": "ping"})
        if reply.get("ok") != "pong":
            raise RuntimeError(f"the agent did not start: {reply}")

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _write_frame(self.proc.stdin, request)
        reply: dict[str, Any] = _read_frame(self.proc.stdout)
        return reply

    def status(self, url: str, local: bool = True, timeout: float = 2.0) -> dict[str, Any] | None:
        """One node's status (its own view when `local`), or None when it does not answer in `timeout`."""
        reply = self.ask(url, {"t": "status", "local": local}, timeout)
        return reply if reply.get("t") == "ok" else None

    def ask(self, url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one raw request frame to one node; its reply, or {"t": "silence"} after `timeout`."""
        reply: dict[str, Any] = self._call({"op": "ask", "url": url, "body": body, "timeout": timeout})["ok"]
        return reply

    def submit(self, urls: list[str], actor: str, args: list[Any], timeout: float = 15.0) -> dict[str, Any]:
        """Submit with the qrt client (it follows redirects and fails over): {"ok": task id} or an error."""
        return self._call({"op": "submit", "urls": urls, "actor": actor, "args": args, "timeout": timeout})

    def result(self, urls: list[str], task_id: str, timeout: float) -> dict[str, Any]:
        return self._call({"op": "result", "urls": urls, "id": task_id, "timeout": timeout})

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the agent's read ends: it exits
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the agent's side (runs inside a namespace) ------------------------------------------------


def _ask(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    import zmq

    from qrt.curve import peer_keys

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    keys = peer_keys()  # from QRT_CURVE_SECRET_KEY and QRT_CURVE_SERVER_KEY, as a client's
    if keys is not None:
        keys.apply(sock)
    try:
        sock.connect(url)
        sock.send(msgpack.packb({"v": 1, "rid": 1, **body}, use_bin_type=True))
        if not sock.poll(int(timeout * 1000)):
            return {"t": "silence"}
        reply: dict[str, Any] = msgpack.unpackb(sock.recv(), raw=False)
        return reply
    finally:
        sock.close()


def _serve() -> None:
    import qrt

    clients: dict[tuple[tuple[str, ...], float], qrt.Client] = {}

    def client(urls: list[str], timeout: float) -> qrt.Client:
        key = (tuple(urls), timeout)
        if key not in clients:
            clients[key] = qrt.Client(urls, timeout=timeout)
        return clients[key]

    def handle(req: dict[str, Any]) -> Any:
        op = req["op"]
        if op == "ping":
            return "pong"
        if op == "ask":
            return _ask(req["url"], req["body"], req["timeout"])
        if op == "submit":
            c = client(req["urls"], req["timeout"])
            return c.submit_with(req["actor"], req["args"]).id
        if op == "result":
            return client(req["urls"], 15.0).task(req["id"]).result(timeout=req["timeout"])
        raise ValueError(f"unknown op {op!r}")

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            try:
                req = _read_frame(stdin)
            except EOFError:
                return
            started = time.monotonic()
            try:
                reply: dict[str, Any] = {"ok": handle(req)}
            except Exception as exc:  # told to the test, which decides; the agent serves on
                reply = {"error": type(exc).__name__, "message": str(exc)}
            reply["took"] = time.monotonic() - started
            _write_frame(stdout, reply)
    finally:
        for c in clients.values():
            c.close()


def new_task_id() -> str:
    return uuid.uuid4().hex


if __name__ == "__main__":
    _serve()
