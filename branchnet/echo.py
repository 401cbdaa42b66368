"""The echo host: the throughput ceiling of the bus and the framing, with no banking behind it.

It consumes ``host.requests`` like the host, takes each request frame apart (header, Merkle
root), answers every record ``00`` with a reply naming its request id, publishes one reply
frame per request frame to the branch and acks. No decoding of the requests, no store, no PIN
round trip: what is left is the cost every design pays — broker, frames, reply records.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence

import orjson

from common.bus import Bus, Delivery, Message, Subscription
from common.errors import FrameError
from common.frames import FrameKind, build_frame, decode_frame, encode_frame
from common.replies import Reply, encode_reply
from common.results import ResultCode
from common.topology import CORE, HOST_REQUESTS, REPLIES_EXCHANGE, host_topology

SENDER = "host"


class EchoHost:
    """Answers every request record at once with ``00`` (the caller connects ``bus``)."""

    def __init__(self, bus: Bus, *, branch_ids: Sequence[str], prefetch: int = 256) -> None:
        self.bus = bus
        self.branch_ids = tuple(branch_ids)
        self.prefetch = prefetch
        self.frames = 0
        self.records = 0
        self._sequence = itertools.count(1)
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        await self.bus.declare(CORE + host_topology(self.branch_ids))
        self._subscription = await self.bus.consume(
            HOST_REQUESTS, self._echo, prefetch=self.prefetch
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None

    async def _echo(self, delivery: Delivery) -> None:
        now = dt.datetime.now(dt.UTC)
        try:
            frame = decode_frame(delivery.body, expect=FrameKind.REQUEST)
        except FrameError as error:
            await self.bus.dead_letter(delivery, str(error))
            return
        records = [self._reply(record, now) for record in frame.records]
        reply = build_frame(FrameKind.REPLY, SENDER, next(self._sequence), records)
        await self.bus.publish(
            [Message(REPLIES_EXCHANGE, delivery.routing_key, encode_frame(reply))]
        )
        await delivery.ack()
        self.frames += 1
        self.records += len(records)

    @staticmethod
    def _reply(record: bytes, now: dt.datetime) -> bytes:
        try:
            request_id = str(orjson.loads(record).get("request_id", ""))
        except (orjson.JSONDecodeError, AttributeError):
            request_id = ""
        echo = Reply(
            request_id=request_id,
            result=ResultCode.APPROVED,
            reason="echo",
            received_at=now,
            processed_at=now,
        )
        return encode_reply(echo)
