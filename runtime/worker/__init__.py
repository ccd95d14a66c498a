"""The worker process (DESIGN.md, "worker"): `run_worker` imports modules and serves their actors."""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from typing import Any

import uvloop

from .. import defaults
from ..actor import Actor, registry
from ..curve import peer_keys
from .session import Worker

__all__ = ["Worker", "import_actors", "run_worker"]


def import_actors(modules: list[str]) -> dict[str, Actor[Any, Any]]:
    """Import each module and return the actors they define; ImportError names the module."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current directory are found
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ImportError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from exc
    return dict(registry)


def run_worker(modules: list[str], coordinators: list[str], concurrency: int = defaults.WORKER_CONCURRENCY,
               drain_timeout: float = defaults.DRAIN_TIMEOUT, curve_secret_key: str | None = None,
               curve_server_key: str | None = None, metrics: str | None = None) -> None:
    """Serve `modules`' actors until SIGTERM/SIGINT; CURVE keys as for `qrt.Client` (ValueError when
    one cannot be read); `metrics`: HOST:PORT of a Prometheus endpoint."""
    keys = peer_keys(curve_secret_key, curve_server_key)
    actors = import_actors(modules)
    if not actors:
        raise ImportError(f"no @qrt.actor found in {', '.join(modules)}")
    worker = Worker(actors, coordinators, concurrency, drain_timeout, keys)
    if metrics is not None:
        from ..metrics import WorkerCollector, serve
        serve(metrics, WorkerCollector(worker))
    uvloop.run(_serve(worker))


async def _serve(worker: Worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)
