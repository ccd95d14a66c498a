"""Who may see the dashboard and act through it.

On loopback (the default, 127.0.0.1) anyone who reaches the port may; on any other address the
dashboard refuses to start without a password file or a token file. With one, a browser signs in
(a name, for the log, and the password or token) and gets a session cookie (signed, HttpOnly,
SameSite=Strict; its key is derived from the secret, so a restart keeps sessions and a changed
password ends them); a script sends `Authorization: Bearer TOKEN`. Every action (a POST) must
carry the session's CSRF token, in the form (`csrf`) or the `X-CSRF-Token` header; a bearer
request carries no cookie, so it needs none.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import deque
from dataclasses import dataclass

from starlette.requests import Request

SESSION_COOKIE = "qrt_dashboard"
SESSION_DAYS = 7
KDF_ITERATIONS = 200_000  # ~0.1 s, once at start
FAILURES_ALLOWED = 5  # failed sign-ins from one address per FAILURE_WINDOW before it must wait
FAILURE_WINDOW = 60.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_secret(path: str | None, what: str) -> str | None:
    """The first line of a password or token file; ValueError when it is empty."""
    if path is None:
        return None
    with open(path) as f:
        secret = f.readline().strip()
    if len(secret) < 8:
        raise ValueError(f"the {what} file {path} must hold a {what} of at least 8 characters")
    return secret


@dataclass
class Auth:
    password: str | None = None
    token: str | None = None

    @property
    def required(self) -> bool:
        return self.password is not None or self.token is not None

    def session_key(self) -> str:
        """Signs session cookies: derived from the secrets (a restart keeps sessions; a new
        password ends them) by a slow KDF, so that a captured cookie is no quick way to guess the
        password offline; random without any (nothing to sign in with then)."""
        if not self.required:
            return secrets.token_hex(32)
        material = f"{self.password or ''}\0{self.token or ''}".encode()
        return hashlib.pbkdf2_hmac("sha256", material, b"qrt-dashboard-session", KDF_ITERATIONS).hex()

    def accepts(self, secret: str) -> bool:
        """Whether `secret` is the password or the token (compared in constant time)."""
        given = secret.encode()
        return any(s is not None and hmac.compare_digest(given, s.encode()) for s in (self.password, self.token))

    def bearer(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and \
            hmac.compare_digest(value.strip().encode(), self.token.encode())

    def who(self, request: Request) -> str | None:
        """Who makes this request: the name signed in, "token", "local" (no sign-in needed), or
        None when it must sign in first."""
        if self.bearer(request):
            return "token"
        name = request.session.get("who")
        if name:
            return str(name)
        return None if self.required else "local"


class SignInThrottle:
    """At most FAILURES_ALLOWED failed sign-ins per address in FAILURE_WINDOW seconds; then 429."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        recent = self._failures.setdefault(address, deque())
        while recent and recent[0] < time.monotonic() - FAILURE_WINDOW:
            recent.popleft()
        if not recent:
            del self._failures[address]  # (memory follows addresses failing now, not every one ever)
        return recent

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= FAILURES_ALLOWED

    def failed(self, address: str) -> None:
        self._failures.setdefault(address, deque()).append(time.monotonic())


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def csrf_ok(request: Request, auth: Auth) -> bool:
    if auth.bearer(request):
        return True  # no cookie rode along: nothing to forge
    expected = request.session.get("csrf")
    if not expected:
        return False
    given = request.headers.get("x-csrf-token")
    if given is None:
        given = str((await request.form()).get("csrf", ""))
    return hmac.compare_digest(given.encode(), str(expected).encode())
