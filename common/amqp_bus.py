"""The AMQP bus: :class:`~common.bus.Bus` over RabbitMQ with aio-pika.

One robust connection per bus. Publishing uses one channel in confirm mode: a batch is put
on the wire within a window of ``confirm_window`` unconfirmed messages and the call returns
when the broker has confirmed all of them. A bounded queue that is full nacks a publish
(``x-overflow: reject-publish``); the bus then retries that message with backoff until it is
accepted, so a full queue slows publishers down and never loses a message. Each consumer has
its own channel, so its prefetch bound and, on cancel, the return of its unacked deliveries
stay its own. Handlers run one delivery at a time per consumer, as on the embedded bus.

When the connection drops, aio-pika reconnects and restores channels and consumers;
publishes in flight are retried once the channel is back (a lost confirm may duplicate a
message: consumers are idempotent by request id) or fail with :class:`BusError` after
``reconnect_timeout_s``. Deliveries received before the drop are not handed to handlers:
the broker redelivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar, cast

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.exceptions import (
    AMQPError,
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from pamqp import commands as spec
from pamqp.common import Arguments
from yarl import URL

from common.bus import Bus, Delivery, Handler, Message, QueueStats, Subscription
from common.errors import BusClosedError, BusError, UnroutableError
from common.metrics import RECONNECTS
from common.topology import (
    DEAD_EXCHANGE,
    ORIGIN_HEADER,
    REASON_HEADER,
    Binding,
    ExchangeSpec,
    QueueSpec,
    Topology,
)

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: What RabbitMQ's ``x-first-death-reason`` means, in the words the embedded bus uses.
DEATH_REASONS: Mapping[str, str] = {
    "delivery_limit": "delivery limit exceeded",
    "rejected": "rejected by a consumer",
    "expired": "expired",
    "maxlen": "queue full",
}

#: Failures after which the channel or connection comes back by itself.
_TRANSIENT = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)


def queue_arguments(spec: QueueSpec) -> Arguments:
    """The ``x-`` arguments that give a queue the behaviour its spec asks for.

    Raises:
        BusError: ``delivery_limit`` on a classic queue (only quorum queues count deliveries).
    """
    arguments: dict[str, object] = {}
    if spec.quorum:
        arguments["x-queue-type"] = "quorum"
    if spec.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    if spec.max_length is not None:
        arguments["x-max-length"] = spec.max_length
        arguments["x-overflow"] = "reject-publish"
    if spec.delivery_limit is not None:
        if not spec.quorum:
            raise BusError(f"queue {spec.name}: a delivery limit needs a quorum queue")
        arguments["x-delivery-limit"] = spec.delivery_limit
        arguments["x-dead-letter-exchange"] = DEAD_EXCHANGE
    return arguments  # type: ignore[return-value]


def delivery_headers(headers: Mapping[str, object], queue: str) -> dict[str, object]:
    """Headers as a consumer sees them: a message RabbitMQ dead-lettered itself (``x-death``)
    gets the same reason and origin headers as one moved by :meth:`Bus.dead_letter`."""
    seen = dict(headers)
    death = seen.get("x-first-death-reason")
    if death is not None and REASON_HEADER not in seen:
        seen[REASON_HEADER] = DEATH_REASONS.get(str(death), str(death))
        seen[ORIGIN_HEADER] = str(seen.get("x-first-death-queue", queue))
    return seen


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    parsed = URL(url)
    return str(parsed.with_password(None)) if parsed.password else url


class _Backoff:
    """Exponential delays with jitter, from ``first`` up to ``cap`` seconds."""

    def __init__(self, first: float = 0.01, cap: float = 1.0) -> None:
        self.delay = first
        self.cap = cap

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.delay * 2, self.cap)


class _AmqpDelivery(Delivery):
    def __init__(self, message: AbstractIncomingMessage, queue: str) -> None:
        self.body = message.body
        self.headers = delivery_headers(message.headers, queue)
        self.exchange = message.exchange or ""
        self.routing_key = message.routing_key or ""
        self.queue = queue
        self.redelivered = bool(message.redelivered)
        self._message = message
        self._settled = False

    async def ack(self) -> None:
        if self._settle():
            await self._quietly(self._message.ack())

    async def nack(self, *, requeue: bool = True) -> None:
        if self._settle():
            await self._quietly(self._message.nack(requeue=requeue))

    def _settle(self) -> bool:
        settled, self._settled = self._settled, True
        return not settled

    async def _quietly(self, settling: Awaitable[None]) -> None:
        # A delivery from a channel that has since closed is back in its queue already.
        try:
            await settling
        except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            _log.info(
                "could not settle a delivery from %s (%s); it is redelivered", self.queue, exc
            )


class _AmqpSubscription(Subscription):
    """A consumer on its own channel; one worker runs the handler for each delivery in turn."""

    def __init__(
        self, bus: AmqpBus, channel: AbstractRobustChannel, queue: str, handler: Handler
    ) -> None:
        self._bus = bus
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._cancelled = False
        self._consumer: tuple[AbstractQueue, str] | None = None
        self._worker = asyncio.create_task(self._run(), name=f"consume:{queue}")

    async def start(self) -> None:
        amqp_queue = await self._channel.get_queue(self._queue, ensure=True)
        self._consumer = (amqp_queue, await amqp_queue.consume(self._receive))

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def _run(self) -> None:
        while not self._cancelled:
            message = await self._inbox.get()
            try:
                message.channel  # noqa: B018 - raises when the channel has gone
            except ChannelInvalidStateError:
                continue  # the broker already put it back
            delivery = _AmqpDelivery(message, self._queue)
            try:
                await self._handler(delivery)
            except Exception:
                _log.exception("consumer of %s failed; message requeued", self._queue)
                await delivery.nack(requeue=True)

    async def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._bus._subscriptions.discard(self)
        if self._worker is not asyncio.current_task():
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        # Closing the channel hands its unacked deliveries back to the queue.
        if self._consumer is not None:
            amqp_queue, consumer_tag = self._consumer
            with contextlib.suppress(*_TRANSIENT):
                await amqp_queue.cancel(consumer_tag)
        with contextlib.suppress(*_TRANSIENT):
            await self._channel.close()


class _AdminChannel:
    """A plain channel for declarations and passive declares, reopened after a channel error
    (the broker closes a channel on NOT_FOUND or PRECONDITION_FAILED)."""

    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def run(self, operation: Callable[[aiormq.abc.AbstractChannel], Awaitable[_T]]) -> _T:
        return await operation(await self._open())

    async def _open(self) -> aiormq.abc.AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                await self._connection.ready()
                transport = self._connection.transport
                if transport is None:
                    raise BusError("the broker connection is not ready")
                self._channel = await transport.connection.channel(publisher_confirms=False)
            return self._channel

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*_TRANSIENT):
                await self._channel.close()
        self._channel = None


class _ClosingRobustConnection(aio_pika.RobustConnection):
    """A robust connection that closes itself when its first connect fails.

    aio-pika drops such a connection (say, to a vhost that is gone) unclosed; its
    ``__del__`` then makes a ``close()`` coroutine that nothing awaits when the garbage
    collector runs outside the event loop.
    """

    async def connect(self, timeout: aiormq.abc.TimeoutType = None) -> None:
        try:
            await super().connect(timeout)
        except BaseException:
            await self.close()
            raise


class AmqpBus(Bus):
    """One connection to RabbitMQ.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        name: the connection name the broker shows (management UI, ``list_connections``).
        confirm_window: most published messages awaiting their confirm at once.
        confirm_timeout_s: how long one message may wait for its confirm before it is re-sent.
        reconnect_timeout_s: how long a publish waits for a lost connection to come back.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "branchnet",
        confirm_window: int = 1024,
        confirm_timeout_s: float = 30.0,
        reconnect_timeout_s: float = 60.0,
        reconnect_interval_s: float = 1.0,
    ) -> None:
        self.url = url
        self.name = name
        self._confirm_window = max(1, confirm_window)
        self._confirm_timeout_s = confirm_timeout_s
        self._reconnect_timeout_s = reconnect_timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._admin: _AdminChannel | None = None
        self._subscriptions: set[_AmqpSubscription] = set()

    def __repr__(self) -> str:
        return f"AmqpBus({redact_url(self.url)!r}, name={self.name!r})"

    async def connect(self) -> None:
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(
                self.url,
                client_properties={"connection_name": self.name},
                connection_class=_ClosingRobustConnection,
                reconnect_interval=self._reconnect_interval_s,
                timeout=self._reconnect_timeout_s,
            )
        except (AMQPError, OSError, TimeoutError) as exc:
            raise BusError(f"cannot connect to {redact_url(self.url)}: {exc}") from exc
        try:
            self._publisher = await connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        except BaseException:
            await connection.close()
            raise
        self._admin = _AdminChannel(connection)
        self._connection = connection
        reconnects = RECONNECTS.labels(self.name)
        connection.reconnect_callbacks.add(lambda *_: reconnects.inc())

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        for subscription in list(self._subscriptions):
            await subscription.cancel()
        if self._admin is not None:
            await self._admin.close()
        if connection is not None:
            await connection.close()
        self._publisher = self._admin = None

    def _require(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel, _AdminChannel]:
        if self._connection is None or self._publisher is None or self._admin is None:
            raise BusClosedError("the bus is closed")
        return self._connection, self._publisher, self._admin

    # -- topology --------------------------------------------------------------------------

    async def declare(self, topology: Topology) -> None:
        _, _, admin = self._require()
        for exchange in topology.exchanges:
            await self._declare_exchange(admin, exchange)
        for queue in topology.queues:
            await self._declare_queue(admin, queue)
        for binding in topology.bindings:
            await self._bind(admin, binding)

    async def _declare_exchange(self, admin: _AdminChannel, exchange: ExchangeSpec) -> None:
        if not exchange.name or exchange.name.startswith("amq."):
            return  # predeclared by the broker; declaring amq.* is refused
        try:
            await admin.run(
                lambda ch: ch.exchange_declare(
                    exchange=exchange.name, exchange_type=exchange.type, durable=exchange.durable
                )
            )
        except ChannelPreconditionFailed as exc:
            _log.warning("exchange %s exists with other settings (%s); kept", exchange.name, exc)
        except ChannelAccessRefused:
            _log.debug("exchange %s is not ours to declare (provisioned up front)", exchange.name)

    async def _declare_queue(self, admin: _AdminChannel, queue: QueueSpec) -> None:
        arguments = queue_arguments(queue)
        try:
            await admin.run(
                lambda ch: ch.queue_declare(
                    queue=queue.name, durable=queue.durable or queue.quorum, arguments=arguments
                )
            )
        except ChannelPreconditionFailed as exc:
            # Declared earlier with other arguments: RabbitMQ cannot change them in place.
            _log.warning("queue %s exists with other settings (%s); kept", queue.name, exc)
        except ChannelAccessRefused:
            # A node user without configure permission: `branchnet broker provision` declared
            # the whole topology up front.
            _log.debug("queue %s is not ours to declare (provisioned up front)", queue.name)

    async def _bind(self, admin: _AdminChannel, binding: Binding) -> None:
        try:
            await admin.run(
                lambda ch: ch.queue_bind(
                    queue=binding.queue, exchange=binding.exchange, routing_key=binding.routing_key
                )
            )
        except ChannelNotFoundEntity as exc:
            raise BusError(
                f"cannot bind {binding.queue} to {binding.exchange}: not declared"
            ) from exc
        except ChannelAccessRefused:
            _log.debug("binding of %s is not ours to declare (provisioned up front)", binding.queue)

    async def queue_stats(self, queue: str) -> QueueStats:
        _, _, admin = self._require()
        try:
            declared = await admin.run(lambda ch: ch.queue_declare(queue=queue, passive=True))
        except ChannelNotFoundEntity as exc:
            raise BusError(f"no queue {queue!r}") from exc
        return QueueStats(queue, declared.message_count or 0, declared.consumer_count or 0)

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Message]) -> None:
        _, publisher, _ = self._require()
        window = asyncio.Semaphore(self._confirm_window)
        in_flight: list[asyncio.Task[str | None]] = []
        try:
            for message in messages:
                await window.acquire()
                task = asyncio.create_task(self._publish_one(publisher, message))
                task.add_done_callback(lambda _: window.release())
                in_flight.append(task)
            outcomes = await asyncio.gather(*in_flight)
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        unroutable = sorted({outcome for outcome in outcomes if outcome is not None})
        if unroutable:
            raise UnroutableError(f"unroutable: {', '.join(unroutable)}")

    async def _publish_one(self, publisher: AbstractRobustChannel, message: Message) -> str | None:
        """Publish until confirmed; the label of an unroutable message, else None."""
        properties = spec.Basic.Properties(
            delivery_mode=1 if message.transient else 2,
            headers=dict(message.headers) if message.headers else None,
        )
        full = _Backoff()
        lost = _Backoff(first=0.05)
        lost_since: float | None = None
        while True:
            try:
                # The concrete aiormq channel: wait=False does not hold its lock until the
                # frame is written, the confirm window bounds what is queued instead.
                channel = cast(aiormq.Channel, await publisher.get_underlay_channel())
                await channel.basic_publish(
                    message.body,
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    properties=properties,
                    mandatory=message.mandatory,
                    timeout=self._confirm_timeout_s,
                    wait=False,
                )
                return None
            except PublishError:
                return f"{message.exchange or '(default)'}/{message.routing_key}"
            except DeliveryError:
                await full.sleep()  # nacked: a bounded queue is full; push back, never drop
            except ChannelNotFoundEntity as exc:
                if f"exchange '{message.exchange}'" in str(exc):
                    raise BusError(f"no exchange {message.exchange!r}") from exc
                lost_since = await self._await_channel(publisher, lost, lost_since, exc)
            except _TRANSIENT as exc:
                lost_since = await self._await_channel(publisher, lost, lost_since, exc)

    async def _await_channel(
        self,
        publisher: AbstractRobustChannel,
        backoff: _Backoff,
        lost_since: float | None,
        cause: BaseException,
    ) -> float:
        """Wait for the publishing channel to come back, or give up after the reconnect
        timeout; returns when the outage began."""
        now = time.monotonic()
        since = now if lost_since is None else lost_since
        if self._connection is None:
            raise BusClosedError("the bus was closed while publishing") from cause
        remaining = self._reconnect_timeout_s - (now - since)
        if remaining <= 0:
            raise BusError(f"publish failed, the broker is unreachable: {cause}") from cause
        await backoff.sleep()
        try:
            await asyncio.wait_for(publisher.ready(), timeout=remaining)
        except TimeoutError as exc:
            raise BusError(f"publish failed, the broker is unreachable: {cause}") from exc
        return since

    # -- consuming -------------------------------------------------------------------------

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        connection, _, _ = self._require()
        await self.queue_stats(queue)  # BusError for a missing queue, before a channel dies
        channel = connection.channel(publisher_confirms=False)
        await channel.initialize()
        subscription: _AmqpSubscription | None = None
        try:
            await channel.set_qos(prefetch_count=max(1, prefetch))
            subscription = _AmqpSubscription(self, channel, queue, handler)
            await subscription.start()
        except BaseException as exc:
            if subscription is not None:
                await subscription.cancel()
            else:
                await channel.close()
            if isinstance(exc, ChannelNotFoundEntity):
                raise BusError(f"no queue {queue!r}") from exc
            raise
        self._subscriptions.add(subscription)
        return subscription
