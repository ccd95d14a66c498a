"""`qrt dashboard`: the web dashboard (runtime/dashboard/)."""

from __future__ import annotations

import click

from qrt import logs
from qrt.client import resolve_coordinators

from .cluster import coordinator_option, curve_options, log_options


@click.command()
@click.option("--listen", default="127.0.0.1:7780", show_default=True, metavar="HOST:PORT",
              help="Where to serve it. Beyond loopback, --password-file or --token-file is required.")
@coordinator_option
@curve_options
@click.option("--read-only", is_flag=True, help="Show no action, and refuse any action posted.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="A password (first line, 8 characters or more) to sign in with.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="A token (first line) for `Authorization: Bearer TOKEN`, or to sign in with.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host name requests may carry besides loopback's and --listen's (a proxy's name); "
                   "repeatable. Without a password or token, any other is refused (DNS rebinding).")
@log_options
def dashboard(listen: str, coordinators: tuple[str, ...], curve_secret_key: str | None, curve_server_key: str | None,
              read_only: bool, password_file: str | None, token_file: str | None, log_level: str,
              log_format: str = "text", allowed_hosts: tuple[str, ...] = ()) -> None:
    """Serve the web dashboard: overview, tasks, dead letters, actors (a client of the cluster)."""
    from qrt.dashboard import Settings, run_dashboard
    from qrt.dashboard.auth import Auth, read_secret

    try:
        urls = resolve_coordinators(list(coordinators) or None)
        auth = Auth(read_secret(password_file, "password"), read_secret(token_file, "token"))
        settings = Settings(read_only=read_only, auth=auth, allowed_hosts=list(allowed_hosts))
        logs.setup(log_level, log_format)
        run_dashboard(listen, urls, settings, curve_secret_key, curve_server_key)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve the dashboard: {exc}") from None
