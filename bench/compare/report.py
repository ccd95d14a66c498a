"""The comparison's outputs from its results: the targets checked, a markdown table, a PNG chart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .workloads import RATE_LIMIT

# (label, workload, figure, aggregate over the runs): the median, or the worst run where the issue
# asks for "never" or "0" (a single bad run must show).
ROWS: list[tuple[str, str, str, str]] = [
    ("W1 enqueue, tasks/s", "w1", "enqueue_rate", "median"),
    ("W1 end to end, tasks/s", "w1", "end_to_end_rate", "median"),
    ("W2 start latency p50, ms", "w2", "start_latency_p50_ms", "median"),
    ("W2 start latency p95, ms", "w2", "start_latency_p95_ms", "median"),
    ("W2 start latency p99, ms", "w2", "start_latency_p99_ms", "median"),
    ("W3 round trip p50, ms", "w3", "roundtrip_p50_ms", "median"),
    ("W3 round trip p95, ms", "w3", "roundtrip_p95_ms", "median"),
    ("W3 round trip p99, ms", "w3", "roundtrip_p99_ms", "median"),
    ("W4 longest wait of a short task, ms", "w4", "max_short_wait_ms", "median"),
    ("W4 short tasks started after the long one (worst run)", "w4", "shorts_after_long", "worst"),
    ("W5 child killed: tasks lost (worst run)", "w5-child", "lost", "worst"),
    ("W5 child killed: tasks completed twice (worst run)", "w5-child", "completed_twice", "worst"),
    ("W5 main process killed: tasks lost (worst run)", "w5-main", "lost", "worst"),
    ("W5 main process killed: tasks completed twice (worst run)", "w5-main", "completed_twice", "worst"),
    (f"W6 busiest 1 s window, starts (limit {RATE_LIMIT}; worst run)", "w6", "busiest_1s_window", "worst"),
    ("W6 sustained rate, starts/s", "w6", "sustained_rate", "median"),
    ("W1, 2 workers x 1 slot: end to end, tasks/s", "w1-1slot", "end_to_end_rate", "median"),
    ("W3, 2 workers x 1 slot: round trip p50, ms", "w3-1slot", "roundtrip_p50_ms", "median"),
    ("W3, 2 workers x 1 slot: round trip p99, ms", "w3-1slot", "roundtrip_p99_ms", "median"),
]

# The per-slot targets (issue 14), by cluster size: (W1 1-slot throughput, at least this many times
# the best peer's; W3 1-slot p50, at most this fraction of the best peer's; W1 8-slot throughput).
SLOT_TARGETS = {"qrt-1": (3.0, 0.5, None), "qrt-3": (2.0, 0.75, 3.0)}


def figure(results: dict[str, Any], system: str, workload: str, key: str, aggregate: str = "median") -> float | None:
    entry = results["systems"].get(system, {}).get("workloads", {}).get(workload)
    value = (entry or {}).get(aggregate, {}).get(key)
    return value if isinstance(value, (int, float)) else None


def peers(results: dict[str, Any]) -> list[str]:
    return [s for s in results["systems"] if not s.startswith("qrt")]


def best_peer(results: dict[str, Any], workload: str, key: str, pick: Callable[..., Any]) -> tuple[str, float] | None:
    """The best peer's (name, figure): `pick` is max for a rate, min for a latency."""
    found = [(figure(results, s, workload, key), s) for s in peers(results)]
    found = [(v, s) for v, s in found if v is not None]
    if not found:
        return None
    value, name = pick(found)
    return name, value


