"""The `qrt` command: thin click commands over the library (parse, call, print)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from qrt import defaults
from qrt.client import Client, resolve_coordinators
from qrt.errors import InvalidArgument, QrtError, RemoteError, TaskCancelled, TaskFailed

F = TypeVar("F", bound=Callable[..., Any])


def coordinator_option(fn: F) -> F:
    return click.option(
        "--coordinator", "coordinators", multiple=True, metavar="URL",
        help=f"Coordinator endpoint, repeatable; default ${defaults.ENV_COORDINATORS} (comma-separated) "
             f"or {defaults.COORDINATOR_URL}. Any node will do: followers redirect to the leader.",
    )(fn)


class ClusterCommand(click.Command):
    """A command that talks to the cluster.

    It takes --coordinator (listed after its own options); while it runs, its context holds a
    `Client` for those coordinators, which `pass_client` hands to it and which is closed when the
    command ends, however it ends; and qrt's errors become click's here, in this one place, so that
    no command catches them. The client is made when the command is invoked, not while its options
    are parsed: an option that fails to parse must not leave a client (and its thread) open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        coordinator_option(self)  # click's option decorators append to a Command's params

    def invoke(self, ctx: click.Context) -> Any:
        coordinators = ctx.params.pop("coordinators")
        if not isinstance(ctx.obj, Client):  # else the caller's own (`main(obj=client)`), which it closes
            try:
                ctx.obj = ctx.with_resource(Client(list(coordinators) or None))
            except ValueError as exc:  # an address that is not a tcp:// URL
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


def _json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(value, kind):
        raise click.BadParameter(f"must be a JSON {'array' if kind is list else 'object'}", param_hint=what)
    return value


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


@click.group(cls=ClusterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qrt")
def main() -> None:
    """qrt: a task queue with a Raft-replicated coordinator and global flow control."""


@main.command(cls=click.Command)
@click.option("--listen", default=defaults.COORDINATOR_URL, show_default=True, metavar="URL",
              help="Endpoint for clients and workers.")
@click.option("--data-dir", default=defaults.DATA_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Raft journal and snapshots.")
@click.option("--raft", default=defaults.RAFT_ADDRESS, show_default=True, metavar="HOST:PORT",
              help="This node's Raft address.")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
              help="Another node's Raft address; once per peer (a cluster of 3 or 5 lists 2 or 4).")
@click.option("--raft-password-file", type=click.File("r"),
              help="File holding the Raft password (encrypts Raft traffic); required off loopback.")
@click.option("--max-frame-bytes", default=defaults.MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
              help="Largest frame accepted from a client or worker.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def coordinator(listen: str, data_dir: str, raft: str, peers: tuple[str, ...], raft_password_file: Any,
                max_frame_bytes: int, log_level: str) -> None:
    """Run one coordinator node (one node alone when no --peer is given)."""
    from qrt.coordinator.node import run_coordinator
    from qrt.replication import check_cluster

    for address in (raft, *peers):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="--raft/--peer")
    password = raft_password_file.read().strip() if raft_password_file else None
    try:
        check_cluster(raft, list(peers), password)
    except ValueError as exc:
        raise click.UsageError(f"{exc} (see --peer and --raft-password-file)") from None
    if not listen.startswith("tcp://"):
        raise click.BadParameter("must be a tcp:// URL", param_hint="--listen")
    _setup_logging(log_level)
    try:
        run_coordinator(listen, data_dir, raft, list(peers), password, max_frame_bytes)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start the coordinator: {exc}") from None


@main.command(cls=click.Command)
@click.argument("modules", nargs=-1, required=True)
@coordinator_option
@click.option("--concurrency", default=defaults.WORKER_CONCURRENCY, show_default=True, type=click.IntRange(1),
              help="Slots: tasks run at once.")
