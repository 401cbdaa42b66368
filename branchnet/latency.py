"""Latency percentiles over an HDR histogram (microsecond resolution, up to 10 minutes)."""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

_MAX_US = 600_000_000


def histogram(latencies_s: Iterable[float]) -> HdrHistogram:
    """An HDR histogram of latencies given in seconds."""
    hist = HdrHistogram(1, _MAX_US, 3)
    for seconds in latencies_s:
        hist.record_value(min(_MAX_US, max(1, round(seconds * 1_000_000))))
    return hist


def percentiles_ms(hist: HdrHistogram) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max in milliseconds (zeros for an empty histogram)."""
    if hist.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0}
    points = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
    result = {name: hist.get_value_at_percentile(p) / 1000 for name, p in points.items()}
    result["max"] = hist.get_max_value() / 1000
    return {name: round(value, 3) for name, value in result.items()}
