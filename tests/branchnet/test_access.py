"""Per-node broker users: the broker itself refuses a branch acting as another."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import aiomqtt
import pytest
from aiormq.exceptions import ChannelAccessRefused

from branchnet.access import node_url, provision
from branchnet.broker import management_call
from branchnet.network import Network, NetworkConfig
from branchnet.ops import mqtt_url_from_amqp
from branchnet.reconcile import reconcile
from common.topology import (
    EVENTS_EXCHANGE,
    REPLIES_EXCHANGE,
    REQUESTS_EXCHANGE,
    branch_reply_queue,
    event_key,
)
from host_node import ledger_path

if TYPE_CHECKING:
    from tests.conftest import RabbitMQ

pytestmark = pytest.mark.rabbitmq
BRANCHES = ("0001", "0002")


@pytest.fixture(scope="module")
def provisioned(
    rabbitmq: RabbitMQ, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Path]]:
    if rabbitmq.management_url is None:
        pytest.skip("needs the broker's management API")
    vhost = f"{rabbitmq.run_id}-access"
    data_dir = tmp_path_factory.mktemp("access")
    urls = asyncio.run(
        provision(rabbitmq.management_url, rabbitmq.amqp_url, vhost, BRANCHES, data_dir)
    )
    try:
        yield urls, data_dir
    finally:
        rabbitmq.drop_vhost(urls["host"])
        for user in urls:
            management_call(
                rabbitmq.management_url, rabbitmq.amqp_url, "DELETE", f"/api/users/{user}", None
            )


@pytest.fixture
async def branch_0001(
    provisioned: tuple[dict[str, str], Path],
) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(provisioned[0]["branch-0001"])
    async with connection:
        yield connection


async def _ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


def test_every_node_has_its_own_user_and_none_is_guest(
    provisioned: tuple[dict[str, str], Path],
) -> None:
    urls, data_dir = provisioned
    assert set(urls) == {"host", "crypto", "standby", "dashboard", "branch-0001", "branch-0002"}
    for user, url in urls.items():
        assert urllib.parse.urlsplit(url).username == user != "guest"
        assert node_url(data_dir, user) == url
        assert (data_dir / "keys" / "broker" / f"{user}.url").stat().st_mode & 0o077 == 0


async def test_the_dashboard_user_reads_events_over_mqtt_and_can_publish_nothing(
    rabbitmq: RabbitMQ, provisioned: tuple[dict[str, str], Path]
) -> None:
    if rabbitmq.node is None:
        pytest.skip("MQTT only on the private node")
    urls, _ = provisioned
    mqtt = urllib.parse.urlsplit(mqtt_url_from_amqp(urls["dashboard"], rabbitmq.node.mqtt_port))
    assert mqtt.hostname is not None and mqtt.port is not None
    host = await aio_pika.connect(urls["host"])
    async with (
        host,
        aiomqtt.Client(
            mqtt.hostname,
            mqtt.port,
            username=urllib.parse.unquote(mqtt.username or ""),
            password=urllib.parse.unquote(mqtt.password or ""),
        ) as client,
    ):
        await client.subscribe("bank/events/#", qos=1)
        channel = await host.channel(publisher_confirms=True)
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await events.publish(aio_pika.Message(b"{}"), routing_key=event_key("0001", "probe"))
        message = await asyncio.wait_for(anext(aiter(client.messages)), 20)
        assert str(message.topic) == "bank/events/0001/probe"
    dashboard = await aio_pika.connect(urls["dashboard"])
    async with dashboard:
        channel = await dashboard.channel(publisher_confirms=True)
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await events.publish(aio_pika.Message(b"{}"), routing_key=event_key("0001", "forged"))


async def test_a_branch_publishes_only_under_its_own_routing_key(
    branch_0001: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await branch_0001.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(REQUESTS_EXCHANGE, ensure=False)
    await exchange.publish(aio_pika.Message(b"own"), routing_key="branch.0001")
    with pytest.raises(ChannelAccessRefused):
        await exchange.publish(aio_pika.Message(b"forged"), routing_key="branch.0002")


async def test_a_branch_reads_only_its_own_replies(
    branch_0001: aio_pika.abc.AbstractConnection,
) -> None:
    own = await branch_0001.channel()
    queue = await own.get_queue(branch_reply_queue("0001"), ensure=False)
    tag = await queue.consume(_ack)
    await queue.cancel(tag)
    other = await branch_0001.channel()
    with pytest.raises(ChannelAccessRefused):
        queue = await other.get_queue(branch_reply_queue("0002"), ensure=False)
        await queue.consume(_ack)
    binder = await branch_0001.channel()
    own_queue = await binder.get_queue(branch_reply_queue("0001"), ensure=False)
    with pytest.raises(ChannelAccessRefused):  # nor bind its queue to another branch's key
        await own_queue.bind(REPLIES_EXCHANGE, "branch.0002")


@pytest.mark.slow
async def test_a_secure_network_runs_on_its_own_users_and_reconciles(
    provisioned: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    urls, _ = provisioned
    config = NetworkConfig(
        data_dir=tmp_path,
        branch_ids=BRANCHES,
        terminals=2,
        amqp_url=urls["host"],
        node_urls=urls,
    )
    async with Network(config) as network:
        reports = await asyncio.gather(*(b.run(1.5) for b in network.branches))
    assert all(len(r.outcomes) > 5 and r.statistics.timeouts == 0 for r in reports)
    result = reconcile(ledger_path(tmp_path), reports)
    assert result.ok, result
