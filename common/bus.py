"""The message bus interface, shared by the AMQP and the embedded implementation.

Semantics both implementations keep:
- ``publish`` takes a batch and returns once every message is safely queued (broker
  confirms over a window on AMQP); a ``mandatory`` message that matches no queue raises
  :class:`~common.errors.UnroutableError` after the others went out (others are dropped).
- A ``transient`` message is not written to the broker's disk: its confirm does not wait
  for an fsync, and it does not survive a broker restart.
- A message both ``transient`` and not ``mandatory`` (an event) may be lost: ``publish``
  does not wait for its confirm (it returns once the message is on its way), and a full
  queue drops it rather than hold the publisher back.
- A consumer gets at most ``prefetch`` unacknowledged deliveries; a delivery not acked when
  its consumer goes away is redelivered with ``redelivered`` set.
- ``dead_letter`` moves a delivery to ``bn.dead`` with the reason in a header, then acks it.
- Queues may be bounded; a full queue pushes back on publishers (it drops nothing but the
  transient messages that are not mandatory).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from common.topology import DEAD_EXCHANGE, ORIGIN_HEADER, REASON_HEADER, Topology


@dataclass(frozen=True, slots=True)
class Message:
    """An outgoing message.

    ``transient`` suits messages worthless after a restart (PIN commands and answers that
    have a deadline, events); ``mandatory=False`` suits messages nobody may be listening to;
    both, messages that may be lost (events, see :attr:`may_be_lost`).
    """

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    transient: bool = False
    mandatory: bool = True

    @property
    def may_be_lost(self) -> bool:
        """Transient and not mandatory: ``publish`` does not wait for the broker's word on it,
        and a full queue drops it."""
        return self.transient and not self.mandatory


class Delivery(abc.ABC):
    """A message handed to a consumer; settle it exactly once with ack, nack or dead_letter."""

    body: bytes
    headers: Mapping[str, object]
    exchange: str
    routing_key: str
    queue: str
    redelivered: bool

    @abc.abstractmethod
    async def ack(self) -> None:
        """Done with it; the queue forgets it."""

    @abc.abstractmethod
    async def nack(self, *, requeue: bool = True) -> None:
        """Give it back (``requeue``) or drop it."""


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(abc.ABC):
    """A running consumer."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Stop consuming; unacked deliveries go back to the queue."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    messages: int
    consumers: int


class Bus(abc.ABC):
    """A connection to the message bus."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues and bindings; idempotent."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish a batch and return when all of it is confirmed."""

    @abc.abstractmethod
    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        """Call ``handler`` for each delivery from ``queue``."""

    @abc.abstractmethod
    async def queue_stats(self, queue: str) -> QueueStats:
        """How many messages wait in ``queue`` and how many consumers it has."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move ``delivery`` to ``bn.dead`` with ``reason`` in a header, then ack it."""
        headers = {str(k): str(v) for k, v in delivery.headers.items()}
        headers[REASON_HEADER] = reason
        headers[ORIGIN_HEADER] = delivery.queue
        await self.publish([Message(DEAD_EXCHANGE, delivery.routing_key, delivery.body, headers)])
        await delivery.ack()

    async def __aenter__(self) -> Bus:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
