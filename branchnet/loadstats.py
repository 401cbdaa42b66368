"""What a load test measures: counters, latency histograms per stage, a per-second timeline.

Latency is measured from each request's **intended** send time (open model), so a stalled
generator or system shows up as latency instead of hiding behind fewer requests (no coordinated
omission). Besides end to end, a reply's host timestamps split each latency into stages:

- ``schedule``: intended → handed to the request client (the generator's own lateness);
- ``to_host``: → the host received the frame (client batching, broker, host prefetch);
- ``host``: → the host decided it (inbox wait, unpacking, store reads, PIN round trip);
- ``from_host``: → the reply reached the generator (commit, reply frame, broker, decoding).

Recording one value in an HDR histogram costs microseconds in Python, too much per reply at
thousands a second; values are first counted in buckets of 8 significant bits (< 0.8 % error)
and added to the HDR histograms (1 µs to 10 min, 3 significant digits) when those are read.
Each second's p50 and p99 (the live line) come from that second's buckets directly, with the
HDR histogram's rounding: the same figures as from a histogram of the second, without a scan
of its 30,000 counters in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from branchnet.latency import percentiles_ms
from common.replies import Reply

_MAX_US = 600_000_000
STAGES = ("schedule", "to_host", "host", "from_host")
#: Result codes that mean the system failed, not that the bank said no.
SYSTEM_CODES = frozenset({"30", "91", "96"})
#: Points of the percentile spectrum in a report (and its plot).
SPECTRUM = (
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
)  # fmt: skip


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, _MAX_US, 3)


def _bucket(us: int) -> int:
    """``us`` within 1 .. ``_MAX_US``, rounded down to 8 significant bits, plus half a bucket.

    Called five times per reply: one call, no helpers.
    """
    if us < 256:
        return us if us > 0 else 1
    if us > _MAX_US:
        us = _MAX_US
    shift = us.bit_length() - 8
    return ((us >> shift) << shift) + (1 << (shift - 1))


class _Tally:
    """Latencies counted by bucket until :meth:`flush` adds them to histograms."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def add(self, seconds: float) -> None:
        self.counts[_bucket(int(seconds * 1_000_000))] += 1

    def flush(self, *histograms: HdrHistogram) -> None:
        for value, count in self.counts.items():
            for histogram in histograms:
                histogram.record_value(value, count)
        self.counts.clear()

    def move_to(self, other: _Tally) -> None:
        """Add these counts to ``other``'s and start again."""
        other.counts.update(self.counts)
        self.counts.clear()


def tally_percentile_ms(tallies: Iterable[_Tally], percentile: float, scale: HdrHistogram) -> float:
    """The ``percentile`` of the tallied values in ms, as :func:`percentiles_ms` would give it
    for an HDR histogram of them (``scale`` lends its rounding); 0.0 when there are none."""
    counts: Counter[int] = Counter()
    for tally in tallies:
        counts.update(tally.counts)
    total = counts.total()
    if total == 0:
        return 0.0
    target = max(1, int(percentile * total / 100 + 0.5))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= target:
            break
    highest: int = scale.get_highest_equivalent_value(value)
    return round(highest / 1000, 3)


@dataclass(frozen=True, slots=True)
class Tick:
    """One second of a run, as the live line shows it and the timeline keeps it."""

    t: float
    sent: int
    answered: int
    errors: int
    in_flight: int
    p50_ms: float
    p99_ms: float
    host_rss_mb: float | None = None

    def as_json(self) -> dict[str, Any]:
        document = {
            "t": round(self.t, 3),
            "sent": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }
        if self.host_rss_mb is not None:
            document["host_rss_mb"] = self.host_rss_mb
        return document


