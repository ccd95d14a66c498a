"""What worker membership costs in Celery's design, computed and measured, for the control-plane benchmark.

Every Celery worker publishes a `worker-heartbeat` event every 2 s (celery.worker.heartbeat.Heart),
and every worker consumes every other worker's events (gossip, on by default): n workers receive
n(n-1)/2 events per second between them, against qrt's 2n messages (a heartbeat and its answer per
worker per second, to the coordinator only). `model()` computes both; `measure()` runs k real idle
Celery workers (their defaults: heartbeats, gossip, mingle) on a Redis of its own and reads Redis's
PUBLISH calls and bytes sent per second, and the workers' CPU.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Any

from qrt.local import wait_until

from .compare import infra
from .compare.workloads import ENV_REDIS_URL, descendants, kill
from .harness import REPO_ROOT, proc_cpu_seconds

CELERY_HEARTBEAT_S = 2.0  # Heart's default interval
QRT_MESSAGES_PER_IDLE_WORKER = 2.0  # per second: a heartbeat and its hb
SETTLE_S = 4.0  # after the subscriptions stop changing: mingle is done and heartbeats flow


def model(sizes: list[int]) -> list[dict[str, Any]]:
    return [{"workers": n,
             "celery_heartbeat_events_published_per_s": n / CELERY_HEARTBEAT_S,
             "celery_heartbeat_events_received_per_s": n * (n - 1) / CELERY_HEARTBEAT_S,
             "celery_received_per_worker_per_s": (n - 1) / CELERY_HEARTBEAT_S,
             "qrt_messages_per_s": n * QRT_MESSAGES_PER_IDLE_WORKER,
             "qrt_messages_per_worker_per_s": QRT_MESSAGES_PER_IDLE_WORKER} for n in sizes]


def measure(counts: list[int], idle: float) -> list[dict[str, Any]]:
    python, redis_binary = infra.ensure_peers_venv(), infra.ensure_redis_server()
    return [_measure_one(python, redis_binary, k, idle) for k in counts]


def _measure_one(python: str, redis_binary: str, k: int, idle: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qrt-celery-membership-") as workdir, \
            infra.redis_server(redis_binary, workdir) as (url, port):
        env = {**os.environ, "PYTHONPATH": REPO_ROOT, ENV_REDIS_URL: url}
        procs = [subprocess.Popen([python, "-m", "celery", "-A", "bench.compare.celery_app", "worker",
                                   "--pool", "solo", "-l", "warning", "-n", f"member{i}@%h"],
                                  env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(k)]
        try:
            _wait_settled(port, k)
            before, cpu0, t0 = _info(port), _cpu(procs), time.monotonic()
            time.sleep(idle)
            after, cpu1, t1 = _info(port), _cpu(procs), time.monotonic()
        finally:
            for proc in procs:
                for pid in [*descendants(proc.pid), proc.pid]:
                    kill(pid)
                proc.wait()
    window = t1 - t0
    publishes = _calls(after, "publish") - _calls(before, "publish")
    sent = int(after["total_net_output_bytes"]) - int(before["total_net_output_bytes"])
    return {"workers": k, "publish_per_s": round(publishes / window, 2), "redis_bytes_out_per_s": round(sent / window),
            "workers_cpu_percent_of_a_core": round((cpu1 - cpu0) / window * 100, 2)}


def _wait_settled(port: int, k: int) -> None:
    """Until at least k Redis connections subscribe (each worker's event consumer does) and their
    number held for a second, then SETTLE_S."""
    seen = {"n": -1, "since": time.monotonic()}

    def settled() -> bool:
        clients = infra.redis_command(port, "CLIENT", "LIST").decode().splitlines()
        n = sum(1 for c in clients if " sub=0 " not in f" {c} " or " psub=0 " not in f" {c} ")
        if n != seen["n"]:
            seen.update(n=n, since=time.monotonic())
        return n >= k and time.monotonic() - seen["since"] >= 1.0

    wait_until(settled, 90, 0.2, f"{k} Celery workers subscribed")
    time.sleep(SETTLE_S)


def _info(port: int) -> dict[str, str]:
    text = infra.redis_command(port, "INFO", "all").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _calls(info: dict[str, str], command: str) -> int:
    stat = info.get(f"cmdstat_{command}", "")  # "calls=12,usec=...,..."
    fields = dict(kv.split("=", 1) for kv in stat.split(",") if "=" in kv)
    return int(fields.get("calls", 0))


def _cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    total = 0.0
    for proc in procs:
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                total += proc_cpu_seconds(pid)
            except OSError:  # a process that just ended
                continue
    return total
