"""The coordinator node (DESIGN.md, "coordinator"): `run_coordinator` starts one."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from .. import defaults
from ..replication import Replication
from .server import Coordinator

log = logging.getLogger("qrt.coordinator")

__all__ = ["Coordinator", "run_coordinator"]


def run_coordinator(listen: str = defaults.COORDINATOR_URL, data_dir: str = defaults.DATA_DIR,
                    raft: str = defaults.RAFT_ADDRESS, peers: list[str] | None = None,
                    password: str | None = None, max_frame: int = defaults.MAX_FRAME_BYTES) -> None:
    """Run one coordinator node until SIGTERM or SIGINT."""
    uvloop.run(_main(listen, data_dir, raft, list(peers or []), password, max_frame))


async def _main(listen: str, data_dir: str, raft: str, peers: list[str], password: str | None,
                max_frame: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    holder: list[Coordinator] = []

    def state_changed() -> None:  # on pysyncobj's thread
        if holder:
            loop.call_soon_threadsafe(holder[0].on_raft_state_changed)

    replication = Replication(raft, peers, data_dir, password, on_state_changed=state_changed)
    try:
        coordinator = Coordinator(listen, replication, max_frame)
        holder.append(coordinator)
        coordinator.on_raft_state_changed()  # it may have won an election before we listened
        log.info("coordinator listening on %s, raft %s, peers %s, data in %s", listen, raft,
                 ",".join(peers) or "none", data_dir)
        await coordinator.serve(stop)
    finally:
        replication.destroy()
        log.info("coordinator on %s stopped", listen)
