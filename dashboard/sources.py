"""Where the dashboard's messages come from: MQTT (aiomqtt), or a bus in the same process.

Both hand every message to a sink as ``(mqtt topic, payload)``: ``bank/events/<b>/<type>``
(a JSON array of events) or ``bank/stats/<node>`` (one summary). RabbitMQ's MQTT plugin maps
MQTT ``/`` to AMQP ``.``, so an AMQP routing key ``bank.events.0001.transaction`` is the MQTT
topic ``bank/events/0001/transaction``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from common.bus import Bus, Delivery
from common.logs import get_logger
from common.topology import EVENTS_EXCHANGE, Binding, QueueSpec, Topology

Sink = Callable[[str, bytes], None]
#: What the dashboard subscribes to.
EVENT_TOPICS = ("bank/events/+/+", "bank/stats/+")
RECONNECT_DELAY_S = 2.0

_log = get_logger(__name__)


def mqtt_topic(routing_key: str) -> str:
    """The MQTT topic of an ``amq.topic`` routing key."""
    return routing_key.replace(".", "/")


def routing_pattern(topic_filter: str) -> str:
    """The AMQP binding key of an MQTT topic filter (``+`` → ``*``, ``#`` stays)."""
    return topic_filter.replace("/", ".").replace("+", "*")


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """An ``mqtt://user:password@host:port`` URL taken apart.

    RabbitMQ names a vhost in the user name as ``vhost:user``; in a URL that colon is
    percent-encoded (``%3A``) and is decoded here.
    """

    hostname: str
    port: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("an MQTT URL looks like mqtt://user:password@host:1883")
        return cls(
            hostname=parts.hostname,
            port=parts.port or 1883,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
        )

    def __repr__(self) -> str:
        return f"MqttEndpoint({self.hostname}:{self.port}, user={self.username!r})"


class MqttSource:
    """Subscribes to the event topics over MQTT, reconnecting when the broker goes away."""

    def __init__(self, url: str) -> None:
        self.endpoint = MqttEndpoint.parse(url)
        self.connected = False

    async def run(self, sink: Sink) -> None:
        endpoint = self.endpoint
        while True:
            try:
                async with aiomqtt.Client(
                    endpoint.hostname,
                    endpoint.port,
                    username=endpoint.username,
                    password=endpoint.password,
                    identifier=f"branchnet-dashboard-{uuid.uuid4().hex[:8]}",
                    max_queued_incoming_messages=50_000,
                ) as client:
                    for topic in EVENT_TOPICS:
                        await client.subscribe(topic)
                    self.connected = True
                    _log.info("dashboard subscribed", broker=repr(endpoint))
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            sink(message.topic.value, bytes(payload))
            except aiomqtt.MqttError as error:
                self.connected = False
                _log.warning("dashboard lost MQTT; reconnecting", error=str(error))
                await asyncio.sleep(RECONNECT_DELAY_S)


class BusSource:
    """The same stream from a bus of this process (the embedded bus of a simulation).

    A queue of its own, bound like the MQTT subscriptions; deliveries are acked at once.
    """

    def __init__(self, bus: Bus, *, queue: str | None = None, max_length: int = 10_000) -> None:
        self.bus = bus
        self.queue = queue or f"dashboard.{uuid.uuid4().hex[:8]}"
        self.max_length = max_length
        self.connected = False

    async def run(self, sink: Sink) -> None:
        await self.bus.declare(
            Topology(
                queues=(QueueSpec(self.queue, durable=False, max_length=self.max_length),),
                bindings=tuple(
                    Binding(self.queue, EVENTS_EXCHANGE, routing_pattern(t)) for t in EVENT_TOPICS
                ),
            )
        )

        async def deliver(delivery: Delivery) -> None:
            sink(mqtt_topic(delivery.routing_key), delivery.body)
            await delivery.ack()

        subscription = await self.bus.consume(self.queue, deliver, prefetch=500)
        self.connected = True
        try:
            await asyncio.Event().wait()
        finally:
            self.connected = False
            await subscription.cancel()
