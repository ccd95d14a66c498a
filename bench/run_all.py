"""Every benchmark with its defaults, one after the other (what `make bench` runs).

    python -m bench.run_all [--timeout 300] [--no-save]

Prints one JSON object: the machine, and each benchmark's report under its name. Each benchmark
keeps its own budget (`--timeout` seconds each), so the whole run ends within four budgets.
flow_control runs with `--quick` here (about 30 s: 100,000 pending tasks instead of 1,000,000);
run `python -m bench.flow_control` alone for the full sizes (about 100 s).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import flow_control, harness, memory, roundtrip, throughput
from .machine import machine_info

# name -> (run, extra arguments)
BENCHMARKS = {"throughput": (throughput.run, []), "roundtrip": (roundtrip.run, []), "memory": (memory.run, []),
              "flow_control": (flow_control.run, ["--quick"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=harness.DEFAULT_TIMEOUT, help="budget of each benchmark, s")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/all-<time>.json")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "all", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "machine": machine_info(), "results": {}}
    for name, (run, extra) in BENCHMARKS.items():
        sub = run(["--timeout", str(args.timeout), "--no-save", *extra])
        sub.pop("machine", None)  # the same machine, given once at the top
        report["results"][name] = sub
        if sub.get("error") or sub.get("failed_checks"):
            report.setdefault("failed_checks", []).append(
                f"{name}: {sub.get('error') or '; '.join(sub['failed_checks'])}")
        for missed in sub.get("targets_missed", []):  # figures below target, reported, not failures
            report.setdefault("targets_missed", []).append(f"{name}: {missed}")
    return harness.emit(report, save=not args.no_save)


if __name__ == "__main__":
    raise SystemExit(main())
