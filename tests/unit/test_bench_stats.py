"""The statistics the benchmarks report: a wrong formula would misstate every comparison."""

from __future__ import annotations

from bench.stats import busiest_window, median, percentiles, sustained_rate


def test_busiest_window_counts_a_half_open_second() -> None:
    assert busiest_window([0.0, 0.5, 0.999, 1.0, 1.5]) == 3  # [0, 1) holds 3; 1.0 starts the next one
    assert busiest_window([0.2, 0.1, 1.05, 1.1]) == 3  # unsorted input: [0.2, 1.2) holds 3
    assert busiest_window([]) == 0


def test_sustained_rate_is_the_median_per_window_bursts_or_not() -> None:
    bursts = [float(s) + i / 1000 for s in range(6) for i in range(50)]  # 50 at the start of each second
    smooth = [i / 50 for i in range(300)]
    assert sustained_rate(bursts) == 50
    assert sustained_rate(smooth) == 50
    assert sustained_rate([0.0, 0.5]) is None  # not one whole window


def test_median_and_percentiles() -> None:
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50_ms"], p["p95_ms"], p["p99_ms"], p["max_ms"]) == (50, 95, 99, 100)