@click.option("--drain-timeout", default=defaults.DRAIN_TIMEOUT, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM, seconds to finish running tasks before giving them back.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker(modules: tuple[str, ...], coordinators: tuple[str, ...], concurrency: int, drain_timeout: float,
           log_level: str) -> None:
    """Import MODULES and run their @qrt.actor handlers until SIGTERM/SIGINT, then drain."""
    from qrt.worker import import_actors, run_worker

    try:
        urls = resolve_coordinators(list(coordinators) or None)
        import_actors(list(modules))
    except (ImportError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _setup_logging(log_level)
    try:
        run_worker(list(modules), urls, concurrency, drain_timeout)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None


def _print_result(client: Client, task_id: str, timeout: float | None) -> None:
    try:
        value = client.task(task_id).result(timeout=timeout)
    except TaskFailed as exc:
        click.echo(json.dumps({"id": task_id, "state": "failed", "error_type": exc.error_type,
                               "message": exc.message}), err=True)
        if exc.traceback:
            click.echo(exc.traceback, err=True)
        sys.exit(1)
    except TaskCancelled:
        click.echo(json.dumps({"id": task_id, "state": "cancelled"}), err=True)
        sys.exit(1)
    click.echo(json.dumps(value))


@main.command()
@click.argument("actor")
@click.argument("json_args", required=False)
@click.option("--kwargs", "json_kwargs", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--delay", type=click.FloatRange(0), help="Seconds before the task is due.")
@click.option("--wait", is_flag=True, help="Wait and print the JSON result (exit 1 on failure).")
@click.option("--timeout", type=click.FloatRange(0), help="With --wait: seconds to wait (an error without --wait).")
@pass_client
def submit(client: Client, actor: str, json_args: str | None, json_kwargs: str | None, delay: float | None,
           wait: bool, timeout: float | None) -> None:
    """Submit a task to ACTOR with JSON_ARGS (a JSON array); print its id."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout applies to --wait; add --wait, or use `qrt wait ID --timeout S`")
    args = _json_arg(json_args, "JSON_ARGS", list)
    kwargs = _json_arg(json_kwargs, "--kwargs", dict)
    handle = client.submit_with(actor, args, kwargs, delay=delay)
    if not wait:
        click.echo(handle.id)
        return
    _print_result(client, handle.id, timeout)


@main.command("wait")
@click.argument("task_id")
@click.option("--timeout", type=click.FloatRange(0), help="Seconds to wait.")
@pass_client
def wait_cmd(client: Client, task_id: str, timeout: float | None) -> None:
    """Wait for a task and print its JSON result (exit 1 on failure)."""
    _print_result(client, task_id, timeout)


@main.command()
@click.argument("task_id")
@pass_client
def cancel(client: Client, task_id: str) -> None:
    """Cancel a task: a queued one never runs, a running async one is cancelled."""
    if not client.cancel(task_id):
        raise click.ClickException(f"task {task_id} is not queued, delayed or running: nothing to cancel")
    click.echo(f"cancelled {task_id}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@pass_client
def status(client: Client, as_json: bool) -> None:
    """Leader, term, nodes, connected workers, queue depth per actor."""
    st = client.status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"leader {st['leader']}  term {st['term']}  commit index {st['commit_index']}  "
               f"dead letters {st['dead_letters']}  clock skew {st.get('clock_skew', 0.0):+.3f} s")
    for node in st["nodes"]:
        state = "leader" if node["leader"] else ("follower" if node["reachable"] else "UNREACHABLE from the leader")
        click.echo(f"  node {node['url']} (raft {node['raft']})  {state}")
    click.echo(f"workers: {len(st['workers'])}")
    for w in st["workers"]:
        state = "draining" if w["draining"] else ("connected" if w["connected"] else "reconnecting")
        click.echo(f"  {w['id']}  {state}  free {w['free']}/{w['concurrency']}  running {w['running']}  "
                   f"actors {', '.join(w['actors'])}")
    click.echo("queues:")
    for actor, row in sorted(st["queues"].items()):
        note = "" if row["served"] else "  (no connected worker serves it)"
        click.echo(f"  {actor}  queued {row['queued']}  delayed {row['delayed']}  running {row['running']}{note}")


@main.group()
def dlq() -> None:
    """Dead letters: tasks that failed for good."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(0))
@pass_client
def dlq_list(client: Client, as_json: bool, limit: int) -> None:
    """The newest dead letters first."""
    reply = client.dlq_list(limit)
    if as_json:
        click.echo(json.dumps(reply["entries"], indent=2))
        return
    click.echo(f"{reply['total']} dead letters")
    for e in reply["entries"]:
        err = e.get("error", {})
        click.echo(f"  {e['id']}  {e['actor']}  attempt {e['attempt']}  {err.get('type')}: {err.get('message')}")


@dlq.command("show")
@click.argument("task_id")
@pass_client
def dlq_show(client: Client, task_id: str) -> None:
    """One dead letter in full, with its traceback."""
    click.echo(json.dumps(client.dlq_show(task_id), indent=2))


def _ids_or_all(task_id: str | None, all_: bool) -> list[str] | None:
    if bool(task_id) == all_:
        raise click.UsageError("give either a task ID or --all")
    return None if all_ else [task_id or ""]


def _report_dlq_change(done: str, n: int, task_id: str | None) -> None:
    if n == 0 and task_id:
        raise click.ClickException(f"no dead letter with id {task_id!r}")
    click.echo(f"{done} {n}")


@dlq.command("replay")
@click.argument("task_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@pass_client
def dlq_replay(client: Client, task_id: str | None, all_: bool) -> None:
    """Put a dead letter (or all) back in its queue, with fresh retries."""
    _report_dlq_change("replayed", client.dlq_replay(_ids_or_all(task_id, all_)), task_id)


@dlq.command("purge")
@click.argument("task_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@pass_client
def dlq_purge(client: Client, task_id: str | None, all_: bool) -> None:
    """Delete a dead letter (or all)."""
    _report_dlq_change("purged", client.dlq_purge(_ids_or_all(task_id, all_)), task_id)


@main.group()
def limits() -> None:
    """Global rate and concurrency limits: show, override, reset (in force at once, cluster-wide)."""


@limits.command("show")
@click.option("--json", "as_json", is_flag=True)
@pass_client
def limits_show(client: Client, as_json: bool) -> None:
    """The limits in force per actor, and what operators overrode."""
    view = client.limits()
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    for actor, row in view.items():
        rates = ", ".join(f"{n}/{period:g}s" + (f" per {key}" if key else "") for n, period, key in row["rate_limits"])
        caps = ", ".join(f"{n}" + (f" per {key}" if key else "") for n, key in row["concurrency"])
        notes = ("  PAUSED" if row["paused"] else "") + ("  (operator override)" if row["override"] else "")
        click.echo(f"{actor}  rate {rates or '-'}  concurrency {caps or '-'}  running {row['running']}{notes}")
        for value, (n, period) in row["override"].get("key_rates", {}).items():
            click.echo(f"    key {value!r}: {n}/{period:g}s")


@limits.command("set")
@click.argument("actor")
@click.option("--rate", metavar="N/PERIOD", help="Actor-wide rate such as 10/s, 100/m; with --key, that value's rate.")
@click.option("--key", "key_value", metavar="VALUE", help="A value of the actor's keyed rate limit (a string).")
@click.option("--concurrency", type=click.IntRange(1), help="Actor-wide limit of tasks running at once.")
@click.option("--weight", type=click.IntRange(1), help="With --key: that value's tasks per round-robin turn.")
@pass_client
def limits_set(client: Client, actor: str, rate: str | None, key_value: str | None, concurrency: int | None,
               weight: int | None) -> None:
    """Override ACTOR's limits until `qrt limits reset ACTOR`."""
    # Which combinations make sense, and what a rate looks like, is the library's to say (InvalidArgument).
    client.set_limits(actor, rate=rate, key=key_value, concurrency=concurrency, weight=weight)
    click.echo(f"limits of {actor} set")


@limits.command("reset")
@click.argument("actor")
@pass_client
def limits_reset(client: Client, actor: str) -> None:
    """Drop the overrides of ACTOR: what its workers registered holds again."""
    changed = client.reset_limits(actor)
    click.echo(f"limits of {actor} reset" if changed else f"{actor} had no override")


@main.group()
def queue() -> None:
    """An actor's queue: pause, resume, purge."""


@queue.command("pause")
@click.argument("actor")
@pass_client
def queue_pause(client: Client, actor: str) -> None:
    """Start none of ACTOR's tasks (they stay queued) until resumed."""
    client.pause(actor)
    click.echo(f"{actor} paused")


@queue.command("resume")
@click.argument("actor")
@pass_client
def queue_resume(client: Client, actor: str) -> None:
    """Start ACTOR's tasks again."""
    client.resume(actor)
    click.echo(f"{actor} resumed")


@queue.command("purge")
@click.argument("actor")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_client
def queue_purge(client: Client, actor: str, yes: bool) -> None:
    """Cancel every queued and delayed task of ACTOR (running ones finish)."""
    row = client.status()["queues"].get(actor, {"queued": 0, "delayed": 0})
    waiting = row["queued"] + row["delayed"]
    if not yes:
        click.confirm(f"{actor} has {waiting} queued or delayed tasks; cancel them all?", abort=True)
    n = client.purge(actor)
    click.echo(f"purged {n} tasks of {actor}")


@main.group()
def cron() -> None:
    """Cron entries, fired by the cluster once per scheduled time (even across failovers)."""


def _when(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


@cron.command("add")
@click.argument("name")
@click.argument("actor")
@click.argument("expr")
@click.argument("json_args", required=False)
@click.option("--kwargs", "json_kwargs", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of EXPR, e.g. Europe/Paris.")
@pass_client
def cron_add(client: Client, name: str, actor: str, expr: str, json_args: str | None, json_kwargs: str | None,
             tz: str) -> None:
    """Fire ACTOR with JSON_ARGS at each time of EXPR ("*/5 * * * *", or 6 fields, seconds first)."""
    args = _json_arg(json_args, "JSON_ARGS", list)
    kwargs = _json_arg(json_kwargs, "--kwargs", dict)
    # A bad EXPR or --tz is the library's to say (InvalidArgument), before anything is sent.
    client.cron_add(name, actor, expr, args, kwargs, tz)
    entry = next(e for e in client.cron_list() if e["name"] == name)
    click.echo(f"cron {name}: {actor} at {expr!r} ({tz}); next fire {_when(entry['next_fire'])}")


@cron.command("remove")
@click.argument("name")
@pass_client
def cron_remove(client: Client, name: str) -> None:
    """Remove the cron entry NAME."""
    if not client.cron_remove(name):
        raise click.ClickException(f"no cron entry named {name!r}")
    click.echo(f"cron {name} removed")


@cron.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_client
def cron_list(client: Client, as_json: bool) -> None:
    """Every entry: schedule, next and last fire, missed fires."""
    entries = client.cron_list()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        click.echo(f"{e['name']}  {e['actor']}  {e['expr']!r} ({e['tz']}, {e['source']})  "
                   f"next {_when(e['next_fire'])}  last {_when(e['last_fire'])}  missed {e['missed']}")