def targets(results: dict[str, Any], system: str) -> list[dict[str, Any]]:
    """The issue's targets for `system`, as measured in this run (absent figures are skipped)."""
    out: list[dict[str, Any]] = []

    def check(name: str, value: float | None, target: str, met: Callable[[float], bool], detail: str = "") -> None:
        if value is not None:
            out.append({"system": system, "target": name, "value": round(value, 3), "wanted": target,
                        "met": bool(met(value)), "detail": detail})

    mine = figure(results, system, "w1", "end_to_end_rate")
    best = best_peer(results, "w1", "end_to_end_rate", max)
    if mine is not None and best:
        check("W1 end to end vs best peer", mine / best[1], ">= 5x", lambda r: r >= 5,
              f"{mine:,.0f}/s vs {best[0]} {best[1]:,.0f}/s")
    mine = figure(results, system, "w3", "roundtrip_p50_ms")
    best = best_peer(results, "w3", "roundtrip_p50_ms", min)
    if mine is not None and best:
        check("W3 p50 vs best peer", mine / best[1], "<= 0.5x", lambda r: r <= 0.5,
              f"{mine:.2f} ms vs {best[0]} {best[1]:.2f} ms")
    check("W4 short tasks after the long one", figure(results, system, "w4", "shorts_after_long", "worst"),
          "0", lambda v: v == 0)
    for victim in ("child", "main"):
        check(f"W5 lost, {victim} killed", figure(results, system, f"w5-{victim}", "lost", "worst"),
              "0", lambda v: v == 0)
    check("W6 busiest 1 s window", figure(results, system, "w6", "busiest_1s_window", "worst"),
          f"<= {RATE_LIMIT}", lambda v: v <= RATE_LIMIT)
    if system in SLOT_TARGETS:
        throughput, p50, eight = SLOT_TARGETS[system]
        for workload, key, wanted, pick in (("w1-1slot", "end_to_end_rate", throughput, max),
                                            ("w3-1slot", "roundtrip_p50_ms", p50, min),
                                            ("w1", "end_to_end_rate", eight, max)):
            mine, best = figure(results, system, workload, key), best_peer(results, workload, key, pick)
            if wanted is None or mine is None or not best:
                continue
            ratio = mine / best[1]
            higher, bound = pick is max, float(wanted)

            def met(r: float, higher: bool = higher, bound: float = bound) -> bool:
                return r >= bound if higher else r <= bound
            check(f"{workload} {key} vs best peer (issue 14)", ratio, f"{'>=' if higher else '<='} {bound}x", met,
                  f"{mine:,.2f} vs {best[0]} {best[1]:,.2f}")
    return out


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    systems = list(results["systems"])
    m = results["machine"]
    lines = [f"Run {results['date']} on {m['cpu_model']}, {m['cores']} cores, "
             f"{m['memory_total_bytes'] / 2**30:.0f} GiB, Python {m['python']}; "
             f"median of {results['params']['repeat']} runs; `{results['command']}`.", "",
             "| workload | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
    for label, workload, key, aggregate in ROWS:
        if any(figure(results, s, workload, key, aggregate) is not None for s in systems):
            cells = [_cell(figure(results, s, workload, key, aggregate)) for s in systems]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if results.get("targets"):
        lines += ["", "| target (qrt) | measured | wanted | met |", "|---|---:|---:|:---:|"]
        for t in results["targets"]:
            value = f"{t['value']:.2f}x" if "vs" in t["target"] else _cell(t["value"])
            detail = f" ({t['detail']})" if t["detail"] else ""
            lines.append(f"| {t['system']}: {t['target']}{detail} | {value} | {t['wanted']} | "
                         f"{'yes' if t['met'] else '**no**'} |")
    errors = [f"- {s} {w}: {e}" for s, entry in results["systems"].items()
              for w, run in entry.get("workloads", {}).items() for e in run.get("errors", [])]
    if errors:
        lines += ["", "Runs that failed:", *errors]
    return "\n".join(lines) + "\n"


def advantage_target(system: str, workload: str) -> float | None:
    """The advantage over the best peer an issue asks of `system` on the chart's scale (higher is
    better): W1 and W3 from the comparison's issue, the 1-slot shapes from issue 14 (SLOT_TARGETS)."""
    slot = SLOT_TARGETS.get(system)
    if workload == "w1-1slot":
        return slot[0] if slot else None
    if workload == "w3-1slot":
        return 1 / slot[1] if slot else None
    return {"w1": 5.0, "w3": 2.0}.get(workload)


def chart(results: dict[str, Any], path: str) -> bool:
    """Bar charts of qrt's headline ratios to the best peer and of W1's rates; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    mine = [s for s in results["systems"] if s.startswith("qrt")]
    ratios: dict[str, list[float]] = {}
    specs = [("W1 throughput\n(x best peer)", "w1", "end_to_end_rate", max, False),
             ("W2 p50 latency\n(best peer / qrt)", "w2", "start_latency_p50_ms", min, True),
             ("W3 round trip p50\n(best peer / qrt)", "w3", "roundtrip_p50_ms", min, True),
             ("W1, 1 slot\n(x best peer)", "w1-1slot", "end_to_end_rate", max, False),
             ("W3 p50, 1 slot\n(best peer / qrt)", "w3-1slot", "roundtrip_p50_ms", min, True)]
    labels: list[str] = []
    targets: list[list[float | None]] = []
    for label, workload, key, pick, inverse in specs:
        best = best_peer(results, workload, key, pick)
        values = [figure(results, s, workload, key) for s in mine]
        if not best or None in values:
            continue
        labels.append(label)
        targets.append([advantage_target(s, workload) for s in mine])
        for s, v in zip(mine, values, strict=True):
            assert v is not None
            ratios.setdefault(s, []).append(best[1] / v if inverse else v / best[1])
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 4.8), width_ratios=[4, 2, 2])
    width = 0.8 / max(1, len(mine))
    for i, s in enumerate(mine):
        xs = [j + i * width for j in range(len(labels))]
        bars = left.bar(xs, ratios.get(s, []), width, label=s)
        left.bar_label(bars, fmt="%.1fx", fontsize=8)
    labelled = False
    for j, group in enumerate(targets):  # the issues' targets, each over its system's bar
        for i, target in enumerate(group):
            if target is not None:
                x = j + i * width
                left.hlines(target, x - width / 2, x + width / 2, colors="red", linestyles="dashed",
                            label=None if labelled else "target")
                labelled = True
    left.axhline(1, color="grey", linewidth=0.8)
    left.set_xticks([j + width * (len(mine) - 1) / 2 for j in range(len(labels))], labels)
    left.set_ylabel("qrt's advantage (higher is better)")
    left.set_title("qrt against the best peer, same machine, same run")
    left.legend()
    systems = list(results["systems"])
    colors = ["C0" if s.startswith("qrt") else "C7" for s in systems]
    rates = [figure(results, s, "w1", "end_to_end_rate") or 0 for s in systems]
    bars = middle.bar(systems, rates, color=colors)
    middle.bar_label(bars, fmt="%.0f", fontsize=8)
    middle.set_yscale("log")
    middle.set_ylabel("tasks/s (log)")
    tasks = results["params"]["sizes"].get("w1", {}).get("tasks", 0)
    middle.set_title(f"W1: {tasks:,} no-op tasks, end to end")
    busiest = [figure(results, s, "w6", "busiest_1s_window", "worst") for s in systems]
    right.set_title("W6: busiest 1 s of handler starts")
    if any(b is not None for b in busiest):
        bars = right.bar(systems, [b or 0 for b in busiest], color=colors)
        right.bar_label(bars, fmt="%.0f", fontsize=8)
        right.axhline(RATE_LIMIT, color="red", linestyle="dashed", label=f"limit {RATE_LIMIT}/s")
        right.set_ylabel("starts")
        right.legend()
    else:  # (--workloads without w6): an empty panel, not a row of zeros that reads as a result
        right.text(0.5, 0.5, "W6 was not run", ha="center", va="center", transform=right.transAxes)
        right.set_xticks([])
        right.set_yticks([])
    for ax in (middle, right):
        ax.tick_params(axis="x", labelrotation=25)
    fig.suptitle(f"{results['date']}, {results['machine']['cpu_model']}, {results['machine']['cores']} cores",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
