"""The embedded bus: an in-process broker with the AMQP bus's semantics.

:class:`EmbeddedBroker` holds exchanges and queues; each :class:`EmbeddedBus` is one node's
connection to it. Closing a connection (a node going away) returns its unacked deliveries to
their queues as redelivered. Queues are bounded: a publisher waits for space, except for a
message that may be lost, which a full queue drops. A queue with a delivery limit
dead-letters a message requeued more often than that.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.bus import Bus, Delivery, Handler, Message, QueueStats, Subscription
from common.errors import BusClosedError, BusError, UnroutableError
from common.topology import (
    DEAD_EXCHANGE,
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    ORIGIN_HEADER,
    REASON_HEADER,
    ExchangeSpec,
    QueueSpec,
    Topology,
)

_log = logging.getLogger(__name__)

#: Bound for a queue declared without ``max_length``.
DEFAULT_MAX_LENGTH = 100_000


@dataclass(slots=True)
class _Envelope:
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, object]
    redelivered: bool = False
    deliveries: int = 0


@dataclass(slots=True)
class _Exchange:
    spec: ExchangeSpec
    bindings: set[tuple[str, str]] = field(default_factory=set)  # (routing key, queue)

    def route(self, routing_key: str) -> set[str]:
        if self.spec.type == "fanout":
            return {queue for _, queue in self.bindings}
        if self.spec.type == "direct":
            return {queue for key, queue in self.bindings if key == routing_key}
        return {queue for key, queue in self.bindings if _topic_match(key, routing_key)}


def _topic_match(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    return _match_words(pattern.split("."), routing_key.split("."))


def _match_words(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match_words(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match_words(rest, words[1:])


class _Queue:
    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.ready: deque[_Envelope] = deque()
        self.consumers: list[_Consumer] = []
        self.limit = spec.max_length or DEFAULT_MAX_LENGTH
        self.space = asyncio.Condition()

    def is_active(self, consumer: _Consumer) -> bool:
        return not self.spec.single_active_consumer or self.consumers[:1] == [consumer]

    def wake_consumers(self) -> None:
        for consumer in self.consumers:
            consumer.wake.set()

    async def put(self, envelope: _Envelope) -> None:
        async with self.space:
            await self.space.wait_for(lambda: len(self.ready) < self.limit)
            self.ready.append(envelope)
        self.wake_consumers()

    def offer(self, envelope: _Envelope) -> None:
        """Append ``envelope`` if there is room, else drop it."""
        if len(self.ready) < self.limit:
            self.ready.append(envelope)
            self.wake_consumers()

    async def take(self) -> _Envelope:
        envelope = self.ready.popleft()
        async with self.space:
            self.space.notify_all()
        return envelope


class EmbeddedBroker:
    """The in-process broker several :class:`EmbeddedBus` connections share."""

    def __init__(self) -> None:
        self.exchanges: dict[str, _Exchange] = {
            EVENTS_EXCHANGE: _Exchange(ExchangeSpec(EVENTS_EXCHANGE, "topic"))
        }
        self.queues: dict[str, _Queue] = {}

    def connect(self) -> EmbeddedBus:
        """A new, not yet connected, bus on this broker."""
        return EmbeddedBus(self)

    def declare(self, topology: Topology) -> None:
        for exchange in topology.exchanges:
            self.exchanges.setdefault(exchange.name, _Exchange(exchange))
        for queue in topology.queues:
            self.queues.setdefault(queue.name, _Queue(queue))
        for binding in topology.bindings:
            if binding.exchange not in self.exchanges or binding.queue not in self.queues:
                raise BusError(f"cannot bind {binding.queue} to {binding.exchange}: not declared")
            self.exchanges[binding.exchange].bindings.add((binding.routing_key, binding.queue))

    def destinations(self, exchange: str, routing_key: str) -> set[str]:
        if exchange == DEFAULT_EXCHANGE:
            return {routing_key} if routing_key in self.queues else set()
        if exchange not in self.exchanges:
            raise BusError(f"no exchange {exchange!r}")
        return self.exchanges[exchange].route(routing_key)

    async def requeue(self, queue: _Queue, envelopes: Sequence[_Envelope]) -> None:
        """Put envelopes back at the head of ``queue``, dead-lettering any over the limit."""
        limit = queue.spec.delivery_limit
        for envelope in reversed(envelopes):
            envelope.redelivered = True
            if limit is not None and envelope.deliveries > limit:
                await self.dead_letter(queue, envelope, "delivery limit exceeded")
            else:
                queue.ready.appendleft(envelope)
        queue.wake_consumers()

    async def dead_letter(self, queue: _Queue, envelope: _Envelope, reason: str) -> None:
        headers = dict(envelope.headers)
        headers[REASON_HEADER] = reason
        headers[ORIGIN_HEADER] = queue.spec.name
        for name in self.destinations(DEAD_EXCHANGE, envelope.routing_key):
            await self.queues[name].put(
                _Envelope(DEAD_EXCHANGE, envelope.routing_key, envelope.body, headers)
            )


class _EmbeddedDelivery(Delivery):
    def __init__(self, consumer: _Consumer, envelope: _Envelope) -> None:
        self.body = envelope.body
        self.headers = envelope.headers
        self.exchange = envelope.exchange
        self.routing_key = envelope.routing_key
        self.queue = consumer.queue.spec.name
        self.redelivered = envelope.redelivered
        self.envelope = envelope
        self.consumer = consumer
        self.settled = False

    async def ack(self) -> None:
        self._settle()

    async def nack(self, *, requeue: bool = True) -> None:
        if self._settle() and requeue:
            await self.consumer.broker.requeue(self.consumer.queue, [self.envelope])

    def _settle(self) -> bool:
        """Mark settled; False when it already was (or went back when its consumer left)."""
        if self.settled:
            return False
        self.settled = True
        self.consumer.unacked.pop(id(self), None)
        self.consumer.wake.set()
        return True


class _Consumer(Subscription):
    def __init__(
        self, broker: EmbeddedBroker, queue: _Queue, handler: Handler, prefetch: int
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.handler = handler
        self.prefetch = max(1, prefetch)
        self.unacked: dict[int, _EmbeddedDelivery] = {}
        self.wake = asyncio.Event()
        self.cancelled = False
        self.task = asyncio.create_task(self._run(), name=f"consume:{queue.spec.name}")

    async def _run(self) -> None:
        while not self.cancelled:
            queue = self.queue
            if len(self.unacked) < self.prefetch and queue.ready and queue.is_active(self):
                envelope = await queue.take()
                envelope.deliveries += 1
                delivery = _EmbeddedDelivery(self, envelope)
                self.unacked[id(delivery)] = delivery
                try:
                    await self.handler(delivery)
                except Exception:
                    _log.exception("consumer of %s failed; message requeued", queue.spec.name)
                    await delivery.nack(requeue=True)
                continue
            self.wake.clear()
            await self.wake.wait()

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.wake.set()
        if self.task is not asyncio.current_task():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)
        self.queue.wake_consumers()
        pending = list(self.unacked.values())
        self.unacked.clear()
        for delivery in pending:
            delivery.settled = True
        await self.broker.requeue(self.queue, [d.envelope for d in pending])


class EmbeddedBus(Bus):
    """One connection to an :class:`EmbeddedBroker`."""

    _names = itertools.count(1)

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.name = f"embedded-{next(self._names)}"
        self._consumers: list[_Consumer] = []
        self._open = False

    async def connect(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.cancel()

    def _check_open(self) -> None:
        if not self._open:
            raise BusClosedError("the bus is closed")

    async def declare(self, topology: Topology) -> None:
        self._check_open()
        self.broker.declare(topology)

    async def publish(self, messages: Sequence[Message]) -> None:
        self._check_open()
        unroutable: list[str] = []
        for message in messages:
            names = self.broker.destinations(message.exchange, message.routing_key)
            if not names and message.mandatory:
                unroutable.append(f"{message.exchange or '(default)'}/{message.routing_key}")
            for name in names:
                envelope = _Envelope(
                    message.exchange, message.routing_key, message.body, dict(message.headers)
                )
                if message.may_be_lost:
                    self.broker.queues[name].offer(envelope)
                else:
                    await self.broker.queues[name].put(envelope)
        if unroutable:
            raise UnroutableError(f"unroutable: {', '.join(sorted(set(unroutable)))}")

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        self._check_open()
        if queue not in self.broker.queues:
            raise BusError(f"no queue {queue!r}")
        target = self.broker.queues[queue]
        consumer = _Consumer(self.broker, target, handler, prefetch)
        target.consumers.append(consumer)
        self._consumers.append(consumer)
        return consumer

    async def queue_stats(self, queue: str) -> QueueStats:
        self._check_open()
        if queue not in self.broker.queues:
            raise BusError(f"no queue {queue!r}")
        target = self.broker.queues[queue]
        return QueueStats(queue, len(target.ready), len(target.consumers))
