"""The load recorder: per-second percentiles and the run's histograms."""

from __future__ import annotations

import datetime as dt
import random

from hdrh.histogram import HdrHistogram

from branchnet.latency import percentiles_ms
from branchnet.loadstats import STAGES, Recorder, _bucket, new_histogram
from common.replies import Reply
from common.results import ResultCode

WALL = 1_800_000_000.0  # Unix time of loop time 0


def _reply(received: float, processed: float) -> Reply:
    return Reply(
        request_id="0001-01-1",
        result=ResultCode.APPROVED,
        reason="approved",
        received_at=dt.datetime.fromtimestamp(WALL + received, dt.UTC),
        processed_at=dt.datetime.fromtimestamp(WALL + processed, dt.UTC),
    )


def _histogram_of(latencies_s: list[float]) -> HdrHistogram:
    """What the recorder used to do: every latency's bucket into an HDR histogram."""
    histogram = new_histogram()
    for seconds in latencies_s:
        us = int(seconds * 1_000_000)
        histogram.record_value(_bucket(us) if us > 0 else 1)
    return histogram


def test_each_second_has_the_percentiles_of_a_histogram_of_its_latencies() -> None:
    # The live line's p50 and p99 no longer come from a histogram scanned every second; they
    # must still be the figures such a histogram gives, warm-up included.
    rng = random.Random(3)
    recorder = Recorder(measure_from=10.0, wall_offset=WALL)
    for second in range(8, 14):  # two seconds of warm-up, then four measured
        latencies = [rng.lognormvariate(-4, 1.2) for _ in range(rng.randint(1, 3000))]
        for latency in latencies:
            intended = second + rng.random() * 0.5
            recorder.on_sent(intended)
            recorder.on_reply(intended, intended, intended + latency, _reply(intended, intended))
        tick = recorder.tick(second + 1.0, 0)
        expected = percentiles_ms(_histogram_of(latencies))
        assert (tick.p50_ms, tick.p99_ms) == (expected["p50"], expected["p99"])
    assert recorder.tick(14.0, 0).p99_ms == 0.0  # a second without answers


def test_the_runs_histograms_hold_every_measured_latency_and_stage() -> None:
    rng = random.Random(5)
    recorder = Recorder(measure_from=1.0, wall_offset=WALL)
    measured: list[float] = []
    host: list[float] = []
    for index in range(5000):
        intended = index / 1000  # the first second is warm-up
        received, processed = intended + 0.002, intended + 0.002 + rng.expovariate(200)
        now = processed + 0.001
        recorder.on_reply(intended, intended, now, _reply(received, processed))
        if intended >= 1.0:
            measured.append(now - intended)
            host.append(processed - received)
        if index % 1000 == 999:
            recorder.tick(intended, 0)
    latency = recorder.latency_ms()
    assert recorder.end_to_end.get_total_count() == len(measured) == 4000
    assert latency["end_to_end"] == percentiles_ms(_histogram_of(measured))
    assert latency["stages"]["host"]["p99"] == percentiles_ms(_histogram_of(host))["p99"]
    assert all(recorder.stages[name].get_total_count() == 4000 for name in STAGES)
