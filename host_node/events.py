"""The event publisher: ops events and stats to ``amq.topic``, never in the way of a transaction.

Anyone on the host may hand it an event with :meth:`EventPublisher.emit` (tier changes,
replication lag, security alerts...); the host service hands it each batch's answers with
:meth:`EventPublisher.on_batch`. Both only append to a **bounded buffer** and return at once:
when the buffer is full the newest are dropped and counted (``statistics().dropped``), so a
slow broker or a slow subscriber costs events, never transaction latency. A background task
turns each batch of answers into events (:func:`~host_node.event_rules.events_for`) and
publishes them as **one message per routing key** ``bank.events.<branch>.<type>``, its body a
JSON array of the batch's events with that key (:func:`common.events.decode_events` reads
it); an emitted event goes as an array of one. A message per event cost the host and the
broker more than everything else about events. Events nobody subscribed to are simply not
routed.

Once per ``stats_interval_s`` another task publishes a :class:`~common.events.StatsSummary`
on ``bank.stats.<node>``: requests per second, host latency percentiles, by result and branch
over the interval, queue depths (from :meth:`watch_queues` and the bus queues named in
``bus_queues``), replication status (:meth:`watch_replication`) and tier counts
(:meth:`watch_tiers`).

Usage by other parts of the host::

    service.events.emit(TierChanged(node="host", branch="0001", at=now, customer=masked_id,
                                    from_tier=None, to_tier=CustomerTier.WEALTH))
    service.events.watch_replication(lambda: ReplicationStatus(mode="sync", lag_entries=0,
                                                               lag_s=0.0))
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from common.bus import Bus, Message
from common.errors import BusError, UnroutableError
from common.events import (
    CustomerTier,
    EventBase,
    EventCounts,
    EventDocument,
    LatencySummary,
    NodeStatus,
    ReplicationStatus,
    StatsSummary,
    encode_documents,
    encode_event,
    encode_events,
)
from common.logs import get_logger
from common.metrics import EVENTS
from common.replies import Reply
from common.topology import EVENTS_EXCHANGE, HOST_REQUESTS, event_key, stats_key
from host_node.event_rules import events_for
from host_node.intake import Item
from host_node.metrics import observe_answers

_log = get_logger(__name__)
#: Latencies kept per stats interval for its percentiles (beyond: the first ones only).
_MAX_SAMPLES = 200_000
EVENTS_PUBLISHED = EVENTS.labels("published")
EVENTS_DROPPED = EVENTS.labels("dropped")


@dataclass(frozen=True, slots=True)
class EventConfig:
    """How the publisher buffers and batches.

    Attributes:
        buffer_bound: answers and events held for publishing; beyond it they are dropped.
        batch_max: messages per publish call (a batch of answers with more routing keys takes
            more calls). Small: where events share the host's connection (one process, one
            bus), a reply frame or a PIN command published meanwhile waits behind the events
            already queued on it.
        stats_interval_s: seconds between stats summaries (0 turns them off).
        outcomes: raise events for answered requests (off: only emitted events and stats).
        stop_grace_s: how long :meth:`EventPublisher.stop` waits for the buffer to drain.
    """

    buffer_bound: int = 20_000
    batch_max: int = 64
    stats_interval_s: float = 1.0
    outcomes: bool = True
    stop_grace_s: float = 2.0

    def __post_init__(self) -> None:
        if self.buffer_bound < 1 or self.batch_max < 1:
            raise ValueError("buffer_bound and batch_max must be at least 1")
        if self.stats_interval_s < 0 or self.stop_grace_s < 0:
            raise ValueError("intervals must not be negative")


@dataclass(frozen=True, slots=True)
class EventStatistics:
    """A snapshot of the publisher (trio ``statistics()`` style).

    ``emitted``, ``dropped`` and ``buffered`` count entries (an answer or an emitted event);
    ``published`` and ``failed`` count events (an answer raises one to three), ``messages``
    the messages that carried the published ones.
    """

    emitted: int
    published: int
    dropped: int
    failed: int
    buffered: int
    buffer_bound: int
    stats_published: int
    messages: int


@dataclass(frozen=True, slots=True)
class _Answers:
    """A batch of answers, accounted for, waiting to become events."""

    answered: Sequence[tuple[Item, Reply]]
    latencies_s: list[float]
    at: dt.datetime


_Entry = EventBase | _Answers


def _size(entry: _Entry) -> int:
    """What an entry counts for against the buffer bound: its answers, or one event."""
    return len(entry.answered) if isinstance(entry, _Answers) else 1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Interval:
    """What happened since the last stats summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.count = 0
        self.by_result: Counter[str] = Counter()
        self.by_branch: Counter[str] = Counter()
        self.latencies_s: list[float] = []

    def record(self, branch_id: str, result: str, latency_s: float) -> None:
        self.count += 1
        self.by_result[result] += 1
        self.by_branch[branch_id] += 1
        if len(self.latencies_s) < _MAX_SAMPLES:
            self.latencies_s.append(latency_s)

    def latency_ms(self) -> LatencySummary:
        if not self.latencies_s:
            return LatencySummary()
        ordered = sorted(self.latencies_s)
        last = len(ordered) - 1

        def at(fraction: float) -> float:
            return round(ordered[min(last, int(fraction * len(ordered)))] * 1000, 3)

        return LatencySummary(p50=at(0.50), p90=at(0.90), p99=at(0.99), max=at(1.0))


