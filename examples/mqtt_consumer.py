"""A minimal branchnet ops consumer: print every event and node summary arriving over MQTT.

Copy it and change ``handle``. It needs only aiomqtt (``pip install aiomqtt``):

    python examples/mqtt_consumer.py mqtt://guest:guest@localhost:1883
    python examples/mqtt_consumer.py 'mqtt://myvhost%3Aguest:guest@localhost:1883'  # a vhost

Topics: ``bank/events/<branch>/<type>`` (a JSON array of one or more events of that branch
and type: transaction, decline, large_cash, pin_lockout, freeze_deduct, tier_changed,
replication_lag, security_alert, node_status) and ``bank/stats/<node>`` (a summary a second).
``branchnet asyncapi`` prints the full schema of every message; with branchnet installed,
``common.events.decode_events`` reads an event message into validated models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.parse

import aiomqtt


def handle(topic: str, event: dict[str, object]) -> None:
    """Do something useful with one event or summary; here, print a line."""
    if topic.startswith("bank/stats/"):
        print(f"{event['node']}: {event['tps']} tx/s, p99 {event['latency_ms']['p99']} ms")  # type: ignore[index]
    elif event["type"] != "transaction":
        detail = {k: v for k, v in event.items() if k not in ("v", "type", "node", "at")}
        print(f"{event['at']} {event['type']}: {detail}")


async def consume(url: str, limit: int | None = None) -> list[tuple[str, dict[str, object]]]:
    """Subscribe to every event and summary; stop after ``limit`` of them (None: never)."""
    parts = urllib.parse.urlsplit(url)
    received: list[tuple[str, dict[str, object]]] = []
    async with aiomqtt.Client(
        parts.hostname or "localhost",
        parts.port or 1883,
        # RabbitMQ: "vhost:user" names a vhost; the colon is percent-encoded in the URL
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
    ) as client:
        await client.subscribe("bank/events/+/+")
        await client.subscribe("bank/stats/+")
        async for message in client.messages:
            if not isinstance(message.payload, bytes | bytearray):
                continue
            topic = message.topic.value
            body = json.loads(message.payload)
            # an event message carries an array of events; a stats message one summary
            for event in body if isinstance(body, list) else [body]:
                handle(topic, event)
                received.append((topic, event))
            if limit is not None and len(received) >= limit:
                break
    return received


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume(sys.argv[1] if len(sys.argv) > 1 else "mqtt://guest:guest@localhost"))
