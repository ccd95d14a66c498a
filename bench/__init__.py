"""Benchmarks: one script per figure, each printing one JSON object that names the machine it ran on.

Run from the repository root: `python -m bench.throughput`, `python -m bench.roundtrip`,
`python -m bench.memory`, or all three with `python -m bench.run_all` (what `make bench` runs).
"""
