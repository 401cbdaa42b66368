"""Plots of a load-test report: latency over time, and the percentile spectrum (matplotlib).

matplotlib is the optional extra ``plot`` (``pip install 'branchnet[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import ConfigError


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Write a PNG with two panels: per-second p50/p99 and rate, and the latency spectrum.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'branchnet[plot]'") from None
    timeline = report["timeline"]
    figure, (over_time, spectrum) = plt.subplots(2, 1, figsize=(10, 8))
    title = f"branchnet loadtest {report['version']}: {report['model']} model"
    if report["target_rate"]:
        title += f", target {report['target_rate']:,.0f}/s"
    figure.suptitle(f"{title}, achieved {report['achieved_rate']:,.0f}/s")

    seconds = [point["t"] for point in timeline]
    over_time.plot(seconds, [p["p50_ms"] for p in timeline], label="p50")
    over_time.plot(seconds, [p["p99_ms"] for p in timeline], label="p99")
    over_time.set_xlabel("seconds since start")
    over_time.set_ylabel("latency (ms, per second)")
    over_time.grid(True, alpha=0.3)
    if report["warmup_s"]:
        over_time.axvline(report["warmup_s"], color="grey", linestyle=":", label="warm-up end")
    rate_axis = over_time.twinx()
    answered = [p["answered"] for p in timeline]
    rates = [b - a for a, b in zip([0, *answered], answered, strict=False)]
    rate_axis.plot(seconds, rates, color="tab:green", alpha=0.5, label="answered/s")
    rate_axis.set_ylabel("answered per second")
    lines, labels = over_time.get_legend_handles_labels()
    more_lines, more_labels = rate_axis.get_legend_handles_labels()
    over_time.legend(lines + more_lines, labels + more_labels, loc="upper left")

    points = [(p, ms) for p, ms in report["spectrum_ms"] if p < 100.0]
    if points:
        # The usual HDR view: x = 1 / (1 - percentile), so the tail gets the room.
        spectrum.plot([1 / (1 - p / 100) for p, _ in points], [ms for _, ms in points], marker=".")
        spectrum.set_xscale("log")
        ticks = [p for p, _ in points if p in (50.0, 90.0, 99.0, 99.9, 99.99, 99.999)]
        spectrum.set_xticks([1 / (1 - p / 100) for p in ticks], [f"{p:g}%" for p in ticks])
    spectrum.set_xlabel("percentile")
    spectrum.set_ylabel("end-to-end latency (ms)")
    spectrum.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
