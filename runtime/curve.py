"""ZeroMQ CURVE on the client/worker port (docs/protocol.md §1.1): keys, and who may use the port.

Keys are pyzmq certificate files (`zmq.auth.create_certificates`, `qrt keys generate DIR NAME`):
`NAME.key` holds a public key, `NAME.key_secret` both halves. A client or worker holds its own
`.key_secret` and the coordinator's public `.key` (every node of a cluster uses the same coordinator
key pair, so one server key reaches whichever node leads). The coordinator holds its `.key_secret` and
two allowlists of public keys, one per role; pyzmq's ZAP authenticator refuses any other key before a
byte of the peer's reaches us, and names the key in the frame's "User-Id" property (its Z85 text),
which the coordinator turns into the roles that key has (`ServerKeys.roles_of`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("qrt.curve")

ENV_SECRET_KEY = "QRT_CURVE_SECRET_KEY"  # a client's or worker's own `.key_secret`
ENV_SERVER_KEY = "QRT_CURVE_SERVER_KEY"  # the coordinator's public `.key`

CLIENT = "client"  # may submit, wait, and the operator commands (every request of §5)
WORKER = "worker"  # may say hello, heartbeat, report outcomes (every message of §6)
ZAP_DOMAIN = "qrt"


def fingerprint(public_key: bytes | str) -> str:
    """A short name of a public key (Z85, as bytes or text): the suffix a worker's id carries under
    CURVE ("NAME@FINGERPRINT"), so that a worker id belongs to one key on every leader, with nothing
    to remember or replicate. 64 bits of SHA-256: a collision among the keys an operator allows is
    out of reach (and a peer cannot add a key of its own to the allowlist)."""
    text = public_key.decode("ascii") if isinstance(public_key, bytes) else public_key
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def generate(directory: str, name: str) -> tuple[str, str]:
    """Write `directory/name.key` and `directory/name.key_secret` (0600); their paths.

    Refuses to overwrite a key pair: a key others allow would be lost.
    """
    public, secret = (os.path.join(directory, f"{name}{ext}") for ext in (".key", ".key_secret"))
    if os.path.exists(public) or os.path.exists(secret):
        raise FileExistsError(f"a key named {name!r} already exists in {directory}; choose another name")
    os.makedirs(directory, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return public, secret


def _load(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public_key, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the CURVE key file {path}: {exc}") from None
    if secret and secret_key is None:
        raise ValueError(f"{path} holds no secret key: give the .key_secret file (from `qrt keys generate`)")
    return public_key, secret_key


@dataclass(frozen=True, slots=True)
class PeerKeys:
    """A client's or worker's keys: its own pair, and the coordinator's public key."""

    public: bytes
    secret: bytes
    server: bytes
    secret_file: str  # kept to open more connections alike (`qrt status` asks each node)
    server_file: str

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make `sock` a CURVE client of the coordinator (before it connects)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server


def peer_keys(secret_key_file: str | None = None, server_key_file: str | None = None) -> PeerKeys | None:
    """The keys given, else those named by $QRT_CURVE_SECRET_KEY and $QRT_CURVE_SERVER_KEY; None
    when neither is set (no CURVE: a coordinator on loopback without keys). ValueError when one is
    set without the other, or a file cannot be read."""
    secret_key_file = secret_key_file or os.environ.get(ENV_SECRET_KEY) or None
    server_key_file = server_key_file or os.environ.get(ENV_SERVER_KEY) or None
    if secret_key_file is None and server_key_file is None:
        return None
    if secret_key_file is None or server_key_file is None:
        raise ValueError("CURVE needs both keys: this peer's secret key (curve_secret_key, --curve-secret-key or "
                         f"${ENV_SECRET_KEY}) and the coordinator's public key (curve_server_key, "
                         f"--curve-server-key or ${ENV_SERVER_KEY})")
    public, secret = _load(secret_key_file, secret=True)
    server, _ = _load(server_key_file, secret=False)
    assert secret is not None
    return PeerKeys(public, secret, server, secret_key_file, server_key_file)


