"""The `qrt` command: thin click commands over the library (parse, call, print)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from qrt import defaults, logs, tracing
from qrt.client import Client, resolve_coordinators
from qrt.errors import QrtError, TaskCancelled, TaskFailed

from .cluster import ClusterGroup, coordinator_option, curve_options, json_arg, log_options, pass_client
from .dashboard import dashboard
from .history import parse_duration, parse_size, stats, tasks
from .keys import keys
from .operators import alerts, cron, dlq, limits, queue


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
              help="File holding the Raft password, the same on every node (authenticates and encrypts "
                   "Raft traffic); required with --peer. Without it a lone node generates its own, "
                   "kept in --data-dir as raft-secret (0600).")
@click.option("--max-frame-bytes", default=defaults.MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
              help="Largest frame accepted from a client or worker.")
@click.option("--fsync", is_flag=True,
              help="Put every Raft entry on disk (fsync) before acting on it: accepted tasks then survive "
                   "a power loss too, not only a process crash.")
@click.option("--curve-secret-key", type=click.Path(exists=True, dir_okay=False),
              help="This coordinator's CURVE .key_secret (`qrt keys generate`; the same on every node): "
                   "clients and workers must then use CURVE. Required off loopback.")
@click.option("--curve-clients", type=click.Path(exists=True, file_okay=False),
              help="Directory of the public .key files allowed as clients (submit, wait, operator commands).")
@click.option("--curve-workers", type=click.Path(exists=True, file_okay=False),
              help="Directory of the public .key files allowed as workers.")
@click.option("--history-retention", default="7d", show_default=True, metavar="DURATION",
              help="Keep finished tasks in the task history this long after their last event (30m, 12h, 7d).")
@click.option("--history-max-size", default="1GiB", show_default=True, metavar="SIZE",
              help="Delete the oldest finished tasks when the history's file grows past this (500MB, 1GiB).")
@click.option("--history-value-bytes", default=65536, show_default=True, type=click.IntRange(64),
              help="Store arguments and results truncated past this many bytes (of JSON) in the history.")
@click.option("--no-history", is_flag=True, help="Keep no task history on this node (other nodes answer).")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics there (e.g. 127.0.0.1:9464).")
@click.option("--metrics-top-keys", default=defaults.METRICS_TOP_KEYS, show_default=True, type=click.IntRange(0),
              metavar="N", help="Per-key metric series for the N key values with the most tasks; the rest "
                                "are summed under key=\"other\".")
@click.option("--alerts", "alerts_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Alert rules and their sinks (TOML; docs/alerts.md), the same file on every node.")
@log_options
def coordinator(listen: str, data_dir: str, raft: str, peers: tuple[str, ...], raft_password_file: Any,
                max_frame_bytes: int, fsync: bool, log_level: str, curve_secret_key: str | None = None,
                curve_clients: str | None = None, curve_workers: str | None = None,
                history_retention: str = "7d", history_max_size: str = "1GiB", history_value_bytes: int = 65536,
                no_history: bool = False, log_format: str = "text", metrics: str | None = None,
                alerts_file: str | None = None, metrics_top_keys: int = defaults.METRICS_TOP_KEYS) -> None:
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
    from qrt.curve import check_listen, server_keys
    try:
        curve_keys = server_keys(curve_secret_key, curve_clients, curve_workers)
        check_listen(listen, curve_keys)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from qrt.alerts.rules import load
    from qrt.history.writer import Retention
    try:
        alerts = load(alerts_file) if alerts_file else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    retention = None if no_history else Retention(parse_duration(history_retention),
                                                  parse_size(history_max_size), history_value_bytes)
    logs.setup(log_level, log_format)
    os.environ[logs.ENV_FORMAT] = log_format  # the history's process logs alike
    tracing.configure("qrt-coordinator")
    try:
        run_coordinator(listen, data_dir, raft, list(peers), password, max_frame_bytes, fsync, curve_keys,
                        retention, metrics, alerts, metrics_top_keys)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start the coordinator: {exc}") from None
    finally:
        tracing.shutdown()


@main.command(cls=click.Command)
@click.argument("modules", nargs=-1, required=True)
@coordinator_option
@curve_options
@click.option("--concurrency", default=defaults.WORKER_CONCURRENCY, show_default=True, type=click.IntRange(1),
              help="Slots: tasks run at once.")
@click.option("--drain-timeout", default=defaults.DRAIN_TIMEOUT, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM, seconds to finish running tasks before giving them back.")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics there (e.g. 127.0.0.1:9465).")
@log_options
def worker(modules: tuple[str, ...], coordinators: tuple[str, ...], curve_secret_key: str | None,
           curve_server_key: str | None, concurrency: int, drain_timeout: float, log_level: str,
           log_format: str = "text", metrics: str | None = None) -> None:
    """Import MODULES and run their @qrt.actor handlers until SIGTERM/SIGINT, then drain."""
    from qrt.worker import import_actors, run_worker

    try:
        urls = resolve_coordinators(list(coordinators) or None)
        import_actors(list(modules))
    except (ImportError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    logs.setup(log_level, log_format)
    tracing.configure("qrt-worker")
    try:
        run_worker(list(modules), urls, concurrency, drain_timeout, curve_secret_key, curve_server_key, metrics)
    except (ImportError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        tracing.shutdown()


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
    args = json_arg(json_args, "JSON_ARGS", list)
    kwargs = json_arg(json_kwargs, "--kwargs", dict)
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
    replicas = {node["url"]: _replica_view(node["url"], client) for node in st["nodes"]}
    if as_json:
        click.echo(json.dumps({**st, "replicas": replicas}, indent=2))
        return
    click.echo(f"leader {st['leader']}  term {st['term']}  commit index {st['commit_index']}  "
               f"dead letters {st['dead_letters']}  clock skew {st.get('clock_skew', 0.0):+.3f} s")
    for node in st["nodes"]:
        state = "leader" if node["leader"] else ("follower" if node["reachable"] else "UNREACHABLE from the leader")
        click.echo(f"  node {node['url']} (raft {node['raft']})  {state}  {_digest_line(replicas[node['url']])}")
    click.echo(f"  replicas: {_agreement(list(replicas.values()))}")
    click.echo(f"workers: {len(st['workers'])}")
    for w in st["workers"]:
        state = "draining" if w["draining"] else ("connected" if w["connected"] else "reconnecting")
        click.echo(f"  {w['id']}  {state}  free {w['free']}/{w['concurrency']}  running {w['running']}  "
                   f"actors {', '.join(w['actors'])}")
    click.echo("queues:")
    for actor, row in sorted(st["queues"].items()):
        note = "" if row["served"] else "  (no connected worker serves it)"
        click.echo(f"  {actor}  queued {row['queued']}  delayed {row['delayed']}  running {row['running']}{note}")
    for actor, variants in st.get("option_conflicts", {}).items():
        click.echo(f"CONFLICT: the workers of {actor} declare {len(variants)} different options "
                   "(those of the worker started last are in force):")
        for variant in variants:
            click.echo(f"  {json.dumps(variant['options'], sort_keys=True)}  by {', '.join(variant['workers'])}")


def _replica_view(url: str, client: Client) -> dict[str, Any]:
    """One node's own view of its state digest and clock (None where it does not answer)."""
    try:
        with Client([url], timeout=min(client.timeout, 1.0), curve_secret_key=client.curve_secret_key,
                    curve_server_key=client.curve_server_key) as one:
            own = one.status(local=True)
    except QrtError as exc:
        return {"answered": False, "error": str(exc)}
    return {"answered": True, "state_digest": own.get("state_digest"), "clock_skew": own.get("clock_skew")}


