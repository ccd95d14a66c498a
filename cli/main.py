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
from qrt.errors import QrtError, RemoteError, TaskCancelled, TaskFailed

F = TypeVar("F", bound=Callable[..., Any])


def coordinator_option(fn: F) -> F:
    return click.option(
        "--coordinator", "coordinators", multiple=True, metavar="URL",
        help=f"Coordinator endpoint, repeatable; default ${defaults.ENV_COORDINATORS} (comma-separated) "
             f"or {defaults.COORDINATOR_URL}. Any node will do: followers redirect to the leader.",
    )(fn)


def _client(coordinators: tuple[str, ...]) -> Client:
    try:
        return Client(list(coordinators) or None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


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


def _run(fn: Callable[[], Any]) -> Any:
    """Run a library call; turn qrt's errors into a message and exit 1, without a traceback."""
    try:
        return fn()
    except RemoteError as exc:  # the coordinator's own words, without its error code
        raise click.ClickException(exc.message) from None
    except QrtError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qrt")
def main() -> None:
    """qrt: a task queue with a Raft-replicated coordinator and global flow control."""


@main.command()
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
    from qrt.coordinator import run_coordinator
    from qrt.replication import local_only

    for address in (raft, *peers):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="--raft/--peer")
    if (len(peers) + 1) % 2 == 0:
        raise click.UsageError(f"{len(peers) + 1} nodes: a Raft cluster needs an odd number (1, 3 or 5); "
                               "an even one tolerates no more failures than one node fewer")
    password = raft_password_file.read().strip() if raft_password_file else None
    if raft_password_file and not password:
        raise click.UsageError("the Raft password file is empty")
    if password is None and not all(local_only(a) for a in (raft, *peers)):
        raise click.UsageError("--raft-password-file is required when any Raft address is not loopback")
    if not listen.startswith("tcp://"):
        raise click.BadParameter("must be a tcp:// URL", param_hint="--listen")
    _setup_logging(log_level)
    try:
        run_coordinator(listen, data_dir, raft, list(peers), password, max_frame_bytes)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start the coordinator: {exc}") from None


@main.command()
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
    except QrtError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(value))