@dataclass(slots=True)
class Recorder:
    """Counts and latencies of one load run; requests before ``measure_from`` only count.

    The achieved rate is the answers that arrived between ``measure_from`` and
    ``measure_until``, per second of that window.

    Times are the event loop's clock (seconds); ``wall_offset`` turns them into Unix time to
    compare with the host's timestamps.
    """

    measure_from: float
    wall_offset: float
    measure_until: float = float("inf")
    #: Answers (to any request) that arrived inside the measured window: the achieved rate.
    window_answers: int = 0
    sent: int = 0
    answered: int = 0
    timeouts: int = 0
    errors: int = 0
    warmup_answered: int = 0
    measured_sent: int = 0
    measured_answered: int = 0
    last_answer: float = 0.0
    by_result: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    end_to_end: HdrHistogram = field(default_factory=new_histogram)
    stages: dict[str, HdrHistogram] = field(
        default_factory=lambda: {name: new_histogram() for name in STAGES}
    )
    timeline: list[Tick] = field(default_factory=list)
    #: Lends its rounding to the per-second percentiles (holds no values).
    _scale: HdrHistogram = field(default_factory=new_histogram)
    #: This second's latencies, warm-up and measured (for its percentiles).
    _warmup: _Tally = field(default_factory=_Tally)
    _second: _Tally = field(default_factory=_Tally)
    #: Measured latencies of the seconds before, and the stages', not yet in the histograms.
    _tallies: dict[str, _Tally] = field(
        default_factory=lambda: {name: _Tally() for name in ("end_to_end", *STAGES)}
    )
    #: This second's measured answers (intended, sent, now, received_at, processed_at), tallied
    #: at its end: keeping a tuple per reply costs less than five tally calls.
    _answers: list[tuple[float, float, float, dt.datetime, dt.datetime]] = field(
        default_factory=list
    )

    def on_sent(self, intended: float) -> None:
        self.sent += 1
        if intended >= self.measure_from:
            self.measured_sent += 1

    def on_reply(self, intended: float, sent: float, now: float, reply: Reply) -> None:
        """A reply arrived at ``now`` for a request meant for ``intended``, sent at ``sent``."""
        self.answered += 1
        if self.measure_from <= now < self.measure_until:
            self.window_answers += 1
        code = reply.result.value
        if code in SYSTEM_CODES:
            self.errors += 1
        if intended < self.measure_from:
            self.warmup_answered += 1
            self._warmup.add(now - intended)
            return
        self.measured_answered += 1
        self.last_answer = now
        self.by_result[code] += 1
        self._answers.append((intended, sent, now, reply.received_at, reply.processed_at))

    def _tally_answers(self) -> None:
        """Tally the answers kept since the last time: end to end and every stage."""
        offset, bucket = self.wall_offset, _bucket
        second, tallies = self._second.counts, self._tallies
        schedule, to_host = tallies["schedule"].counts, tallies["to_host"].counts
        host, from_host = tallies["host"].counts, tallies["from_host"].counts
        for intended, sent, now, received_at, processed_at in self._answers:
            received = received_at.timestamp() - offset
            processed = processed_at.timestamp() - offset
            second[bucket(int((now - intended) * 1_000_000))] += 1
            schedule[bucket(int((sent - intended) * 1_000_000))] += 1
            to_host[bucket(int((received - sent) * 1_000_000))] += 1
            host[bucket(int((processed - received) * 1_000_000))] += 1
            from_host[bucket(int((now - processed) * 1_000_000))] += 1
        self._answers.clear()

    def on_failure(self, intended: float, error: BaseException, *, timeout: bool) -> None:
        self.errors += 1
        if timeout:
            self.timeouts += 1
        else:
            self.failures[type(error).__name__] += 1

    def tick(self, t: float, in_flight: int, host_rss_mb: float | None = None) -> Tick:
        """Close the second that ends at run time ``t`` and keep it in the timeline.

        The second's percentiles cover the warm-up too; the run's histograms do not.
        """
        self._tally_answers()
        second = (self._second, self._warmup)
        p50 = tally_percentile_ms(second, 50.0, self._scale)
        p99 = tally_percentile_ms(second, 99.0, self._scale)
        self._second.move_to(self._tallies["end_to_end"])
        self._warmup.counts.clear()
        point = Tick(t, self.sent, self.answered, self.errors, in_flight, p50, p99, host_rss_mb)
        self.timeline.append(point)
        return point

    def flush(self) -> None:
        """Add every tallied latency to the run's histograms (before reading them)."""
        self._tally_answers()
        self._warmup.counts.clear()
        self._second.move_to(self._tallies["end_to_end"])
        self._tallies["end_to_end"].flush(self.end_to_end)
        for name in STAGES:
            self._tallies[name].flush(self.stages[name])

    def latency_ms(self) -> dict[str, Any]:
        self.flush()
        return {
            "end_to_end": percentiles_ms(self.end_to_end),
            "stages": {name: percentiles_ms(self.stages[name]) for name in STAGES},
        }

    def spectrum_ms(self) -> list[tuple[float, float]]:
        """(percentile, latency in ms) pairs of the end-to-end histogram."""
        self.flush()
        if self.end_to_end.get_total_count() == 0:
            return []
        return [(p, round(self.end_to_end.get_value_at_percentile(p) / 1000, 3)) for p in SPECTRUM]


def by_result_json(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))
