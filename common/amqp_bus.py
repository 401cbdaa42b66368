"""The AMQP bus: :class:`~common.bus.Bus` over RabbitMQ with aio-pika and aiormq.

One robust connection per bus. Publishing uses one channel in confirm mode: a batch goes on
the wire as one write of up to ``confirm_window`` messages, and the call returns when the
broker has confirmed all of them. A bounded queue that is full nacks a publish
(``x-overflow: reject-publish``); the bus then retries the nacked messages with backoff until
they are accepted, so a full queue slows publishers down and never loses a message. Messages
both transient and not mandatory (events) go on a second channel without confirms: the call
returns once they are queued for the wire, and a full queue drops them.

Each consumer has its own channel, so its prefetch bound and, on cancel, the return of its
unacked deliveries stay its own. Handlers run one delivery at a time per consumer, as on the
embedded bus. Acks and nacks are written at the end of the event loop's turn, all of that
turn's in one write, the acks of a settled run of deliveries as one multiple ack.

The hot path is cheap per message: the bus marshals publishes and acks itself
(:mod:`common.amqp_wire`), keeps one record per published message where aiormq would keep a
future, and consumes on the aiormq channel directly (:mod:`common.amqp_consumer`), without
an aio-pika message and task per delivery. aio-pika still owns the connection and the
channels' lifecycle.

When the connection drops, aio-pika reconnects and reopens the channels, and each consumer
consumes again; publishes in flight are retried once the channel is back (a lost confirm may
duplicate a message: consumers are idempotent by request id) or fail with
:class:`BusError` after ``reconnect_timeout_s``. Deliveries received before the drop are not
handed to handlers, and their settles are dropped: the broker redelivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import ChannelFrame
from aiormq.exceptions import (
    AMQPError,
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    PublishError,
)
from pamqp.common import Arguments
from yarl import URL

from common.amqp_consumer import TRANSIENT as _TRANSIENT
from common.amqp_consumer import AmqpSubscription
from common.amqp_wire import PublishEncoder
from common.bus import Bus, Handler, Message, QueueStats, Subscription
from common.errors import BusClosedError, BusError, UnroutableError
from common.metrics import RECONNECTS
from common.topology import (
    DEAD_EXCHANGE,
    Binding,
    ExchangeSpec,
    QueueSpec,
    Topology,
)

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


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


_ACKED, _NACKED, _RETURNED = 1, 2, 3


class _Batch:
    """Messages put on the wire together, and what the broker said of each."""

    __slots__ = ("abandoned", "done", "messages", "nacked", "outcomes", "waiting")

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.outcomes: list[int | None] = [None] * len(messages)
        self.waiting = len(messages)
        self.nacked = False
        self.done: asyncio.Future[None] | None = None
        #: Given up on (sent, failed or timed out): later verdicts are ignored.
        self.abandoned = False

    def settle(self, index: int, outcome: int) -> None:
        if self.abandoned or self.outcomes[index] is not None:
            return
        self.outcomes[index] = outcome
        self.nacked |= outcome == _NACKED
        self.waiting -= 1
        if not self.waiting and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def returned(self) -> list[str]:
        """Labels of the messages the broker returned as unroutable."""
        return [
            f"{message.exchange or '(default)'}/{message.routing_key}"
            for message, outcome in zip(self.messages, self.outcomes, strict=True)
            if outcome == _RETURNED
        ]

    def unconfirmed(self) -> list[Message]:
        """The messages to publish again: nacked, or without a verdict."""
        return [
            message
            for message, outcome in zip(self.messages, self.outcomes, strict=True)
            if outcome is None or outcome == _NACKED
        ]


class _Confirm:
    """What aiormq's channel keeps per published message in ``confirmations`` (a future in
    aiormq's own publish): its reader reports the broker's ack (``set_result``), nack or
    return (``set_exception``) here, and this passes it on to the message's batch — no
    future, task or callback per message."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        return self._batch.abandoned or self._batch.outcomes[self._index] is not None

    def cancelled(self) -> bool:
        return self._batch.abandoned

    def set_result(self, _frame: object) -> None:
        self._batch.settle(self._index, _ACKED)

    def set_exception(self, exc: BaseException) -> None:
        self._batch.settle(self._index, _RETURNED if isinstance(exc, PublishError) else _NACKED)


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
        #: For messages sent without a confirm (:attr:`Message.may_be_lost`); opened on first use.
        self._sender: AbstractRobustChannel | None = None
        self._sender_opening = asyncio.Lock()
        self._admin: _AdminChannel | None = None
        self._subscriptions: set[AmqpSubscription] = set()
        self._encoder = PublishEncoder()
        #: Held from numbering a batch to queueing it: the broker numbers in write order.
        self._publishing = asyncio.Lock()

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
        self._publisher = self._sender = self._admin = None

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
        connection, publisher, _ = self._require()
        confirmed = [message for message in messages if not message.may_be_lost]
        if len(confirmed) < len(messages):
            # Waiting for the broker's word on a message that may be lost anyway buys nothing.
            await self._publish_unconfirmed(
                connection, [message for message in messages if message.may_be_lost]
            )
        unroutable: set[str] = set()
        window = self._confirm_window
        for start in range(0, len(confirmed), window):
            await self._publish_window(publisher, confirmed[start : start + window], unroutable)
        if unroutable:
            raise UnroutableError(f"unroutable: {', '.join(sorted(unroutable))}")

    async def _publish_unconfirmed(
        self, connection: AbstractRobustConnection, messages: list[Message]
    ) -> None:
        """Queue ``messages`` for the wire on the channel without confirms, once it is up."""
        async with self._sender_opening:
            if self._sender is None:
                self._sender = await connection.channel(publisher_confirms=False)
        sender = self._sender
        lost = _Backoff(first=0.05)
        lost_since: float | None = None
        while True:
            try:
                channel = cast(aiormq.Channel, await sender.get_underlay_channel())
                if channel.is_closed:
                    raise ChannelInvalidStateError(f"{channel!r} closed")
                parts: list[bytes] = []
                for message in messages:
                    self._encode(parts, channel, message)
                written = ChannelFrame(payload=b"".join(parts), should_close=False)
                async with asyncio.timeout(self._confirm_timeout_s):  # a writer gone for good
                    await channel.write_queue.put(written)
                return
            except _TRANSIENT as exc:
                lost_since = await self._await_channel(sender, lost, lost_since, exc)

    async def _publish_window(
        self, publisher: AbstractRobustChannel, messages: Sequence[Message], unroutable: set[str]
    ) -> None:
        """Publish until each message is confirmed (labels of returned ones to
        ``unroutable``): nacked ones again after a backoff, unconfirmed ones again once the
        channel is back."""
        full = _Backoff()
        lost = _Backoff(first=0.05)
        lost_since: float | None = None
        pending = list(messages)
        while pending:
            batch = _Batch(pending)
            try:
                channel = cast(aiormq.Channel, await publisher.get_underlay_channel())
                async with asyncio.timeout(self._confirm_timeout_s):
                    await self._send(channel, batch)
            except ChannelNotFoundEntity as exc:
                missing = {m.exchange for m in pending if f"exchange '{m.exchange}'" in str(exc)}
                if missing:
                    raise BusError(f"no exchange {missing.pop()!r}") from exc
                lost_since = await self._await_channel(publisher, lost, lost_since, exc)
            except _TRANSIENT as exc:
                lost_since = await self._await_channel(publisher, lost, lost_since, exc)
            else:
                if batch.nacked:
                    await full.sleep()  # nacked: a bounded queue is full; push back, never drop
            unroutable.update(batch.returned())
            pending = batch.unconfirmed()

    async def _send(self, channel: aiormq.Channel, batch: _Batch) -> None:
        """Put the batch on the wire as one write and wait for the broker's verdict on each
        message. Mandatory messages carry their delivery tag as message id: aiormq matches
        a returned message to its tag by it."""
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        returnable: list[str] = []
        async with self._publishing:
            first = channel.delivery_tag + 1
            parts: list[bytes] = []
            for tag, message in enumerate(batch.messages, first):
                message_id = None
                if message.mandatory:
                    message_id = str(tag)
                    returnable.append(message_id)
                self._encode(parts, channel, message, message_id)
            await channel.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False))
            # In the connection's queue: the broker numbers these messages first, first + 1,
            # ...; register them before anything else runs.
            channel.delivery_tag = first + len(batch.messages) - 1
            batch.done = channel.create_future()  # failed by aiormq when the channel closes
            confirmations = cast(dict[int, _Confirm], channel.confirmations)
            for index in range(len(batch.messages)):
                confirmations[first + index] = _Confirm(batch, index)
            for message_id in returnable:
                channel.message_id_delivery_tag[message_id] = int(message_id)
        try:
            if batch.waiting:
                await batch.done
        except Exception as exc:
            if channel.is_closed and not isinstance(exc, _TRANSIENT):
                # A channel closed without a reason fails its futures with a bare Exception.
                raise ChannelInvalidStateError(f"{channel!r} closed") from exc
            raise
        finally:
            batch.abandoned = True
            for message_id in returnable:
                channel.message_id_delivery_tag.pop(message_id, None)

    def _encode(
        self,
        parts: list[bytes],
        channel: aiormq.Channel,
        message: Message,
        message_id: str | None = None,
    ) -> None:
        self._encoder.encode(
            parts,
            channel.number,
            channel.max_content_size,
            exchange=message.exchange,
            routing_key=message.routing_key,
            body=message.body,
            headers=message.headers,
            transient=message.transient,
            mandatory=message.mandatory,
            message_id=message_id,
        )

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
        subscription: AmqpSubscription | None = None
        try:
            await channel.set_qos(prefetch_count=max(1, prefetch))
            subscription = AmqpSubscription(
                channel,
                queue,
                handler,
                retry_s=self._reconnect_interval_s,
                on_cancel=self._subscriptions.discard,
            )
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
