"""The answer to `status`: this node's view of Raft, the nodes, the workers and the queues (read-only)."""

from __future__ import annotations

import json
import time
from typing import Any

from ..replication import Replication
from ..state import views
from .roster import WorkerTable


def option_conflicts(workers: WorkerTable) -> dict[str, list[dict[str, Any]]]:
    """Actors whose connected workers declare different options (a rolling deploy): each variant
    with its workers. The options in force are those of the worker started last."""
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    for w in workers.by_id.values():
        if w.connected:
            for actor, options in w.options.items():
                key = json.dumps(options, sort_keys=True, default=str)
                variant = variants.setdefault(actor, {}).setdefault(key, {"options": options, "workers": []})
                variant["workers"].append(w.id)
    return {actor: list(found.values()) for actor, found in sorted(variants.items()) if len(found) > 1}


def cluster_status(listen: str, leading: bool, replication: Replication, workers: WorkerTable) -> dict[str, Any]:
    """This node's view: Raft, the nodes, the workers the leader knows, the queues' depths."""
    raft = replication.status()
    now = time.monotonic()
    with replication.reading() as machine:
        nodes = [{"raft": addr, "url": url, "leader": addr == raft["leader"],
                  "reachable": addr == raft["self"] or raft["connected"].get(addr, False)}
                 for addr, url in sorted(machine.nodes.items())]
        leader_url = machine.nodes.get(raft["leader"] or "")
        queues: dict[str, dict[str, Any]] = dict(views.depth(machine, registered=True))
        oldest, leader_time = views.oldest_queued(machine), machine.now
        running = {w: len(ids) for w, ids in machine.leases.items()}
        dlq, applied, digest = len(machine.dlq), machine.applied, machine.digest
    served = {a for w in workers.by_id.values() if w.connected for a in w.actors}
    for actor, row in queues.items():
        row["served"] = actor in served
        # Since its oldest queued task was due (leader time of the last batch applied: a tick a second)
        row["oldest_age"] = round(max(0.0, leader_time - oldest[actor]), 3) if actor in oldest else 0.0
    rows = [
        {"id": w.id, "actors": w.actors, "free": w.credit, "concurrency": w.concurrency,
         "running": running.get(w.id, 0), "seen_ago": round(now - w.last_seen, 2),
         "draining": w.draining, "connected": w.connected}
        for w in workers.by_id.values()
    ]
    return {"node": listen, "raft": raft["self"], "is_leader": leading, "leader": leader_url,
            "term": raft["term"], "commit_index": raft["commit_index"], "last_applied": raft["last_applied"],
            "applied_batches": applied, "digest": digest, "state_digest": replication.checkpoints.view(),
            "nodes": nodes, "workers": rows,
            "queues": queues, "dead_letters": dlq, "option_conflicts": option_conflicts(workers)}
