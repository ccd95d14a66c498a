"""bench.compare's report: the issues' targets, as the table checks them and as the chart draws them."""

from __future__ import annotations

from typing import Any

import pytest

from bench.compare.report import advantage_target, targets


def results(figures: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """A results file with one run per figure: {system: {workload: {key: value}}}."""
    return {"systems": {system: {"workloads": {w: {"runs": [values], "median": values, "worst": values}
                                               for w, values in workloads.items()}}
                        for system, workloads in figures.items()}}


@pytest.mark.parametrize(("system", "workload", "wanted"), [
    ("qrt-3", "w1-1slot", 2.0), ("qrt-1", "w1-1slot", 3.0),  # x the best peer's throughput
    ("qrt-3", "w3-1slot", 1 / 0.75), ("qrt-1", "w3-1slot", 2.0),  # p50 at most 0.75x / 0.5x the best peer's
    ("qrt-3", "w1", 5.0), ("qrt-1", "w3", 2.0), ("qrt-3", "w2", None)])
def test_the_chart_draws_each_systems_own_target_on_the_higher_is_better_scale(system: str, workload: str,
                                                                               wanted: float | None) -> None:
    assert advantage_target(system, workload) == (pytest.approx(wanted) if wanted is not None else None)


def test_the_per_slot_targets_are_checked_against_the_best_peer() -> None:
    run = results({"qrt-3": {"w1-1slot": {"end_to_end_rate": 2500.0}, "w3-1slot": {"roundtrip_p50_ms": 2.0}},
                   "celery-reliable": {"w1-1slot": {"end_to_end_rate": 1200.0}, "w3-1slot": {"roundtrip_p50_ms": 2.5}},
                   "dramatiq": {"w1-1slot": {"end_to_end_rate": 1100.0}, "w3-1slot": {"roundtrip_p50_ms": 2.4}}})
    checked = {t["target"]: t for t in targets(run, "qrt-3")}
    throughput = checked["w1-1slot end_to_end_rate vs best peer (issue 14)"]
    assert throughput["value"] == pytest.approx(2500 / 1200, abs=1e-3) and throughput["met"]
    p50 = checked["w3-1slot roundtrip_p50_ms vs best peer (issue 14)"]
    assert p50["value"] == pytest.approx(2.0 / 2.4, abs=1e-3) and not p50["met"]  # 0.83x, 0.75x wanted
