"""Consuming from RabbitMQ: a subscription on its own channel, its deliveries and their acks.

A subscription consumes on the aiormq channel under an aio-pika robust channel: aiormq hands
it each delivery as it is read, with no aio-pika message or extra task per delivery, and
aio-pika reopens the channel after a drop (the subscription then consumes again). One worker
runs the handler for each delivery in turn. Acks and nacks are written at the end of the
event loop's turn, all of that turn's in one write, the acks of a settled run of deliveries
as one multiple ack.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import cast

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import ChannelFrame
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pamqp import commands as spec

from common.amqp_wire import ack_frame, nack_frame
from common.bus import Delivery, Handler, Subscription
from common.topology import ORIGIN_HEADER, REASON_HEADER

_log = logging.getLogger(__name__)

#: What RabbitMQ's ``x-first-death-reason`` means, in the words the embedded bus uses.
DEATH_REASONS: Mapping[str, str] = {
    "delivery_limit": "delivery limit exceeded",
    "rejected": "rejected by a consumer",
    "expired": "expired",
    "maxlen": "queue full",
}

#: Failures after which the channel or connection comes back by itself.
TRANSIENT = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)


def delivery_headers(headers: Mapping[str, object], queue: str) -> dict[str, object]:
    """Headers as a consumer sees them: a message RabbitMQ dead-lettered itself (``x-death``)
    gets the same reason and origin headers as one moved by :meth:`Bus.dead_letter`."""
    seen = dict(headers)
    death = seen.get("x-first-death-reason")
    if death is not None and REASON_HEADER not in seen:
        seen[REASON_HEADER] = DEATH_REASONS.get(str(death), str(death))
        seen[ORIGIN_HEADER] = str(seen.get("x-first-death-queue", queue))
    return seen


class Acks:
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

    def __init__(self, message: aiormq.abc.DeliveredMessage, queue: str, acks: Acks) -> None:
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


class AmqpSubscription(Subscription):
    """A consumer on its own robust channel; one worker runs the handler for each delivery
    in turn. It consumes on the channel's aiormq channel (no aio-pika message or task per
    delivery), and consumes again when aio-pika has reopened the channel after a drop or
    when the broker cancelled the consumer."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: str,
        handler: Handler,
        *,
        retry_s: float,
        on_cancel: Callable[[AmqpSubscription], None],
    ) -> None:
        self._channel = channel
        self._retry_s = retry_s
        self._on_cancel = on_cancel
        self._queue = queue
        self._handler = handler
        self._inbox: collections.deque[tuple[aiormq.abc.DeliveredMessage, Acks]] = (
            collections.deque()
        )
        self._wake = asyncio.Event()
        self._cancelled = False
        self._consumer_tag = f"bn-{queue}-{secrets.token_hex(6)}"
        self._acks: Acks | None = None
        #: Consuming again after aio-pika reopened the channel or the broker cancelled us.
        self._resuming: asyncio.Task[None] | None = None
        self._worker = asyncio.create_task(self._run(), name=f"consume:{queue}")

    async def start(self) -> None:
        await self._consume()
        self._channel.reopen_callbacks.add(self._on_reopen)

    async def _consume(self) -> None:
        channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        acks = self._acks
        if acks is None or acks.channel is not channel:
            # One per channel: its multiple acks must know every delivery of the channel.
            acks = self._acks = Acks(channel, self._queue)
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
        while not self._cancelled:
            try:
                channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                probe = await channel.connection.channel(publisher_confirms=False)
                try:
                    await probe.queue_declare(self._queue, passive=True)
                finally:
                    with contextlib.suppress(*TRANSIENT):
                        await probe.close()
                await self._consume()
                return
            except (*TRANSIENT, RuntimeError) as exc:
                _log.warning("could not consume %s again (%s): %r", self._queue, why, exc)
                await asyncio.sleep(self._retry_s)

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
        self._on_cancel(self)
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
            with contextlib.suppress(*TRANSIENT):
                await acks.channel.basic_cancel(self._consumer_tag)
        with contextlib.suppress(*TRANSIENT):
            await self._channel.close()
