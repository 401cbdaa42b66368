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
future, and consumes on the aiormq channel directly, without an aio-pika message and task
per delivery. aio-pika still owns the connection and the channels' lifecycle.

When the connection drops, aio-pika reconnects and reopens the channels, and each consumer
consumes again; publishes in flight are retried once the channel is back (a lost confirm may
duplicate a message: consumers are idempotent by request id) or fail with
:class:`BusError` after ``reconnect_timeout_s``. Deliveries received before the drop are not
handed to handlers, and their settles are dropped: the broker redelivers them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from pamqp import commands as spec
from pamqp.common import Arguments
from yarl import URL

from common.amqp_wire import PublishEncoder, ack_frame, nack_frame
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


class _Acks:
    """Settles the deliveries of one channel, in as few frames as it can.

    An ack or nack is written at the end of the event loop's turn, together with every
    other settled in that turn, as one write. The acks of deliveries with no unsettled
    delivery before them on the channel go as one ``Basic.Ack`` with ``multiple`` on the
    highest; the others one by one. Nacks go first: a multiple ack never covers a nack
    not yet on the wire (that would be an unknown delivery tag, which closes the channel).
    A channel that has closed has put its unsettled deliveries back already: its settles
    are dropped.
    """

    def __init__(self, channel: aiormq.Channel, queue: str) -> None:
        self.channel = channel
        self._queue = queue
        #: Delivery tags handed to the handler and not yet settled, in delivery order.
        self._unsettled: dict[int, None] = {}
        self._acks: list[int] = []
        self._nacks: list[tuple[int, bool]] = []
        self._scheduled = False
        #: Writing settles that found the connection's write queue full; later ones wait.
        self._writing: asyncio.Task[None] | None = None

    def received(self, delivery_tag: int) -> None:
        self._unsettled[delivery_tag] = None

    def ack(self, delivery_tag: int) -> None:
        self._unsettled.pop(delivery_tag, None)
        self._acks.append(delivery_tag)
        self._schedule()

    def nack(self, delivery_tag: int, *, requeue: bool) -> None:
        self._unsettled.pop(delivery_tag, None)
        self._nacks.append((delivery_tag, requeue))
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the settles so far (or queue them behind a write that had to wait)."""
        self._scheduled = False
        if self._writing is not None or not (self._acks or self._nacks):
            return
        channel = self.channel
        if channel.is_closed:
            _log.info(
                "%d settles of %s dropped: the channel closed, the broker redelivers",
                len(self._acks) + len(self._nacks),
                self._queue,
            )
            self._acks.clear()
            self._nacks.clear()
            return
        number = channel.number
        frames = [nack_frame(number, tag, requeue=requeue) for tag, requeue in self._nacks]
        lowest = next(iter(self._unsettled), None)
        covered = [tag for tag in self._acks if lowest is None or tag < lowest]
        single = self._acks
        if len(covered) > 1:
            frames.append(ack_frame(number, max(covered), multiple=True))
            single = [tag for tag in self._acks if lowest is not None and tag > lowest]
        frames.extend(ack_frame(number, tag, multiple=False) for tag in single)
        self._acks.clear()
        self._nacks.clear()
        written = ChannelFrame(payload=b"".join(frames), should_close=False)
        try:
            channel.write_queue.put_nowait(written)
        except asyncio.QueueFull:
            self._writing = asyncio.create_task(self._write(written))

    async def _write(self, written: ChannelFrame) -> None:
        putting = asyncio.ensure_future(self.channel.write_queue.put(written))
        closing = self.channel.closing  # a connection gone for good never takes it
        try:
            await asyncio.wait((putting, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            putting.cancel()
            closing.cancel()  # only this observer of the channel
            self._writing = None
        self.flush()

    async def drain(self) -> None:
        """Write what is settled now, and wait until it is in the connection's queue."""
        self.flush()
        while self._writing is not None:
            await asyncio.shield(self._writing)


class _AmqpDelivery(Delivery):
    __slots__ = (
        "_acks",
        "_settled",
        "_tag",
        "body",
        "exchange",
        "headers",
        "queue",
        "redelivered",
        "routing_key",
    )

    def __init__(self, message: aiormq.abc.DeliveredMessage, queue: str, acks: _Acks) -> None:
        deliver = cast(spec.Basic.Deliver, message.delivery)
        headers = message.header.properties.headers
        self.body = message.body
        self.headers = delivery_headers(headers, queue) if headers else {}
        self.exchange = deliver.exchange or ""
        self.routing_key = deliver.routing_key or ""
        self.queue = queue
        self.redelivered = bool(deliver.redelivered)
        self._acks = acks
        self._tag = deliver.delivery_tag or 0
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._acks.ack(self._tag)

    async def nack(self, *, requeue: bool = True) -> None:
        if not self._settled:
            self._settled = True
            self._acks.nack(self._tag, requeue=requeue)


