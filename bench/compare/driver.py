"""One workload, one run, one system: `python -m bench.compare.driver SYSTEM WORKLOAD RUN_DIR ...`.

Run by the comparison (bench.compare) with the system's own Python: qrt's virtualenv for qrt, the
peers' virtualenv for Celery and Dramatiq. It starts the workers, runs the workload, stops the
workers and prints one JSON line: the figures, or {"error": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

from .stamps import StampLog
from .workloads import ENV_CELERY_PROFILE, ENV_REDIS_URL, WORKLOADS, Run, System, Workers, sizes


def make_system(name: str, coordinators: list[str], redis_url: str) -> System:
    # Imported here: each module configures its system when imported, from the environment.
    if name.startswith("qrt"):
        from .qrt_app import QrtSystem

        return QrtSystem(coordinators)
    if name.startswith("celery-"):
        os.environ[ENV_REDIS_URL] = redis_url
        os.environ[ENV_CELERY_PROFILE] = name.removeprefix("celery-")
        from .celery_app import CelerySystem

        return CelerySystem(redis_url, name.removeprefix("celery-"))
    if name == "dramatiq":
        os.environ[ENV_REDIS_URL] = redis_url
        from .dramatiq_app import DramatiqSystem

        return DramatiqSystem(redis_url)
    raise ValueError(f"unknown system {name!r}")


def run_once(system_name: str, workload: str, run_dir: str, quick: bool, coordinators: list[str],
             redis_url: str) -> dict[str, Any]:
    params = sizes(workload, quick)
    stamps_dir = os.path.join(run_dir, "stamps")
    os.makedirs(stamps_dir, exist_ok=True)
    system = make_system(system_name, coordinators, redis_url)
    workers = Workers.start(system, params["concurrency"], run_dir)
    try:
        run = Run(system, workers, StampLog(stamps_dir), prefix=f"{os.path.basename(run_dir)}.")
        t0 = time.monotonic()
        out = WORKLOADS[workload](run, **params)
        out["elapsed_s"] = round(time.monotonic() - t0, 2)
        return out
    finally:
        workers.stop()
        system.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("run_dir")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--coordinators", default="", help="qrt: comma-separated coordinator URLs")
    parser.add_argument("--redis-url", default="", help="Celery, Dramatiq: redis://127.0.0.1:PORT")
    args = parser.parse_args(argv)
    try:
        out = run_once(args.system, args.workload, args.run_dir, args.quick,
                       [u for u in args.coordinators.split(",") if u], args.redis_url)
    except Exception as exc:
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
