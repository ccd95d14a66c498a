"""What the dashboard's pages read from the cluster beyond one request: a task from the history and
the state machine together, and the dead letters an action names."""

from __future__ import annotations

from typing import Any

from ..client import AsyncClient
from ..errors import QrtError, TaskNotFound
from ..history import queries

BULK_PAGE = 1000  # tasks per `list_tasks` request when a whole group is read


async def task_record(client: AsyncClient, task_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The history's record of a task and its present state (either may be missing, not both)."""
    try:
        record: dict[str, Any] | None = await client.task_history(task_id)
    except QrtError:  # not in this node's history (or it keeps none): the state machine may know it
        record = None
    try:
        present: dict[str, Any] | None = await client.describe(task_id)
    except TaskNotFound:
        present = None
    view = queries.with_present(record, present)
    if view is None:
        raise TaskNotFound(task_id)
    return view, present


async def dead_selection(client: AsyncClient, params: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The dead letters a confirmation or action names: one (`id`) or a group (`fingerprint`)."""
    if params.get("id"):
        task_id = params["id"]
        present = await client.describe(task_id)
        if present["state"] != "dead":
            return f"letter {task_id}", []
        return f"letter {task_id}", [{"id": task_id, "actor": present["actor"]}]
    fingerprint = params.get("fingerprint", "")
    if not fingerprint:
        raise ValueError("name a group (fingerprint) or a letter (id)")
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.list_tasks(state="dead", fingerprint=fingerprint, limit=BULK_PAGE, cursor=cursor)
        found.extend(page["tasks"])
        cursor = page["next"]
        if cursor is None:
            return f"group {fingerprint}", found