class _AmqpSubscription(Subscription):
    """A consumer on its own robust channel; one worker runs the handler for each delivery
    in turn. It consumes on the channel's aiormq channel (no aio-pika message or task per
    delivery), and consumes again when aio-pika has reopened the channel after a drop or
    when the broker cancelled the consumer."""

    def __init__(
        self, bus: AmqpBus, channel: AbstractRobustChannel, queue: str, handler: Handler
    ) -> None:
        self._bus = bus
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self._inbox: collections.deque[tuple[aiormq.abc.DeliveredMessage, _Acks]] = (
            collections.deque()
        )
        self._wake = asyncio.Event()
        self._cancelled = False
        self._consumer_tag = f"bn-{queue}-{secrets.token_hex(6)}"
        self._acks: _Acks | None = None
        #: Consuming again after aio-pika reopened the channel or the broker cancelled us.
        self._resuming: asyncio.Task[None] | None = None
        self._worker = asyncio.create_task(self._run(), name=f"consume:{queue}")

    async def start(self) -> None:
        await self._consume()
        self._channel.reopen_callbacks.add(self._on_reopen)

    async def _consume(self) -> None:
        channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        acks = self._acks = _Acks(channel, self._queue)
        inbox, wake = self._inbox, self._wake

        async def receive(message: aiormq.abc.DeliveredMessage) -> None:
            acks.received(cast(spec.Basic.Deliver, message.delivery).delivery_tag or 0)
            inbox.append((message, acks))
            wake.set()

        channel.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        await channel.basic_consume(self._queue, receive, consumer_tag=self._consumer_tag)

    def _on_reopen(self, _channel: object) -> None:
        self._resume("the channel reopened")

    def _on_broker_cancel(self, frame: spec.Basic.Cancel) -> None:
        if frame.consumer_tag == self._consumer_tag:
            _log.warning("the broker cancelled the consumer of %s", self._queue)
            self._resume("the broker cancelled it")

    def _resume(self, why: str) -> None:
        if self._cancelled:
            return
        if self._resuming is not None:
            self._resuming.cancel()
        self._resuming = asyncio.create_task(
            self._consume_again(why), name=f"consume-again:{self._queue}"
        )

    async def _consume_again(self, why: str) -> None:
        """Consume again once the queue is there, retrying until then (as aio-pika restores
        its own consumers): a consume on a missing queue would close the channel, which
        aio-pika would reopen, which would consume again..."""
        backoff = _Backoff(first=0.05, cap=self._bus._reconnect_interval_s)
        while not self._cancelled:
            try:
                channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                probe = await channel.connection.channel(publisher_confirms=False)
                try:
                    await probe.queue_declare(self._queue, passive=True)
                finally:
                    with contextlib.suppress(*_TRANSIENT):
                        await probe.close()
                await self._consume()
                return
            except (*_TRANSIENT, RuntimeError) as exc:
                _log.warning("could not consume %s again (%s): %r", self._queue, why, exc)
                await backoff.sleep()

    async def _run(self) -> None:
        inbox, wake = self._inbox, self._wake
        while not self._cancelled:
            if not inbox:
                wake.clear()
                await wake.wait()
                continue
            message, acks = inbox.popleft()
            if acks.channel.is_closed:
                continue  # the broker already put it back
            delivery = _AmqpDelivery(message, self._queue, acks)
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
        self._channel.reopen_callbacks.discard(self._on_reopen)
        for task in (self._resuming, self._worker):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        acks = self._acks
        if acks is not None:
            # Settles first, then the cancel; closing the channel hands the unacked
            # deliveries back to the queue.
            await acks.drain()
            with contextlib.suppress(*_TRANSIENT):
                await acks.channel.basic_cancel(self._consumer_tag)
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
        #: For messages sent without a confirm (:attr:`Message.may_be_lost`); opened on first use.
        self._sender: AbstractRobustChannel | None = None
        self._sender_opening = asyncio.Lock()
        self._admin: _AdminChannel | None = None
        self._subscriptions: set[_AmqpSubscription] = set()
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
                await channel.write_queue.put(
                    ChannelFrame(payload=b"".join(parts), should_close=False)
                )
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
