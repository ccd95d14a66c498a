"""What every `qrt` command that talks to the cluster shares: its `--coordinator` option, its
client (`pass_client`), qrt's errors turned into click's in one place, and argument helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from qrt import defaults
from qrt.client import Client
from qrt.errors import InvalidArgument, QrtError, RemoteError
from qrt.logs import FORMATS

F = TypeVar("F", bound=Callable[..., Any])


def coordinator_option(fn: F) -> F:
    return click.option(
        "--coordinator", "coordinators", multiple=True, metavar="URL",
        help=f"Coordinator endpoint, repeatable; default ${defaults.ENV_COORDINATORS} (comma-separated) "
             f"or {defaults.COORDINATOR_URL}. Any node will do: followers redirect to the leader.",
    )(fn)


def curve_options(fn: F) -> F:
    """--curve-secret-key and --curve-server-key: a client's or worker's CURVE keys (curve.py)."""
    fn = click.option("--curve-server-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                      help="The coordinator's public CURVE .key; default $QRT_CURVE_SERVER_KEY.")(fn)
    return click.option("--curve-secret-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                        help="This peer's CURVE .key_secret; default $QRT_CURVE_SECRET_KEY.")(fn)


class ClusterCommand(click.Command):
    """A command that talks to the cluster.

    It takes --coordinator and the CURVE keys (listed after its own options); while it runs, its context holds a
    `Client` for those coordinators, which `pass_client` hands to it and which is closed when the
    command ends, however it ends; and qrt's errors become click's here, in this one place, so that
    no command catches them. The client is made when the command is invoked, not while its options
    are parsed: an option that fails to parse must not leave a client (and its thread) open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        coordinator_option(self)  # click's option decorators append to a Command's params
        curve_options(self)

    def invoke(self, ctx: click.Context) -> Any:
        coordinators = ctx.params.pop("coordinators")
        keys = {name: ctx.params.pop(name) for name in ("curve_secret_key", "curve_server_key")}
        if not isinstance(ctx.obj, Client):  # else the caller's own (`main(obj=client)`), which it closes
            try:
                ctx.obj = ctx.with_resource(Client(list(coordinators) or None, **keys))
            except ValueError as exc:  # an address that is not a tcp:// URL, a key that cannot be read
                raise click.UsageError(str(exc), ctx) from None
        try:
            return super().invoke(ctx)
        except InvalidArgument as exc:  # the library refused an argument before sending anything
            raise click.UsageError(str(exc), ctx) from None
        except RemoteError as exc:  # the coordinator's own words, without its error code
            raise click.ClickException(exc.message) from None
        except QrtError as exc:
            raise click.ClickException(str(exc)) from None


class ClusterGroup(click.Group):
    """A group whose commands are `ClusterCommand`s and whose subgroups are `ClusterGroup`s;
    a command that needs no client says `cls=click.Command`."""

    command_class = ClusterCommand
    group_class = type


pass_client = click.make_pass_decorator(Client)
"""Give a `ClusterCommand`'s callback its client as first argument."""


def json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(value, kind):
        raise click.BadParameter(f"must be a JSON {'array' if kind is list else 'object'}", param_hint=what)
    return value


def log_options(fn: F) -> F:
    """--log-level and --log-format (logs.py)."""
    fn = click.option("--log-format", default="text", show_default=True, type=click.Choice(FORMATS),
                      help="json: one JSON object per line, a task's id, actor and attempt as fields.")(fn)
    return click.option("--log-level", default="info", show_default=True,
                        type=click.Choice(["debug", "info", "warning", "error"]))(fn)