@main.command()
@click.argument("actor")
@click.argument("json_args", required=False)
@click.option("--kwargs", "json_kwargs", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--delay", type=click.FloatRange(0), help="Seconds before the task is due.")
@click.option("--wait", is_flag=True, help="Wait and print the JSON result (exit 1 on failure).")
@click.option("--timeout", type=click.FloatRange(0), help="With --wait: seconds to wait (an error without --wait).")
@coordinator_option
def submit(actor: str, json_args: str | None, json_kwargs: str | None, delay: float | None, wait: bool,
           timeout: float | None, coordinators: tuple[str, ...]) -> None:
    """Submit a task to ACTOR with JSON_ARGS (a JSON array); print its id."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout applies to --wait; add --wait, or use `qrt wait ID --timeout S`")
    args = _json_arg(json_args, "JSON_ARGS", list)
    kwargs = _json_arg(json_kwargs, "--kwargs", dict)
    with _client(coordinators) as client:
        handle = _run(lambda: client.submit_with(actor, args, kwargs, delay=delay))
        if not wait:
            click.echo(handle.id)
            return
        _print_result(client, handle.id, timeout)


@main.command("wait")
@click.argument("task_id")
@click.option("--timeout", type=click.FloatRange(0), help="Seconds to wait.")
@coordinator_option
def wait_cmd(task_id: str, timeout: float | None, coordinators: tuple[str, ...]) -> None:
    """Wait for a task and print its JSON result (exit 1 on failure)."""
    with _client(coordinators) as client:
        _print_result(client, task_id, timeout)


@main.command()
@click.argument("task_id")
@coordinator_option
def cancel(task_id: str, coordinators: tuple[str, ...]) -> None:
    """Cancel a task: a queued one never runs, a running async one is cancelled."""
    with _client(coordinators) as client:
        done = _run(lambda: client.cancel(task_id))
    if not done:
        raise click.ClickException(f"task {task_id} is not queued, delayed or running: nothing to cancel")
    click.echo(f"cancelled {task_id}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@coordinator_option
def status(as_json: bool, coordinators: tuple[str, ...]) -> None:
    """Leader, term, nodes, connected workers, queue depth per actor."""
    with _client(coordinators) as client:
        st = _run(client.status)
    st.pop("rid", None)
    st.pop("t", None)
    st.pop("v", None)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"leader {st['leader']}  term {st['term']}  commit index {st['commit_index']}  "
               f"dead letters {st['dead_letters']}")
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
@coordinator_option
def dlq_list(as_json: bool, limit: int, coordinators: tuple[str, ...]) -> None:
    """The newest dead letters first."""
    with _client(coordinators) as client:
        reply = _run(lambda: client.dlq_list(limit))
    if as_json:
        click.echo(json.dumps(reply["entries"], indent=2))
        return
    click.echo(f"{reply['total']} dead letters")
    for e in reply["entries"]:
        err = e.get("error", {})
        click.echo(f"  {e['id']}  {e['actor']}  attempt {e['attempt']}  {err.get('type')}: {err.get('message')}")


@dlq.command("show")
@click.argument("task_id")
@coordinator_option
def dlq_show(task_id: str, coordinators: tuple[str, ...]) -> None:
    """One dead letter in full, with its traceback."""
    with _client(coordinators) as client:
        click.echo(json.dumps(_run(lambda: client.dlq_show(task_id)), indent=2))


def _ids_or_all(task_id: str | None, all_: bool) -> list[str] | None:
    if bool(task_id) == all_:
        raise click.UsageError("give either a task ID or --all")
    return None if all_ else [task_id or ""]


@dlq.command("replay")
@click.argument("task_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@coordinator_option
def dlq_replay(task_id: str | None, all_: bool, coordinators: tuple[str, ...]) -> None:
    """Put a dead letter (or all) back in its queue, with fresh retries."""
    ids = _ids_or_all(task_id, all_)
    with _client(coordinators) as client:
        n = _run(lambda: client.dlq_replay(ids))
    if n == 0 and task_id:
        raise click.ClickException(f"no dead letter with id {task_id!r}")
    click.echo(f"replayed {n}")


@dlq.command("purge")
@click.argument("task_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@coordinator_option
def dlq_purge(task_id: str | None, all_: bool, coordinators: tuple[str, ...]) -> None:
    """Delete a dead letter (or all)."""
    ids = _ids_or_all(task_id, all_)
    with _client(coordinators) as client:
        n = _run(lambda: client.dlq_purge(ids))
    if n == 0 and task_id:
        raise click.ClickException(f"no dead letter with id {task_id!r}")
    click.echo(f"purged {n}")


@main.group()
def limits() -> None:
    """Global rate and concurrency limits: show, override, reset (in force at once, cluster-wide)."""


@limits.command("show")
@click.option("--json", "as_json", is_flag=True)
@coordinator_option
def limits_show(as_json: bool, coordinators: tuple[str, ...]) -> None:
    """The limits in force per actor, and what operators overrode."""
    with _client(coordinators) as client:
        view = _run(client.limits)
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
@coordinator_option
def limits_set(actor: str, rate: str | None, key_value: str | None, concurrency: int | None, weight: int | None,
               coordinators: tuple[str, ...]) -> None:
    """Override ACTOR's limits until `qrt limits reset ACTOR`."""
    from qrt.state.limits import parse_rate

    if rate is None and concurrency is None and weight is None:
        raise click.UsageError("give --rate, --concurrency or --key VALUE --weight N")
    if weight is not None and key_value is None:
        raise click.UsageError("--weight needs --key VALUE: it sets that value's tasks per round-robin turn")
    if key_value is not None and rate is None and weight is None:
        raise click.UsageError("--key goes with --rate (that value's rate) or --weight (its share of turns)")
    if rate is not None:
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate") from None
    with _client(coordinators) as client:
        _run(lambda: client.set_limits(actor, rate=rate, key=key_value, concurrency=concurrency, weight=weight))
    click.echo(f"limits of {actor} set")


@limits.command("reset")
@click.argument("actor")
@coordinator_option
def limits_reset(actor: str, coordinators: tuple[str, ...]) -> None:
    """Drop the overrides of ACTOR: what its workers registered holds again."""
    with _client(coordinators) as client:
        changed = _run(lambda: client.reset_limits(actor))
    click.echo(f"limits of {actor} reset" if changed else f"{actor} had no override")


@main.group()
def queue() -> None:
    """An actor's queue: pause, resume, purge."""


@queue.command("pause")
@click.argument("actor")
@coordinator_option
def queue_pause(actor: str, coordinators: tuple[str, ...]) -> None:
    """Start none of ACTOR's tasks (they stay queued) until resumed."""
    with _client(coordinators) as client:
        _run(lambda: client.pause(actor))
    click.echo(f"{actor} paused")


@queue.command("resume")
@click.argument("actor")
@coordinator_option
def queue_resume(actor: str, coordinators: tuple[str, ...]) -> None:
    """Start ACTOR's tasks again."""
    with _client(coordinators) as client:
        _run(lambda: client.resume(actor))
    click.echo(f"{actor} resumed")


@queue.command("purge")
@click.argument("actor")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@coordinator_option
def queue_purge(actor: str, yes: bool, coordinators: tuple[str, ...]) -> None:
    """Cancel every queued and delayed task of ACTOR (running ones finish)."""
    with _client(coordinators) as client:
        row = _run(client.status)["queues"].get(actor, {"queued": 0, "delayed": 0})
        waiting = row["queued"] + row["delayed"]
        if not yes:
            click.confirm(f"{actor} has {waiting} queued or delayed tasks; cancel them all?", abort=True)
        n = _run(lambda: client.purge(actor))
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
@coordinator_option
def cron_add(name: str, actor: str, expr: str, json_args: str | None, json_kwargs: str | None, tz: str,
             coordinators: tuple[str, ...]) -> None:
    """Fire ACTOR with JSON_ARGS at each time of EXPR ("*/5 * * * *", or 6 fields, seconds first)."""
    from qrt.state.cron import CronExpr

    try:
        CronExpr.parse(expr, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EXPR/--tz") from None
    args = _json_arg(json_args, "JSON_ARGS", list)
    kwargs = _json_arg(json_kwargs, "--kwargs", dict)
    with _client(coordinators) as client:
        _run(lambda: client.cron_add(name, actor, expr, args, kwargs, tz))
        entry = next(e for e in _run(client.cron_list) if e["name"] == name)
    click.echo(f"cron {name}: {actor} at {expr!r} ({tz}); next fire {_when(entry['next_fire'])}")


@cron.command("remove")
@click.argument("name")
@coordinator_option
def cron_remove(name: str, coordinators: tuple[str, ...]) -> None:
    """Remove the cron entry NAME."""
    with _client(coordinators) as client:
        if not _run(lambda: client.cron_remove(name)):
            raise click.ClickException(f"no cron entry named {name!r}")
    click.echo(f"cron {name} removed")


@cron.command("list")
@click.option("--json", "as_json", is_flag=True)
@coordinator_option
def cron_list(as_json: bool, coordinators: tuple[str, ...]) -> None:
    """Every entry: schedule, next and last fire, missed fires."""
    with _client(coordinators) as client:
        entries = _run(client.cron_list)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        click.echo(f"{e['name']}  {e['actor']}  {e['expr']!r} ({e['tz']}, {e['source']})  "
                   f"next {_when(e['next_fire'])}  last {_when(e['last_fire'])}  missed {e['missed']}")
