"""The MQTT consumer in examples/ receives what the host publishes, as the README says."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from common.amqp_bus import AmqpBus
from common.events import NodeStatus, SecurityAlert, SecurityAlertKind
from host_node.events import EventConfig, EventPublisher

EXAMPLE = Path(__file__).parents[2] / "examples" / "mqtt_consumer.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mqtt_consumer", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.rabbitmq
async def test_the_example_consumer_receives_events_over_mqtt(
    amqp_url: str, mqtt_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if mqtt_url is None:
        pytest.skip("MQTT is reachable on the private test broker only")
    consumer = asyncio.create_task(_example().consume(mqtt_url, limit=2))
    bus = AmqpBus(amqp_url, name="example-test")
    await bus.connect()
    publisher = EventPublisher(bus, node="host", config=EventConfig(stats_interval_s=0))
    try:
        await asyncio.sleep(1.0)  # let the subscription settle
        await publisher.start()  # announces the node: one node_status event
        publisher.emit(
            SecurityAlert(
                node="host",
                at=dt.datetime.now(dt.UTC),
                alert=SecurityAlertKind.REPLAY,
                detail="frame sequence 7 seen before",
                source="branch.0002",
            )
        )
        received = await asyncio.wait_for(consumer, 20)
    finally:
        consumer.cancel()
        await publisher.stop()
        await bus.close()
    assert [topic for topic, _ in received] == [
        "bank/events/network/node_status",
        "bank/events/network/security_alert",
    ]
    assert received[1][1]["alert"] == "replay"
    printed = capsys.readouterr().out
    assert "security_alert" in printed and "replay" in printed
    assert NodeStatus.model_validate(received[0][1]).status == "up"