def _digest_line(view: dict[str, Any]) -> str:
    digest = view.get("state_digest")
    if not view["answered"]:
        return "(did not answer)"
    if not digest or not digest["mark"]:
        return "no checkpoint yet"
    skew = view.get("clock_skew")
    line = f"checkpoint {digest['mark']} state {digest['digest'][:12]}"
    line += "" if skew is None else f"  clock skew {skew:+.3f} s"
    return f"{line}  DIVERGED {digest['diverged']}" if digest.get("diverged") else line


def _agreement(views: list[dict[str, Any]]) -> str:
    """Whether the replicas that answered hold the same state at their newest common checkpoint."""
    digests = [v["state_digest"] for v in views if v["answered"] and v.get("state_digest")]
    if any(d.get("diverged") for d in digests):
        return "DIVERGED (see the node marked above; replace its data from a healthy node)"
    by_mark: dict[int, set[str]] = {}
    for d in digests:
        if d["mark"]:
            by_mark.setdefault(d["mark"], set()).add(d["digest"])
    if not by_mark:
        return "no checkpoint compared yet"
    mark = max(by_mark)
    if len(by_mark[mark]) > 1:
        return f"DIFFER at checkpoint {mark}"
    return f"the same state at checkpoint {mark}" + ("" if len(by_mark) == 1 else " (some nodes are at another)")


for group in (dlq, limits, queue, cron, tasks, alerts):
    main.add_command(group)
main.add_command(stats)
main.add_command(keys)
main.add_command(dashboard)
