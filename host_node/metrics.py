"""The host's Prometheus metrics: per-answer observations and a collector over its statistics."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.metrics import REQUEST_SECONDS, REQUESTS, STAGE_SECONDS
from common.replies import Reply
from host_node.intake import Item

if TYPE_CHECKING:
    from host_node.service import HostStatistics


def observe_answers(answered: Sequence[tuple[Item, Reply]], at: dt.datetime) -> None:
    """Count answers by kind and result; record host latency per request, queue wait per frame."""
    counts: Counter[tuple[str, str]] = Counter()
    frames: set[tuple[dt.datetime, dt.datetime]] = set()
    observe_latency = REQUEST_SECONDS.observe
    for item, reply in answered:
        counts[(item.kind, reply.result.value)] += 1
        frames.add((item.received_at, item.unpacked_at))  # a frame's records share both
        observe_latency(max(0.0, (at - item.received_at).total_seconds()))
    queue_wait = STAGE_SECONDS.labels("queue_wait")
    for received_at, unpacked_at in frames:
        queue_wait.observe(max(0.0, (unpacked_at - received_at).total_seconds()))
    for (kind, result), count in counts.items():
        REQUESTS.labels(kind, result).inc(count)


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