class EventPublisher:
    """Publishes a node's events and stats; see the module docstring.

    The caller owns ``bus`` (connected before :meth:`start`). A separate bus connection
    keeps event traffic out of the transaction path's flow control on RabbitMQ.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        node: str = "host",
        role: str = "primary",
        config: EventConfig | None = None,
        bus_queues: Sequence[str] = (),
    ) -> None:
        self.bus = bus
        self.node = node
        self.role = role
        self.config = config or EventConfig()
        self.bus_queues = tuple(bus_queues)
        self._buffer: deque[_Entry] = deque()
        self._buffered = 0
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._interval = _Interval()
        self._requests = 0
        self._batches: deque[tuple[Sequence[tuple[Item, Reply]], dt.datetime]] = deque()
        self._unaccounted = 0
        self._account_wake = asyncio.Event()
        self._counts: Counter[str] = Counter()
        self._queues: Callable[[], Mapping[str, int]] | None = None
        self._replication: Callable[[], ReplicationStatus | None] | None = None
        self._tiers: Callable[[], Mapping[CustomerTier, int] | None] | None = None
        self._last_bus_queues: dict[str, int] = {}

    # -- the API the host calls --------------------------------------------------------------

    def emit(self, event: EventBase) -> bool:
        """Queue ``event`` for publishing; never waits. False when it was dropped."""
        return self._put(event, 1)

    def on_batch(self, answered: Sequence[tuple[Item, Reply]]) -> None:
        """The host's batch hook: hand a batch of answers over for metrics, stats and events.

        Costs one append per batch on the transaction path; the accounting runs in a task
        of its own between batches (it never waits on the broker).
        """
        if self._unaccounted + len(answered) > self.config.buffer_bound:
            self._counts["dropped"] += len(answered)
            EVENTS_DROPPED.inc(len(answered))
            return
        self._unaccounted += len(answered)
        self._batches.append((answered, _now()))
        self._account_wake.set()

    def watch_queues(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Report the depths ``source`` gives (queue name → messages) in every summary."""
        self._queues = source

    def watch_replication(self, source: Callable[[], ReplicationStatus | None]) -> None:
        """Report the replication status ``source`` gives in every summary."""
        self._replication = source

    def watch_tiers(self, source: Callable[[], Mapping[CustomerTier, int] | None]) -> None:
        """Report customer counts per tier in every summary."""
        self._tiers = source

    def statistics(self) -> EventStatistics:
        return EventStatistics(
            emitted=self._counts["emitted"],
            published=self._counts["published"],
            dropped=self._counts["dropped"],
            failed=self._counts["failed"],
            buffered=self._buffered,
            buffer_bound=self.config.buffer_bound,
            stats_published=self._counts["stats"],
            messages=self._counts["messages"],
        )

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start publishing; announces the node as up."""
        if self._tasks:
            return
        self._interval = _Interval()
        self._tasks.append(asyncio.create_task(self._account_loop(), name="events-account"))
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="events-publish"))
        if self.config.stats_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._stats_loop(), name="events-stats"))
        self.emit(NodeStatus(node=self.node, at=_now(), status="up", role=self.role))

    async def stop(self, reason: str = "stopped") -> None:
        """Announce the node as down, publish what the grace period allows, stop."""
        if not self._tasks:
            return
        self.emit(
            NodeStatus(node=self.node, at=_now(), status="down", role=self.role, reason=reason)
        )
        deadline = time.monotonic() + self.config.stop_grace_s
        while (self._buffer or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._buffer:
            self._counts["dropped"] += self._buffered
            EVENTS_DROPPED.inc(self._buffered)
            self._buffer.clear()
            self._buffered = 0
        self._in_flight = 0

    def _put(self, entry: _Entry, size: int) -> bool:
        """Buffer ``entry`` (``size`` answers or events) whole, or drop and count it."""
        self._counts["emitted"] += size
        if self._buffered + size > self.config.buffer_bound:
            self._counts["dropped"] += size
            EVENTS_DROPPED.inc(size)
            return False
        self._buffer.append(entry)
        self._buffered += size
        self._wake.set()
        return True

    async def _account_loop(self) -> None:
        while True:
            if not self._batches:
                self._account_wake.clear()
                await self._account_wake.wait()
            answered, at = self._batches.popleft()
            self._unaccounted -= len(answered)
            self._account(answered, at)
            await asyncio.sleep(0)  # one batch at a time: the host's next batch goes first

    def _account(self, answered: Sequence[tuple[Item, Reply]], at: dt.datetime) -> None:
        observe_answers(answered, at)
        interval = self._interval
        self._requests += len(answered)
        latencies_s = []
        for item, reply in answered:
            latency_s = (at - item.received_at).total_seconds()
            interval.record(item.branch_id, reply.result.value, latency_s)
            latencies_s.append(latency_s)
        if self.config.outcomes and answered:
            self._put(_Answers(answered, latencies_s, at), len(answered))

    async def _publish_loop(self) -> None:
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            entry = self._buffer.popleft()
            size = _size(entry)
            self._buffered -= size
            self._in_flight = size
            try:
                messages = self._messages(entry)
            except Exception:
                self._counts["failed"] += size
                _log.exception("events not built on a defect")
                messages = []
            batch_max = self.config.batch_max
            for start in range(0, len(messages), batch_max):
                await self._publish_some(messages[start : start + batch_max], size)
            self._in_flight = 0

    async def _publish_some(self, messages: Sequence[tuple[Message, int]], size: int) -> None:
        """Publish ``messages`` (each with its count of events) from an entry of ``size``."""
        events = sum(count for _, count in messages)
        try:
            await self._publish([message for message, _ in messages])
            self._counts["published"] += events
            self._counts["messages"] += len(messages)
            EVENTS_PUBLISHED.inc(events)
        except asyncio.CancelledError:
            self._counts["dropped"] += size
            EVENTS_DROPPED.inc(size)
            raise
        except BusError as error:
            self._counts["failed"] += events
            _log.warning("events not published", events=events, error=str(error))
            await asyncio.sleep(1.0)
        except Exception:
            self._counts["failed"] += events
            _log.exception("events not published on a defect")
            await asyncio.sleep(1.0)

    def _messages(self, entry: _Entry) -> list[tuple[Message, int]]:
        """An entry's messages, one per routing key, each with the number of its events."""
        if not isinstance(entry, _Answers):
            key = event_key(entry.branch, entry.type.value)
            return [(_event_message(key, encode_events([entry])), 1)]
        by_key: dict[tuple[str, str], list[EventDocument]] = {}
        node, at = self.node, entry.at
        for (item, reply), latency_s in zip(entry.answered, entry.latencies_s, strict=True):
            for document in events_for(item, reply, node=node, latency_s=latency_s, at=at):
                by_key.setdefault((document["branch"], document["type"]), []).append(document)
        return [
            (_event_message(event_key(branch, kind), encode_documents(documents)), len(documents))
            for (branch, kind), documents in by_key.items()
        ]

    async def _publish(self, messages: Sequence[Message]) -> None:
        with contextlib.suppress(UnroutableError):  # only from a bus that routes strictly
            await self.bus.publish(messages)

    async def _stats_loop(self) -> None:
        interval_s = self.config.stats_interval_s
        while True:
            await asyncio.sleep(interval_s)
            summary = await self._summary()
            message = _event_message(stats_key(self.node), encode_event(summary))
            try:
                # A stuck broker must not pile up summaries: one at a time, never late.
                await asyncio.wait_for(self._publish([message]), timeout=interval_s)
                self._counts["stats"] += 1
            except (TimeoutError, BusError) as error:
                _log.debug("stats not published", error=str(error) or "timeout")

    async def _summary(self) -> StatsSummary:
        interval, self._interval = self._interval, _Interval()
        elapsed = max(1e-6, time.monotonic() - interval.started)
        queues = dict(self._queues()) if self._queues else {}
        for name in self.bus_queues:
            with contextlib.suppress(BusError, TimeoutError):
                stats = await asyncio.wait_for(self.bus.queue_stats(name), timeout=0.5)
                self._last_bus_queues[name] = stats.messages
        queues.update(self._last_bus_queues)
        queues["events_buffer"] = self._buffered
        tiers = self._tiers() if self._tiers else None
        return StatsSummary(
            node=self.node,
            role=self.role,
            at=_now(),
            interval_s=round(elapsed, 3),
            tps=round(interval.count / elapsed, 1),
            requests=self._requests,
            by_result=dict(interval.by_result),
            by_branch=dict(interval.by_branch),
            latency_ms=interval.latency_ms(),
            queues=queues,
            replication=self._replication() if self._replication else None,
            tiers=dict(tiers) if tiers is not None else None,
            events=EventCounts(
                published=self._counts["published"],
                dropped=self._counts["dropped"],
                buffered=self._buffered,
            ),
        )


def _event_message(key: str, body: bytes) -> Message:
    """Events or stats as a message: transient (events may be lost, never in a transaction's
    way) and not mandatory (events nobody subscribed to are not routed: normal, not an error)."""
    return Message(EVENTS_EXCHANGE, key, body, transient=True, mandatory=False)


def host_events(bus: Bus, config: EventConfig | None = None) -> EventPublisher:
    """The primary host's publisher: node ``host``, reporting the ``host.requests`` depth."""
    return EventPublisher(
        bus, node="host", role="primary", config=config, bus_queues=(HOST_REQUESTS,)
    )
