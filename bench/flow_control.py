"""Flow control: rate-limit accuracy, round-robin between keys, and 1,000,000 delayed tasks pending.

    python -m bench.flow_control [--part rate|fairness|scale] [--quick] [--timeout 300] [--no-save]

Each part starts its own 1-node coordinator and 2 worker processes x 8 slots serving bench.actors,
on 127.0.0.1 (the machine's 2 cores are shared by all of them and by this client). Each is a module
of its own, whose docstring says what it measures and how:

rate      rate_accuracy.py: a saturated "50/s" limit, never exceeded and used to the full.
fairness  key_fairness.py: 10 tenants, one with a backlog, sharing 16 slots round-robin.
scale     million_delayed.py: 1,000,000 delayed tasks pending, the coordinator's memory; and
          snapshot_pause.py (with snapshot_probes.py): the pause of a Raft snapshot of them.

--quick: 250 rate-limited tasks and 100,000 pending tasks (about 25 s in all, instead of ~100 s).
Targets missed are listed under "targets_missed"; lost tasks or a broken limit under "failed_checks".
"""

from __future__ import annotations

from typing import Any

from . import harness, key_fairness, million_delayed, rate_accuracy
from .actors import RATE_LIMIT_N

PARTS = ("rate", "fairness", "scale")
QUICK = {"rate_tasks": 5 * RATE_LIMIT_N, "fair_big": 1000, "fair_small": 10, "scale_tasks": 100_000}
FULL = {"rate_tasks": 12 * RATE_LIMIT_N, "fair_big": 1000, "fair_small": 10,
        "scale_tasks": million_delayed.SCALE_TARGET_TASKS}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, help="one part only (default: all three)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller sizes: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker process")
    parser.add_argument("--rate-tasks", type=int, help=f"tasks of the rate part (default {FULL['rate_tasks']})")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="seconds allowed for the lease-to-handler delay when counting violations")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--fair-big", type=int, help=f"tasks of tenant 0 (default {FULL['fair_big']})")
    parser.add_argument("--fair-small", type=int, help=f"tasks of each other tenant (default {FULL['fair_small']})")
    parser.add_argument("--scale-tasks", type=int, help=f"delayed tasks pending (default {FULL['scale_tasks']})")
    parser.add_argument("--batch", type=int, default=2000, help="tasks per submit request (scale)")
    parser.add_argument("--inflight", type=int, default=4, help="submit requests in flight (scale)")
    parser.add_argument("--stream-rate", type=float, default=200.0, help="round trips per second (scale)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    parts = [args.part] if args.part else list(PARTS)
    steps = {"rate": rate_accuracy.measure, "fairness": key_fairness.measure, "scale": million_delayed.measure}

    def body(deadline: harness.Deadline, report: dict[str, Any]) -> None:
        for part in parts:
            steps[part](args, deadline, report)

    return harness.run_benchmark("flow_control", vars(args), args.timeout, body)


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    return harness.emit(report, save=not report["params"]["no_save"])


if __name__ == "__main__":
    raise SystemExit(main())
