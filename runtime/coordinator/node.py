"""`run_coordinator`: one coordinator node in its own process, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import uvloop

from .. import clock, defaults
from ..alerts.rules import AlertConfig
from ..curve import ServerKeys
from ..history.process import HistoryProcess
from ..history.writer import Retention
from ..replication import Replication
from .server import Coordinator

log = logging.getLogger("qrt.coordinator")

DEFAULT_RETENTION = Retention()

def run_coordinator(listen: str = defaults.COORDINATOR_URL, data_dir: str = defaults.DATA_DIR,
                    raft: str = defaults.RAFT_ADDRESS, peers: list[str] | None = None,
                    password: str | None = None, max_frame: int = defaults.MAX_FRAME_BYTES,
                    fsync: bool = False, keys: ServerKeys | None = None,
                    history: Retention | None = DEFAULT_RETENTION, metrics: str | None = None,
                    alerts: AlertConfig | None = None, metrics_top_keys: int = defaults.METRICS_TOP_KEYS) -> None:
    """Run one coordinator node until SIGTERM or SIGINT (`fsync`: Replication's; `keys`: CURVE on the
    client/worker port, curve.server_keys; `history`: the task history's retention, None for none;
    `metrics`: HOST:PORT of the Prometheus endpoint, None for none, with a series for each of the
    `metrics_top_keys` busiest key values; `alerts`: the rules, alerts/rules.py)."""
    uvloop.run(_main(listen, data_dir, raft, list(peers or []), password, max_frame, fsync, keys, history,
                     metrics, alerts, metrics_top_keys))


async def _main(listen: str, data_dir: str, raft: str, peers: list[str], password: str | None,
                max_frame: int, fsync: bool, keys: ServerKeys | None = None,
                retention: Retention | None = None, metrics: str | None = None,
                alerts: AlertConfig | None = None, metrics_top_keys: int = defaults.METRICS_TOP_KEYS) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    raft_changed = asyncio.Event()  # set by pysyncobj (ticked on this loop: raft_loop.py), read on the loop

    def state_changed() -> None:  # within pysyncobj's tick
        loop.call_soon_threadsafe(raft_changed.set)

    os.makedirs(data_dir, exist_ok=True)
    history = None if retention is None else \
        HistoryProcess(data_dir, retention, listen, keys.secret_file if keys is not None else None)
    try:
        replication = Replication(raft, peers, data_dir, password, on_state_changed=state_changed, fsync=fsync,
                                  history=history, loop=loop)
    except BaseException:
        if history is not None:
            history.close()
        raise
    try:
        coordinator = Coordinator(listen, replication, max_frame, clock.from_environment(), keys, history, alerts)
        if metrics is not None:
            from ..metrics import CoordinatorCollector, serve
            serve(metrics, CoordinatorCollector(coordinator, metrics_top_keys))
        log.info("coordinator listening on %s, raft %s, peers %s, data in %s%s%s", listen, raft,
                 ",".join(peers) or "none", data_dir, " (fsync)" if fsync else "",
                 f" (CURVE: {len(keys.roles)} keys allowed)" if keys is not None else "")
        await coordinator.serve(stop, raft_changed)
    finally:
        replication.destroy()
        if history is not None:
            history.close()
        log.info("coordinator on %s stopped", listen)
