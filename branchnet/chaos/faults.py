"""Fault injection on the embedded bus: duplicated, delayed and so reordered deliveries.

:class:`FaultyBus` wraps a connection and, driven by its own seeded random generator,
publishes some messages twice and holds some back for a random while (so later messages
overtake them). Seeded generators make a failing run's fault schedule reproducible.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from common.bus import Bus, Handler, Message, QueueStats, Subscription
from common.errors import BusError
from common.logs import get_logger
from common.topology import Topology

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How a :class:`FaultyBus` misbehaves.

    Args:
        duplicate: probability that a published message is delivered twice (at most 0.5).
        delay: probability that a message is held back.
        max_delay_s: the longest hold-back; held messages are overtaken by later ones.
    """

    duplicate: float = 0.0
    delay: float = 0.0
    max_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.duplicate <= 0.5 or not 0 <= self.delay <= 1 or self.max_delay_s < 0:
            raise ValueError("duplicate in 0..0.5, delay in 0..1, max_delay_s >= 0")


class FaultyBus(Bus):
    """A bus that duplicates and reorders what it publishes; everything else passes through."""

    def __init__(self, inner: Bus, plan: FaultPlan, rng: random.Random) -> None:
        self.inner = inner
        self.plan = plan
        self.rng = rng
        self.duplicated = 0
        self.delayed = 0
        self._held: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        """Let held-back messages arrive (they are already on the wire), then close."""
        if self._held:
            await asyncio.gather(*self._held, return_exceptions=True)
        await self.inner.close()

    async def declare(self, topology: Topology) -> None:
        await self.inner.declare(topology)

    async def publish(self, messages: Sequence[Message]) -> None:
        now: list[Message] = []
        for message in messages:
            copies = 2 if self.rng.random() < self.plan.duplicate else 1
            self.duplicated += copies - 1
            for _ in range(copies):
                if self.rng.random() < self.plan.delay:
                    self._hold(message, self.rng.uniform(0, self.plan.max_delay_s))
                else:
                    now.append(message)
        if now:
            await self.inner.publish(now)

    def _hold(self, message: Message, delay_s: float) -> None:
        self.delayed += 1
        task = asyncio.create_task(self._publish_later(message, delay_s))
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    async def _publish_later(self, message: Message, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await self.inner.publish([message])
        except BusError as error:  # the receiver went away: a message lost in the network
            _log.info("held-back message dropped", reason=type(error).__name__)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        return await self.inner.consume(queue, handler, prefetch=prefetch)

    async def queue_stats(self, queue: str) -> QueueStats:
        return await self.inner.queue_stats(queue)
