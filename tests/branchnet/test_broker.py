"""The private RabbitMQ node: start, status, stop, restart, vhosts, MQTT into a vhost."""

from __future__ import annotations

import asyncio
import gc
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiomqtt
import pytest

from branchnet.broker import (
    RESERVED_PORTS,
    BrokerInfo,
    broker_status,
    create_vhost,
    default_node_name,
    delete_vhost,
    start_broker,
    stop_broker,
    vhost_url,
)
from common.amqp_bus import AmqpBus
from common.bus import Message
from common.errors import BusError
from common.topology import EVENTS_EXCHANGE, QueueSpec, Topology, event_key
from tests.conftest import RabbitMQ


def private_node(rabbitmq: RabbitMQ) -> tuple[BrokerInfo, Path]:
    if rabbitmq.node is None or rabbitmq.base_dir is None:
        pytest.skip("BRANCHNET_AMQP_URL names another broker; no private node here")
    return rabbitmq.node, rabbitmq.base_dir


# -- pure parts ----------------------------------------------------------------------------


def test_broker_info_survives_its_state_file() -> None:
    info = BrokerInfo("branchnet-x@localhost", 21001, 21002, 21003, 21004, Path("/tmp/x"))
    assert BrokerInfo.from_json(info.to_json()) == info
    assert info.amqp_url == "amqp://guest:guest@127.0.0.1:21001/"
    assert info.mqtt_url == "mqtt://guest:guest@127.0.0.1:21002"
    assert info.management_url == "http://127.0.0.1:21003"
    assert info.mqtt_url_for("bn-run") == "mqtt://bn-run%3Aguest:guest@127.0.0.1:21002"


def test_vhost_url_points_at_the_vhost() -> None:
    assert vhost_url("amqp://u:p@h:1/", "bank") == "amqp://u:p@h:1/bank"
    assert vhost_url("amqp://u:p@h:1/old", "/") == "amqp://u:p@h:1/%2F"


def test_node_names_differ_by_directory(tmp_path: Path) -> None:
    one, two = default_node_name(tmp_path / "a"), default_node_name(tmp_path / "b")
    assert one != two
    assert one.startswith("branchnet-") and one.endswith("@localhost")
    assert default_node_name(tmp_path / "a") == one


def test_no_state_file_means_not_running(tmp_path: Path) -> None:
    assert broker_status(tmp_path) is None
    stop_broker(tmp_path)  # nothing to stop: no error


# -- the session's node ----------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_session_node_is_running_on_its_own_ports(rabbitmq: RabbitMQ) -> None:
    node, base_dir = private_node(rabbitmq)
    assert broker_status(base_dir) == node
    ports = {node.amqp_port, node.mqtt_port, node.management_port, node.dist_port}
    assert len(ports) == 4
    assert not ports & RESERVED_PORTS
    assert start_broker(base_dir) == node  # already running: the same node back


@pytest.mark.rabbitmq
async def test_vhosts_keep_messages_apart(rabbitmq: RabbitMQ) -> None:
    node, _ = private_node(rabbitmq)
    names = [f"{rabbitmq.run_id}-apart-{i}" for i in (1, 2)]
    urls = [await asyncio.to_thread(create_vhost, node, name) for name in names]
    buses = [AmqpBus(url, name=f"apart-{i}") for i, url in enumerate(urls)]
    try:
        for bus in buses:
            await bus.connect()
            await bus.declare(Topology(queues=(QueueSpec("t.shared-name"),)))
        await buses[0].publish([Message("", "t.shared-name", b"only here")])
        assert (await buses[0].queue_stats("t.shared-name")).messages == 1
        assert (await buses[1].queue_stats("t.shared-name")).messages == 0
    finally:
        for bus in buses:
            await bus.close()
        for name in names:
            await asyncio.to_thread(delete_vhost, node, name)

    gone = AmqpBus(urls[0], name="gone", reconnect_timeout_s=5)
    with pytest.raises(BusError):
        await gone.connect()
    # the failed connection is closed, not left for the garbage collector to close outside
    # the event loop (where its close() coroutine would never be awaited)
    gc.collect()
    assert not [
        c
        for c in gc.get_objects()
        if isinstance(c, aio_pika.RobustConnection)
        and c.url.path == f"/{names[0]}"
        and not c.is_closed
    ]
    await asyncio.to_thread(delete_vhost, node, names[0])  # already gone: no error


@pytest.mark.rabbitmq
async def test_mqtt_clients_see_events_of_the_run_vhost(
    amqp_url: str, mqtt_url: str | None
) -> None:
    if mqtt_url is None:
        pytest.skip("MQTT only on the private node")
    parts = urllib.parse.urlsplit(mqtt_url)
    assert parts.hostname is not None and parts.port is not None
    bus = AmqpBus(amqp_url, name="events-publisher")
    await bus.connect()
    try:
        async with aiomqtt.Client(
            parts.hostname,
            parts.port,
            username=urllib.parse.unquote(parts.username or ""),
            password=urllib.parse.unquote(parts.password or ""),
        ) as client:
            # a kind of its own: other tests' hosts publish events on this run's vhost too
            kind = f"probe{uuid.uuid4().hex[:8]}"
            await client.subscribe(f"bank/events/0001/{kind}", qos=1)
            await bus.publish([Message(EVENTS_EXCHANGE, event_key("0001", kind), b"{}")])
            message = await asyncio.wait_for(anext(aiter(client.messages)), 20)
    finally:
        await bus.close()
    assert str(message.topic) == f"bank/events/0001/{kind}"
    assert message.payload == b"{}"


# -- a second node of its own ------------------------------------------------------------


@pytest.fixture
def second_node_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory the ``rabbitmq`` user cannot enter (pytest's are 0700), like ~/.branchnet."""
    base_dir = tmp_path / "broker"
    try:
        yield base_dir
    finally:
        stop_broker(base_dir)
        state = base_dir / "broker.json"
        if state.exists():
            shutil.rmtree(BrokerInfo.from_json(state.read_text()).data_dir, ignore_errors=True)


@pytest.mark.rabbitmq
@pytest.mark.slow
async def test_second_node_starts_stops_and_keeps_its_data(second_node_dir: Path) -> None:
    info = await asyncio.to_thread(start_broker, second_node_dir)
    assert broker_status(second_node_dir) == info
    bus = AmqpBus(info.amqp_url, name="durable-writer")
    await bus.connect()
    await bus.declare(Topology(queues=(QueueSpec("t.durable", quorum=True),)))
    await bus.publish([Message("", "t.durable", b"journal batch 1")])
    await bus.close()

    await asyncio.to_thread(stop_broker, second_node_dir)
    assert broker_status(second_node_dir) is None
    await asyncio.to_thread(stop_broker, second_node_dir)  # stopping twice is fine

    again = await asyncio.to_thread(start_broker, second_node_dir)
    assert again == info  # same name, ports and data directory
    bus = AmqpBus(again.amqp_url, name="durable-reader")
    await bus.connect()
    try:
        assert (await bus.queue_stats("t.durable")).messages == 1
    finally:
        await bus.close()
