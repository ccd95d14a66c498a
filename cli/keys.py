"""`qrt keys`: CURVE key pairs for the client/worker port (docs/protocol.md §1.1)."""

from __future__ import annotations

import click

from qrt import curve


@click.group(cls=click.Group)
def keys() -> None:
    """CURVE key pairs: one for the coordinator, one per client or worker (or per fleet)."""


@keys.command(cls=click.Command)
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
def generate(directory: str, name: str) -> None:
    """Write DIRECTORY/NAME.key (public: give it to the coordinator's --curve-clients or --curve-workers
    directory, or, for the coordinator's own, to every client and worker as --curve-server-key) and
    DIRECTORY/NAME.key_secret (secret, mode 0600: --curve-secret-key of its owner only)."""
    if not name or "/" in name or name.startswith("."):
        raise click.BadParameter("a plain file name, such as 'coordinator' or 'worker-eu1'", param_hint="NAME")
    try:
        public, secret = curve.generate(directory, name)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"public key {public}\nsecret key {secret}")
