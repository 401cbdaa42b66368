"""Fixtures every test may use: a real RabbitMQ for the session, and buses for contract tests.

RabbitMQ is ``BRANCHNET_AMQP_URL`` when set, else a private node started once per session
in a temporary directory (about 12 s) and stopped at the end. Each run gets its own vhost,
and each AMQP ``bus_factory`` test another, so no test sees another's messages. Tests that
need RabbitMQ carry ``@pytest.mark.rabbitmq``; ``-m "not rabbitmq"`` skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest
import structlog

from branchnet.broker import (
    BrokerInfo,
    add_vhost,
    ensure_rabbitmq_installed,
    management_reachable,
    remove_vhost,
    start_broker,
    stop_broker,
)
from common.amqp_bus import AmqpBus
from common.bus import Bus
from common.embedded_bus import EmbeddedBroker
from common.topology import Topology

AMQP_URL_ENV = "BRANCHNET_AMQP_URL"
#: Management API of the broker named by BRANCHNET_AMQP_URL (default: its host, port 15672).
MANAGEMENT_URL_ENV = "BRANCHNET_MANAGEMENT_URL"


@dataclass(slots=True)
class RabbitMQ:
    """The broker of this test session."""

    amqp_url: str
    #: None when vhosts cannot be made: tests then share ``amqp_url``'s vhost.
    management_url: str | None
    #: Our private node and its directory; None when BRANCHNET_AMQP_URL named another broker.
    node: BrokerInfo | None
    base_dir: Path | None = None
    run_id: str = field(default_factory=lambda: f"bn-test-{uuid.uuid4().hex[:10]}")
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def new_vhost(self) -> str | None:
        """A fresh vhost's AMQP URL, or None when vhosts cannot be made."""
        if self.management_url is None:
            return None
        vhost = f"{self.run_id}-{next(self._serial)}"
        return add_vhost(self.management_url, self.amqp_url, vhost)

    def drop_vhost(self, url: str) -> None:
        if self.management_url is not None:
            vhost = urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])
            remove_vhost(self.management_url, self.amqp_url, vhost)


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    """The session's RabbitMQ: BRANCHNET_AMQP_URL, or a private node started for the run."""
    given = os.environ.get(AMQP_URL_ENV)
    if given:
        yield RabbitMQ(given, _management_url_for(given), None)
        return
    ensure_rabbitmq_installed()
    base_dir = Path(tempfile.mkdtemp(prefix="branchnet-rabbitmq-"))
    base_dir.chmod(0o755)  # the node runs as user rabbitmq
    try:
        node = start_broker(base_dir)
        try:
            yield RabbitMQ(node.amqp_url, node.management_url, node, base_dir)
        finally:
            stop_broker(base_dir)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def _management_url_for(amqp_url: str) -> str | None:
    parts = urllib.parse.urlsplit(amqp_url)
    management_url = os.environ.get(MANAGEMENT_URL_ENV) or f"http://{parts.hostname}:15672"
    return management_url if management_reachable(management_url, amqp_url) else None


@pytest.fixture(scope="session")
def amqp_base_url(rabbitmq: RabbitMQ) -> str:
    """The broker's URL, on its default vhost."""
    return rabbitmq.amqp_url


@pytest.fixture(scope="session")
def amqp_url(rabbitmq: RabbitMQ) -> Iterator[str]:
    """A vhost of this run's own (deleted at the end), or BRANCHNET_AMQP_URL as it is."""
    url = rabbitmq.new_vhost()
    if url is None:
        yield rabbitmq.amqp_url
        return
    try:
        yield url
    finally:
        rabbitmq.drop_vhost(url)


@pytest.fixture
def fresh_amqp_url(rabbitmq: RabbitMQ, amqp_url: str) -> Iterator[str]:
    """A vhost for this test alone (the run's vhost when vhosts cannot be made)."""
    url = rabbitmq.new_vhost()
    if url is None:
        yield amqp_url
        return
    try:
        yield url
    finally:
        rabbitmq.drop_vhost(url)


@pytest.fixture(scope="session")
def mqtt_url(rabbitmq: RabbitMQ, amqp_url: str) -> str | None:
    """MQTT into the run's vhost (its ``amq.topic``) when the node is ours, else None."""
    if rabbitmq.node is None:
        return None
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path[1:])
    return rabbitmq.node.mqtt_url_for(vhost)


class BusFactory:
    """Makes connected buses on one broker for one test; all are closed after it.

    ``kind`` is ``"embedded"`` or ``"amqp"``.
    """

    def __init__(self, kind: str, make: Callable[[str], Bus]) -> None:
        self.kind = kind
        self._make = make
        self._serial = itertools.count(1)
        self.buses: list[Bus] = []

    async def __call__(self, name: str | None = None) -> Bus:
        bus = self._make(name or f"test-bus-{next(self._serial)}")
        await bus.connect()
        self.buses.append(bus)
        return bus

    async def close(self) -> None:
        for bus in reversed(self.buses):
            await bus.close()


class _TrackedAmqpBus(AmqpBus):
    """Remembers the queues it declared, for a shared vhost to be cleaned after a test."""

    def __init__(self, url: str, name: str, declared: set[str]) -> None:
        super().__init__(url, name=name)
        self._declared = declared

    async def declare(self, topology: Topology) -> None:
        self._declared.update(queue.name for queue in topology.queues)
        await super().declare(topology)


@pytest.fixture(
    params=["embedded", pytest.param("amqp", marks=pytest.mark.rabbitmq)],
)
async def bus_factory(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """Connected buses sharing one broker: a fresh EmbeddedBroker, or a fresh RabbitMQ vhost."""
    if request.param == "embedded":
        broker = EmbeddedBroker()
        factory = BusFactory("embedded", lambda _name: broker.connect())
        yield factory
        await factory.close()
        return
    rabbitmq: RabbitMQ = request.getfixturevalue("rabbitmq")
    url = await asyncio.to_thread(rabbitmq.new_vhost)
    declared: set[str] = set()
    shared_url = request.getfixturevalue("amqp_url") if url is None else url
    factory = BusFactory("amqp", lambda name: _TrackedAmqpBus(shared_url, name, declared))
    try:
        yield factory
    finally:
        await factory.close()
        if url is not None:
            await asyncio.to_thread(rabbitmq.drop_vhost, url)
        else:
            await _delete_queues(shared_url, declared)


async def _delete_queues(url: str, names: set[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        for name in sorted(names):
            channel = await connection.channel()
            async with channel:
                await channel.queue_delete(name)


@contextlib.contextmanager
def logging_kept() -> Iterator[None]:
    """The process's logging configuration as it was before the block, whatever the block
    configured (``branchnet.cli.main`` logs onto the current stderr, which pytest closes)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """:func:`logging_kept` around a test."""
    with logging_kept():
        yield
