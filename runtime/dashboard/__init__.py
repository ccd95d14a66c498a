"""`qrt dashboard`: a web dashboard over the cluster's history and operator commands.

Its own process, a client of the cluster like the CLI: the routes and pages (app.py), what they
read from the cluster (reads.py) and how they shape it (shape.py); sign-in, CSRF and the Host
check (auth.py, and __init__'s `run_dashboard`); paced bulk actions on dead letters (jobs.py);
server timing and server-sent events (web.py). README, "Dashboard".
"""

from __future__ import annotations

import logging

import uvicorn
import uvloop

from ..client import AsyncClient
from .app import Settings, create_app
from .auth import Auth, is_loopback

__all__ = ["Settings", "create_app", "run_dashboard", "split_listen"]

log = logging.getLogger("qrt.dashboard")

DEFAULT_LISTEN = "127.0.0.1:7780"
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1", "[::1]"]


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets); ValueError when it is not one."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {listen!r} is not HOST:PORT (such as 127.0.0.1:7780)")
    return host.strip("[]"), int(port)


def check_auth(host: str, auth: Auth) -> None:
    """Beyond loopback, a password or token is required (ValueError otherwise)."""
    if not is_loopback(host) and not auth.required:
        raise ValueError(f"the dashboard listens on {host}, beyond loopback: give --password-file or --token-file "
                         "(anyone who reaches the port could act on the cluster otherwise)")


def run_dashboard(listen: str, coordinators: list[str], settings: Settings, curve_secret_key: str | None = None,
                  curve_server_key: str | None = None) -> None:
    """Serve the dashboard until SIGTERM or SIGINT."""
    host, port = split_listen(listen)
    auth = settings.auth or Auth()
    check_auth(host, auth)
    if settings.allowed_hosts or not auth.required:
        # Without sign-in anyone on this machine may act: a page of another site whose name points
        # at 127.0.0.1 (DNS rebinding) must not. So only these Host names are served.
        settings.allowed_hosts = [*LOOPBACK_NAMES, host, *settings.allowed_hosts]
    uvloop.run(_serve(host, port, coordinators, settings, curve_secret_key, curve_server_key))


async def _serve(host: str, port: int, coordinators: list[str], settings: Settings, curve_secret_key: str | None,
                 curve_server_key: str | None) -> None:
    client = AsyncClient(coordinators, curve_secret_key=curve_secret_key, curve_server_key=curve_server_key)
    app = create_app(client, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=2, proxy_headers=False)
    log.info("dashboard on http://%s:%d/ for %s%s%s", host if ":" not in host else f"[{host}]", port,
             ",".join(coordinators), " (read-only)" if settings.read_only else "",
             " (sign-in required)" if settings.auth and settings.auth.required else "")
    try:
        await uvicorn.Server(config).serve()
    finally:
        await client.close()