@dataclass(slots=True)
class ServerKeys:
    """The coordinator's key pair and the public keys allowed in each role (Z85 text -> roles)."""

    public: bytes
    secret: bytes
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    secret_file: str = ""  # where they were read: a node uses its own pair as a client of its peers

    def roles_of(self, user_id: str | None) -> frozenset[str]:
        return self.roles.get(user_id or "", frozenset())


def _allowlist(directory: str, option: str) -> list[str]:
    if not os.path.isdir(directory):
        raise ValueError(f"{option} {directory}: not a directory of public .key files")
    return [key.decode("ascii") for key in zmq.auth.load_certificates(directory)]


def server_keys(secret_key_file: str | None, clients_dir: str | None, workers_dir: str | None) -> ServerKeys | None:
    """The coordinator's CURVE configuration, None without a secret key; ValueError naming what is wrong."""
    if secret_key_file is None:
        if clients_dir or workers_dir:
            raise ValueError("--curve-clients and --curve-workers need --curve-secret-key (the coordinator's "
                             ".key_secret)")
        return None
    if not clients_dir and not workers_dir:
        raise ValueError("--curve-secret-key needs --curve-clients and/or --curve-workers (directories of the "
                         "public .key files allowed in each role): else no one may connect")
    public, secret = _load(secret_key_file, secret=True)
    assert secret is not None
    keys = ServerKeys(public, secret, secret_file=secret_key_file)
    # The nodes' own key is a client of every node: a node copies the task history it missed from
    # a peer (history/writer.py). Whoever holds it runs the cluster anyway.
    keys.roles[public.decode("ascii")] = frozenset({CLIENT})
    for directory, option, role in ((clients_dir, "--curve-clients", CLIENT), (workers_dir, "--curve-workers", WORKER)):
        if directory:
            for key in _allowlist(directory, option):
                keys.roles[key] = keys.roles.get(key, frozenset()) | {role}
    if len(keys.roles) == 1:  # its own key alone
        log.warning("no public .key file in --curve-clients or --curve-workers: every peer will be refused")
    return keys


def listen_host(url: str) -> str:
    """The host of a tcp://HOST:PORT URL."""
    return url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def is_loopback(url: str) -> bool:
    # replication.local_only's rule, for a URL; not imported from there: clients would load pysyncobj.
    host = listen_host(url)
    return host in ("localhost", "::1") or host.startswith("127.")


def check_listen(url: str, keys: ServerKeys | None) -> None:
    """CURVE is required beyond loopback (the rule the Raft password has); ValueError otherwise."""
    if keys is None and not is_loopback(url):
        raise ValueError(f"{url} is not on loopback: the client/worker port needs CURVE keys there "
                         "(--curve-secret-key with --curve-clients/--curve-workers; see `qrt keys generate`)")


class _Allowlist:
    """pyzmq's credentials provider: a key is let in when it has a role."""

    def __init__(self, keys: ServerKeys) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key.decode("ascii") in self._keys.roles
        if not allowed:
            log.warning("refused a connection with an unknown CURVE key %s", key.decode("ascii"))
        return allowed


def serve_curve(ctx: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes], keys: ServerKeys) -> ThreadAuthenticator:
    """Make `sock` a CURVE server whose peers pyzmq's ZAP handler checks; the started authenticator
    (stop it before the context is terminated).

    A thread, not `AsyncioAuthenticator` on the coordinator's loop: there a handshake would wait
    behind a pass of up to 5,000 frames (transport.MAX_FRAMES_PER_PASS); its own thread answers at
    once, and needs no asyncio-aware socket in the router's plain context.
    """
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("qrt.curve.zap"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, _Allowlist(keys))
    sock.curve_server = True
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.zap_domain = ZAP_DOMAIN.encode()
    return auth
