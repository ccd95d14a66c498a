"""Operators' commands: dead letters, limits, queues and cron entries (`qrt dlq|limits|queue|cron`)."""

from __future__ import annotations

import json

import click

from qrt.client import Client

from .cluster import ClusterGroup, json_arg, pass_client


@click.group(cls=ClusterGroup)
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


@click.group(cls=ClusterGroup)
def alerts() -> None:
    """Alert rules (qrt coordinator --alerts FILE) and what fires."""


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_client
def alerts_list(client: Client, as_json: bool) -> None:
    """Every rule of the leader's file, with what fires now."""
    rules = client.alerts()
    if as_json:
        click.echo(json.dumps(rules, indent=2))
        return
    if not rules:
        click.echo("no alert rules (qrt coordinator --alerts FILE)")
    for rule in rules:
        scope = f" ({rule['actor']})" if rule["actor"] else ""
        state = f"FIRING {len(rule['firing'])}" if rule["firing"] else "ok"
        click.echo(f"{rule['name']}{scope}  {rule['condition']} {rule['threshold']:g}  {state}  "
                   f"sinks {', '.join(rule['sinks']) or '-'}")
        for f in rule["firing"]:
            click.echo(f"  {f['text']}")


@click.group(cls=ClusterGroup)
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


@click.group(cls=ClusterGroup)
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


@click.group(cls=ClusterGroup)
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
    args = json_arg(json_args, "JSON_ARGS", list)
    kwargs = json_arg(json_kwargs, "--kwargs", dict)
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
