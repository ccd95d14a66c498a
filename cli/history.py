"""What happened to tasks: `qrt tasks list|show|tail|replay|cancel` and `qrt stats`, answered from
the task history that every coordinator node keeps (any node answers, follower included)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click

from qrt import durations
from qrt.client import Client
from qrt.errors import InvalidArgument, RemoteError, TaskNotFound
from qrt.history import queries
from qrt.protocol.history import STATES

from .cluster import ClusterGroup, pass_client

BULK_PAGE = 1000


def _option(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, its ValueError as click's BadParameter."""
    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return parsed


parse_duration = _option(durations.parse_duration)
parse_size = _option(durations.parse_size)
parse_time = _option(durations.parse_time)
local = durations.local


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--actor", help="Only this actor's tasks."),
        click.option("--state", type=click.Choice(STATES), help="Only tasks in this state (failed: ended failed "
                     "and no longer a dead letter; dead: in the dead-letter queue)."),
        click.option("--worker", help="Only tasks whose latest attempt ran on this worker."),
        click.option("--key", "key", metavar="NAME=VALUE", help="Only tasks carrying this key value."),
        click.option("--since", metavar="DURATION", help="Only tasks active in the last DURATION (30s, 5m, 1h, 7d)."),
        click.option("--from", "from_", metavar="TIME", help="Only tasks active at or after TIME (ISO or epoch)."),
        click.option("--until", metavar="TIME", help="Only tasks active before TIME (ISO or epoch)."),
        click.option("--error", metavar="TEXT", help="Only tasks whose error type, message or traceback has TEXT."),
        click.option("--args", metavar="TEXT", help="Only tasks whose arguments have TEXT."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def filters_of(actor: str | None, state: str | None, worker: str | None, key: str | None, since: str | None,
               from_: str | None, until: str | None, error: str | None, args: str | None) -> dict[str, Any]:
    if since is not None and from_ is not None:
        raise click.UsageError("give --since or --from, not both")
    out: dict[str, Any] = {"actor": actor, "state": state, "worker": worker, "error": error, "args": args}
    if key is not None:
        name, sep, value = key.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{key!r} is not NAME=VALUE", param_hint="--key")
        out["key"] = (name, value)
    if since is not None:
        out["since"] = time.time() - parse_duration(since)
    if from_ is not None:
        out["since"] = parse_time(from_)
    if until is not None:
        out["until"] = parse_time(until)
    return out


@click.group(cls=ClusterGroup)
def tasks() -> None:
    """The task history: list, show, follow, and act on tasks by filter."""


@tasks.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", type=int, help="The `next` of the previous page.")
@click.option("--json", "as_json", is_flag=True)
@pass_client
def tasks_list(client: Client, /, limit: int, cursor: int | None, as_json: bool, **raw: Any) -> None:
    """Tasks, newest first, by filter."""
    page = client.list_tasks(**filters_of(**raw), limit=limit, cursor=cursor)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    for t in page["tasks"]:
        error = f"  {t['error_type']}: {t['error_message']}" if t["error_type"] else ""
        click.echo(f"{t['id']}  {t['actor']}  {t['state']}  attempt {t['attempt']}  {t['worker'] or '-'}  "
                   f"submitted {local(t['submitted_at'])}  finished {local(t['finished_at'])}{error}")
    if page["next"] is not None:
        click.echo(f"more: --cursor {page['next']}")


@tasks.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@pass_client
def tasks_show(client: Client, task_id: str, as_json: bool) -> None:
    """A task's whole timeline: every attempt, worker and time, its arguments, result or error."""
    shown = task_view(client, task_id)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"{shown['id']}  {shown['actor']}  {shown['state']}  attempt {shown.get('attempt', 0)}"
               + (f"  on {shown['worker']}" if shown.get("worker") else ""))
    for name in ("args", "kwargs", "keys", "result"):
        if shown.get(name) not in (None, [], {}):
            click.echo(f"  {name}: {json.dumps(shown[name])}")
    if shown.get("error_type"):
        click.echo(f"  error: {shown['error_type']}: {shown['error_message']}")
    for e in shown["events"]:
        worker = f"  {e['worker']}" if e["worker"] else ""
        click.echo(f"  {local(e['at'])}  {e['event']:<10} attempt {e['attempt']}{worker}")
    if shown.get("traceback"):
        click.echo(shown["traceback"].rstrip())


def task_view(client: Client, task_id: str) -> dict[str, Any]:
    """The history's record of a task, with its present state from the state machine when the
    history lags it (by a few ms) or does not hold it (its node keeps none)."""
    try:
        shown: dict[str, Any] | None = client.task_history(task_id)
    except (TaskNotFound, RemoteError):
        shown = None
    try:
        present = client.describe(task_id)
    except TaskNotFound:
        present = None
    view = queries.with_present(shown, present)
    if view is None:
        raise click.ClickException(f"no task {task_id!r}: not in the cluster's state nor in its history")
    return view


