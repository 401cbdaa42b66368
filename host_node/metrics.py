"""The host's Prometheus metrics: per-answer observations and a collector over its statistics."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.metrics import REQUEST_SECONDS, REQUESTS, STAGE_SECONDS
from common.replies import Reply
from host_node.intake import Item

if TYPE_CHECKING:
    from host_node.service import HostStatistics


def observe_answers(answered: Sequence[tuple[Item, Reply]], at: dt.datetime) -> None:
    """Count answers by kind and result; record host latency per request, queue wait per frame.

    A frame's records share their received and unpacked times, so their latencies are equal:
    each frame's are observed at once (:func:`observe_many`).
    """
    counts: Counter[tuple[str, str]] = Counter()
    frames: Counter[tuple[dt.datetime, dt.datetime]] = Counter()
    for item, reply in answered:
        counts[(item.kind, reply.result.value)] += 1
        frames[(item.received_at, item.unpacked_at)] += 1
    queue_wait = _stage("queue_wait")
    for (received_at, unpacked_at), records in frames.items():
        observe_many(REQUEST_SECONDS, max(0.0, (at - received_at).total_seconds()), records)
        queue_wait.observe(max(0.0, (unpacked_at - received_at).total_seconds()))
    for (kind, result), count in counts.items():
        _requests(kind, result).inc(count)


# A labelled child looked up once (labels() costs more than the inc or observe it is for);
# kinds and result codes are a small closed set.
_requests = functools.cache(REQUESTS.labels)
_stage = functools.cache(STAGE_SECONDS.labels)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """What ``count`` calls of ``histogram.observe(amount)`` record, at the cost of one.

    prometheus_client has no such call, so this adds to the histogram's sum and bucket as its
    ``observe`` does (0.2x: tests/host_node/test_metrics.py holds the two to the same output,
    and any other histogram, e.g. one with labels unresolved, takes the plain calls).
    """
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if count == 1 or buckets is None or bounds is None or total is None:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    for bucket, bound in zip(buckets, bounds, strict=True):
        if amount <= bound:
            bucket.inc(count)
            break


class HostCollector(Collector):
    """Frames, records, batches and queue depths, read from the host at scrape time."""

    def __init__(self, statistics: Callable[[], HostStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._statistics()
        frames = CounterMetricFamily(
            "branchnet_frames", "Request frames the host took, by outcome.", labels=["outcome"]
        )
        frames.add_metric(["handled"], stats.frames)
        frames.add_metric(["dead_lettered"], stats.dead_frames)
        yield frames
        records = CounterMetricFamily(
            "branchnet_records", "Request records the host took, by outcome.", labels=["outcome"]
        )
        records.add_metric(["decoded"], stats.records - stats.dead_records)
        records.add_metric(["dead_lettered"], stats.dead_records)
        yield records
        yield CounterMetricFamily("branchnet_batches", "Batches committed.", value=stats.batches)
        depth = GaugeMetricFamily(
            "branchnet_host_queue_depth",
            "What waits inside the host: frames in the inbox, records carried to the next "
            "batch, PIN commands awaiting the crypto node.",
            labels=["queue"],
        )
        depth.add_metric(["inbox"], stats.inbox)
        depth.add_metric(["carried"], stats.carried)
        depth.add_metric(["pin_pending"], stats.pin_pending)
        yield depth
        yield GaugeMetricFamily(
            "branchnet_journal_sequence", "The journal's last sequence number.", stats.journal_seq
        )
