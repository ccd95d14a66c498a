"""Run a coordinator cluster and workers as local processes on 127.0.0.1: for demos, tests, benchmarks.

Every process is started here and stopped here, by its PID (SIGTERM, then SIGKILL), so nothing
outlives the `with LocalCluster(...)` block, even when the block fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .client import Client

LOWEST_PORT = 10_000
_handed_out: set[int] = set()  # by this process: never twice


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server started soon after. Picked below the kernel's
    ephemeral range: a port from bind(0) lies in it, and an outgoing connection (a ZeroMQ or Raft
    reconnect of another process) could be given it before the server binds (seen in CI: a
    coordinator's "Address already in use")."""
    below = _ephemeral_low()
    for _ in range(1000):
        port = secrets.randbelow(below - LOWEST_PORT) + LOWEST_PORT
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # a server of another process listens there
        _handed_out.add(port)
        return port
    raise OSError(f"no free port on 127.0.0.1 between {LOWEST_PORT} and {below}")


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


@dataclass
class Node:
    url: str
    raft: str
    data_dir: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    metrics: str = ""  # HOST:PORT of its Prometheus endpoint (LocalCluster.metrics), or ""


@dataclass
class LocalCluster:
    """`nodes` coordinator processes (1, 3 or 5) and any number of worker processes."""

    nodes: int = 1
    password: str | None = None
    base_dir: str | None = None
    log_level: str = "info"
    env: dict[str, str] = field(default_factory=dict)
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)  # more environment for node i
    fsync: bool = False  # every node runs with `qrt coordinator --fsync`
    node_args: list[str] = field(default_factory=list)  # more `qrt coordinator` options, for every node
    metrics: bool = False  # every node serves Prometheus metrics on a port of its own (Node.metrics)
    # CURVE on the client/worker port: keys for the coordinator (shared by its nodes), a client and a
    # worker are generated in base_dir/curve, and every node, worker and client here uses them.
    curve: bool = False
    # Per node: the host it listens on (Raft and clients) and a command prefix that starts it, e.g.
    # ["ip", "netns", "exec", NS] for a node in a network namespace (tests/netns.py). Default: all
    # on 127.0.0.1, no prefix. Without `password`, nodes > 1 share a generated one (a lone node makes its own).
    hosts: list[str] = field(default_factory=list)
    node_prefixes: list[list[str]] = field(default_factory=list)
    coordinator_nodes: list[Node] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir or tempfile.mkdtemp(prefix="qrt-local-")
        addrs = [(free_port(), free_port()) for _ in range(self.nodes)]
        password_args: list[str] = []
        if self.password is None and self.nodes > 1:  # nodes must share a Raft secret (check_cluster)
            self.password = secrets.token_urlsafe(32)
        if self.password:
            path = os.path.join(self.base_dir, "raft-password")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(self.password)
            password_args = ["--raft-password-file", path]
        if self.curve:
            password_args += self._make_keys()
        hosts = self.hosts or ["127.0.0.1"] * self.nodes
        for i, (client_port, raft_port) in enumerate(addrs):
            raft = f"{hosts[i]}:{raft_port}"
            peers = [f"{hosts[j]}:{p}" for j, (_, p) in enumerate(addrs) if j != i]
            data_dir = os.path.join(self.base_dir, f"node{i}")
            url = f"tcp://{hosts[i]}:{client_port}"
            args = ["coordinator", "--listen", url, "--raft", raft, "--data-dir", data_dir,
                    "--log-level", self.log_level, *password_args, *(["--fsync"] if self.fsync else []),
                    *self.node_args]
            for peer in peers:
                args += ["--peer", peer]
            metrics = f"{hosts[i]}:{free_port()}" if self.metrics else ""
            if metrics:
                args += ["--metrics", metrics]
            self.coordinator_nodes.append(Node(url, raft, data_dir, args, metrics=metrics))

    def _make_keys(self) -> list[str]:
        """Generate the coordinator's, a client's and a worker's key pairs; the coordinator's options."""
        from .curve import generate

        assert self.base_dir is not None
        root = os.path.join(self.base_dir, "curve")
        for name in ("coordinator", "client", "worker"):
            generate(root, name)
        for role in ("client", "worker"):
            os.makedirs(os.path.join(root, f"{role}s"), exist_ok=True)
            with open(os.path.join(root, f"{role}.key")) as src, \
                    open(os.path.join(root, f"{role}s", f"{role}.key"), "w") as dst:
                dst.write(src.read())
        return ["--curve-secret-key", os.path.join(root, "coordinator.key_secret"),
                "--curve-clients", os.path.join(root, "clients"), "--curve-workers", os.path.join(root, "workers")]

    def curve_keys(self, name: str) -> dict[str, str]:
        """With `curve`: the keyword arguments of `Client` for key pair `name` ("client", "worker")."""
        if not self.curve:
            return {}
        assert self.base_dir is not None
        root = os.path.join(self.base_dir, "curve")
        return {"curve_secret_key": os.path.join(root, f"{name}.key_secret"),
                "curve_server_key": os.path.join(root, "coordinator.key")}

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.coordinator_nodes]

    def _spawn(self, args: list[str], log_name: str, prefix: list[str] | None = None,
               env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        assert self.base_dir is not None
        log = open(os.path.join(self.base_dir, log_name), "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env_extra or {})}
        # A prefix must exec the command (as `ip netns exec` does), so the PID kept is the process's own.
        return subprocess.Popen([*(prefix or []), sys.executable, "-m", "qrt.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def start(self, wait: bool = True) -> LocalCluster:
        for i in range(len(self.coordinator_nodes)):
            self.start_node(i)
        if wait:
            self.wait_for_leader()
        return self

    def start_node(self, i: int) -> None:
        node = self.coordinator_nodes[i]
        node.log_path = f"node{i}.log"
        node.proc = self._spawn(node.args, node.log_path, self.node_prefixes[i] if self.node_prefixes else None,
                                self.node_env.get(i))

    def start_worker(self, modules: list[str], concurrency: int = 8, extra: list[str] | None = None,
                     name: str | None = None, prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
        args = ["worker", *modules, "--log-level", self.log_level, *(extra or [])]
        args += ["--concurrency", str(concurrency)]
        for option, path in self.curve_keys("worker").items():
            args += [f"--{option.replace('_', '-')}", path]
        for url in self.urls:
            args += ["--coordinator", url]
        proc = self._spawn(args, name or f"worker{len(self.workers)}.log", prefix)
        self.workers.append(proc)
        return proc

    def client(self) -> Client:
        keys = self.curve_keys("client")
        return Client(self.urls, curve_secret_key=keys.get("curve_secret_key"),
                      curve_server_key=keys.get("curve_server_key"))

    def leader_index(self) -> int | None:
        """Which node leads, asking each directly (None: no leader that all agree on yet)."""
        with self.client() as c:
            try:
                status = c.status()
            except Exception:
                return None
        for i, node in enumerate(self.coordinator_nodes):
            if node.url == status.get("leader") and status.get("is_leader"):
                return i
        return None

    def wait_for_leader(self, timeout: float = 20.0) -> int:
        index: int = wait_until(lambda: (lambda i: None if i is None else i + 1)(self.leader_index()),
                                timeout, 0.1, "a coordinator leader") - 1
        return index

    def wait_for_workers(self, n: int = 1, timeout: float = 30.0) -> None:
        """Until the leader knows `n` connected workers."""
        with self.client() as client:
            wait_until(lambda: sum(w["connected"] for w in client.status()["workers"]) >= n, timeout, 0.05,
                       f"{n} connected worker(s)")

    def wait_running(self, actor: str, n: int, timeout: float = 10.0) -> None:
        """Until the leader sees `n` tasks of `actor` running."""
        with self.client() as client:
            wait_until(lambda: client.status()["queues"].get(actor, {}).get("running") == n, timeout, 0.05,
                       f"{n} task(s) of {actor} running")

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.coordinator_nodes[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def log(self, name: str) -> str:
        assert self.base_dir is not None
        with open(os.path.join(self.base_dir, name), errors="replace") as f:
            return f.read()

    def dump_logs(self) -> str:
        """Every process's output, for a failing test's report."""
        assert self.base_dir is not None
        parts = []
        for name in sorted(os.listdir(self.base_dir)):
            if name.endswith(".log"):
                parts.append(f"----- {name} -----\n{self.log(name)[-20000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        procs = [p for p in self.workers] + [n.proc for n in self.coordinator_nodes if n.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