@tasks.command("tail")
@filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05), help="Seconds between polls.")
@click.option("--for", "duration", type=click.FloatRange(0), help="Stop after this many seconds (default: never).")
@pass_client
def tasks_tail(client: Client, /, as_json: bool, interval: float, duration: float | None, **raw: Any) -> None:
    """Follow task events as they happen (Ctrl-C stops)."""
    filters = filters_of(**raw)
    cursor = client.task_events(0, **filters)["next"]
    stop_at = None if duration is None else time.monotonic() + duration
    try:
        while stop_at is None or time.monotonic() < stop_at:
            page = client.task_events(cursor, **filters)
            for e in page["events"]:
                if as_json:
                    click.echo(json.dumps(e))
                else:
                    error = f"  {e['error_type']}: {e['error_message']}" if e["event"] in ("retried", "dead") else ""
                    click.echo(f"{local(e['at'])}  {e['event']:<10} {e['id']}  {e['actor']}  attempt {e['attempt']}"
                               f"{'  ' + e['worker'] if e['worker'] else ''}{error}")
            cursor = page["next"]
            if not page["events"]:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def matching(client: Client, filters: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.list_tasks(**filters, limit=BULK_PAGE, cursor=cursor)
        found.extend(page["tasks"])
        cursor = page["next"]
        if cursor is None:
            return found


def confirm(what: str, n: int, yes: bool) -> bool:
    if n == 0:
        click.echo(f"no task to {what}")
        return False
    return yes or click.confirm(f"{what} {n} tasks?", default=False)


@tasks.command("replay")
@filter_options
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_client
def tasks_replay(client: Client, /, yes: bool, **raw: Any) -> None:
    """Run the tasks the filters select again: dead letters go back to their queue; finished tasks
    are submitted anew with the arguments the history holds. Shows the count and asks first."""
    found = matching(client, filters_of(**raw))
    dead = [t["id"] for t in found if t["state"] == "dead"]
    ended = [t for t in found if t["state"] in ("succeeded", "failed", "cancelled", "expired")]
    pending = len(found) - len(dead) - len(ended)
    if pending:
        click.echo(f"{pending} of them are queued, delayed or running: left alone")
    if not confirm("replay", len(dead) + len(ended), yes):
        return
    replayed = client.dlq_replay(dead) if dead else 0
    resubmitted = skipped = 0
    for t in ended:
        try:
            client.submit_again(t["id"])
            resubmitted += 1
        except InvalidArgument:  # its arguments were stored truncated
            skipped += 1
    click.echo(f"replayed {replayed} dead letters, submitted {resubmitted} finished tasks again"
               + (f", skipped {skipped} whose arguments the history holds truncated" if skipped else ""))


@tasks.command("cancel")
@filter_options
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_client
def tasks_cancel(client: Client, /, yes: bool, **raw: Any) -> None:
    """Cancel the queued, delayed and running tasks the filters select. Shows the count and asks first."""
    found = [t["id"] for t in matching(client, filters_of(**raw)) if t["state"] in ("queued", "delayed", "running")]
    if not confirm("cancel", len(found), yes):
        return
    click.echo(f"cancelled {client.cancel_many(found)}")


@click.command(cls=ClusterGroup.command_class)
@click.option("--since", default="1h", show_default=True, metavar="DURATION", help="From this long ago until now.")
@click.option("--from", "from_", metavar="TIME", help="From TIME (ISO or epoch) instead of --since.")
@click.option("--until", metavar="TIME", help="Until TIME (ISO or epoch).")
@click.option("--by", default="actor", show_default=True, type=click.Choice(["actor", "worker", "key", "minute"]))
@click.option("--json", "as_json", is_flag=True)
@pass_client
def stats(client: Client, since: str, from_: str | None, until: str | None, by: str, as_json: bool) -> None:
    """Counts by outcome, failure rate, queue wait and run time p50/p95/p99, per actor, worker, key
    value or minute: which tasks fail, when latency spiked, which workers fail most."""
    start = parse_time(from_) if from_ is not None else time.time() - parse_duration(since)
    reply = client.stats(start, parse_time(until) if until is not None else None, by)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(f"{by:<32} {'submitted':>9} {'succeeded':>9} {'failed':>7} {'fail %':>6}  "
               f"{'wait p50/p95/p99 s':>22}  {'run p50/p95/p99 s':>22}")
    for r in reply["rows"]:
        group = local(r["group"]) if by == "minute" else str(r["group"])
        click.echo(f"{group:<32} {r['submitted']:>9} {r['succeeded']:>9} {r['failed']:>7} "
                   f"{100 * r['failure_rate']:>6.1f}  {_triple(r, 'queue_wait'):>22}  {_triple(r, 'run'):>22}")


def _triple(row: dict[str, Any], name: str) -> str:
    values = [row[f"{name}_p{q}"] for q in (50, 95, 99)]
    return "/".join("-" if v is None else f"{v:.3g}" for v in values)
