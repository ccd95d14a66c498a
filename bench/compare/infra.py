"""What the peers need, set up on demand: their virtualenv, and a Redis server of the run's own.

`ensure_peers_venv()` builds .venv-peers from peers-requirements.txt (again when that file changes);
`ensure_redis_server()` installs Debian's redis-server when it is missing; `redis_server()` starts
one on 127.0.0.1 on a free port, with no persistence, and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from qrt.local import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS_VENV = os.path.join(REPO_ROOT, ".venv-peers")
PEERS_REQUIREMENTS = os.path.join(HERE, "peers-requirements.txt")
REDIS_START_TIMEOUT = 10.0


def ensure_peers_venv() -> str:
    """The peers' Python, installing their virtualenv first if it is missing or out of date."""
    python = os.path.join(PEERS_VENV, "bin", "python")
    stamp = os.path.join(PEERS_VENV, ".requirements")
    with open(PEERS_REQUIREMENTS) as f:
        wanted = f.read()
    if os.path.exists(python) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == wanted:
                return python
    print(f"setting up {os.path.relpath(PEERS_VENV, REPO_ROOT)} (Celery, Dramatiq) ...", file=sys.stderr)
    # From inside a virtualenv, `-m venv` bases the new one on the same interpreter, not on this venv.
    subprocess.run([sys.executable, "-m", "venv", "--clear", PEERS_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", PEERS_REQUIREMENTS], check=True)
    with open(stamp, "w") as f:
        f.write(wanted)
    return python


def ensure_redis_server() -> str:
    """The path of redis-server, installed from Debian's packages (apt-get) when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    print("redis-server is missing: installing Debian's package ...", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    install = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "redis-server"]
    if subprocess.run(install).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], check=False)  # a fresh machine has no package lists yet
        subprocess.run(install, check=False)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not installed and `apt-get install redis-server` failed: "
                           "install it (Debian/Ubuntu: apt-get install redis-server), or run only qrt "
                           "(--systems qrt-1,qrt-3)")
    return found


def redis_command(port: int, *args: str) -> bytes:
    """Send one command (RESP) and return its reply: a status line (e.g. b"+PONG") or a bulk string's body."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        head, _, body = reply.partition(b"\r\n")
        if not head.startswith(b"$"):
            return head
        size = int(head[1:])
        while len(body) < size:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return body[:size]


@contextmanager
def redis_server(binary: str, workdir: str) -> Iterator[tuple[str, int]]:
    """A Redis server on 127.0.0.1, no snapshots or append-only file; yields (URL, port)."""
    port = free_port()
    with open(os.path.join(workdir, "redis.log"), "ab") as log:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                if redis_command(port, "PING") == b"+PONG":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port} (see {workdir}/redis.log)")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip())
