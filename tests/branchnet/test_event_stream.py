"""A whole simulation's event stream: masked throughout, and never in the transactions' way."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest

from branch_node import BranchReport
from branchnet.network import Network, NetworkConfig
from branchnet.reconcile import reconcile
from common.amqp_bus import AmqpBus
from common.bus import Delivery
from common.events import EventType, decode_events, decode_stats
from common.topology import EVENTS_EXCHANGE, Binding, QueueSpec, Topology
from host_node.events import EventConfig, EventStatistics
from tests.conftest import RabbitMQ

BRANCHES = ("0001", "0002")
STORE = Path("host") / "ledger.sqlite"
#: A buffer small enough for a short run to overflow it.
SMALL_BUFFER = EventConfig(buffer_bound=100, batch_max=20, stop_grace_s=0.2)
_FULL_CARD = re.compile(rb"\d{16}")
_RESIDENT_ID = re.compile(rb"\d{17}[\dX]")
_CJK = re.compile("[\u3400-\u9fff]")


def _watch(queue: str, *, max_length: int) -> Topology:
    return Topology(
        queues=(QueueSpec(queue, durable=False, max_length=max_length),),
        bindings=(
            Binding(queue, EVENTS_EXCHANGE, "bank.events.#"),
            Binding(queue, EVENTS_EXCHANGE, "bank.stats.*"),
        ),
    )


async def _run(network: Network, max_requests: int) -> list[BranchReport]:
    return list(
        await asyncio.gather(
            *(branch.run(90, max_requests=max_requests) for branch in network.branches)
        )
    )


def _secrets(data_dir: Path, network: Network) -> Iterator[tuple[str, bytes]]:
    """Everything that must never appear in an event: cards, ID numbers, names, PINs."""
    with sqlite3.connect(data_dir / STORE) as db:
        for (number,) in db.execute("SELECT number FROM accounts WHERE kind = 'customer'"):
            yield "card number", number.encode()
        for name, id_number in db.execute("SELECT name, id_number FROM customers"):
            yield "name", name.encode()
            yield "id number", id_number.encode()
    for branch in network.branches:
        for terminal in branch.terminals:
            for account in terminal.model.accounts.values():
                if account.pin is not None:
                    # a PIN as a JSON value: quoted, so that it is not a piece of a timestamp
                    yield "PIN", orjson.dumps(account.pin)


@pytest.mark.slow
async def test_a_whole_simulation_s_event_stream_is_masked(tmp_path: Path) -> None:
    network = Network(NetworkConfig(tmp_path, BRANCHES, terminals=3, seed=7))
    assert network.embedded is not None
    network.embedded.declare(_watch("ops.audit", max_length=1_000_000))
    seen: list[tuple[str, bytes]] = []

    async def collect(delivery: Delivery) -> None:
        seen.append((delivery.routing_key, delivery.body))
        await delivery.ack()

    async with network:
        consumer = network.embedded.connect()
        await consumer.connect()
        await consumer.consume("ops.audit", collect, prefetch=1000)
        reports = await _run(network, 700)
        assert network.host is not None
        answers = sum(network.host.statistics().by_result.values())
        publisher = network.host.events
        await asyncio.sleep(1.5)  # the last batch and a stats summary
        statistics = publisher.statistics()
        await consumer.close()

    assert reconcile(tmp_path / STORE, reports).ok
    assert statistics.dropped == 0
    events = [(k, b) for k, b in seen if k.startswith("bank.events.")]
    stats = [decode_stats(b) for k, b in seen if k.startswith("bank.stats.")]
    decoded = [event for _, body in events for event in decode_events(body)]
    by_type = {t: [e for e in decoded if e.type is t] for t in EventType}
    assert len(by_type[EventType.TRANSACTION]) == answers >= 1400
    assert by_type[EventType.DECLINE] and by_type[EventType.LARGE_CASH]
    # batched: far fewer messages than events (one per routing key per batch of answers)
    assert len(events) < len(decoded) / 2
    assert stats and max(s.requests for s in stats) >= 1400
    for key, body in events:
        for event in orjson.loads(body):
            assert key == f"bank.events.{event['branch']}.{event['type']}"
            assert not set(event) & {"pin", "pin_block", "new_pin", "ksn", "name", "id_number"}

    stream = b"\n".join(body for _, body in seen)
    assert not _FULL_CARD.search(stream), "a full card number in the event stream"
    assert not _RESIDENT_ID.search(stream), "an identity number in the event stream"
    assert not _CJK.search(stream.decode()), "a name in the event stream"
    checked = 0
    for what, secret in _secrets(tmp_path, network):
        assert secret not in stream, f"a {what} in the event stream"
        checked += 1
    assert checked > 100


async def _slow_subscriber_run(
    network: Network,
    declare: Callable[[], Awaitable[None]],
    stuck_depth: Callable[[], Awaitable[int]],
    tmp_path: Path,
) -> tuple[list[BranchReport], EventStatistics, int]:
    async with network:
        await declare()
        reports = await _run(network, 400)
        assert network.host is not None
        statistics = network.host.events.statistics()  # while running, not at shutdown
        depth = await stuck_depth()
    assert reconcile(tmp_path / STORE, reports).ok
    return reports, statistics, depth


def _assert_transactions_unaffected(
    reports: list[BranchReport], statistics: EventStatistics, stuck_depth: int
) -> None:
    outcomes = [o for report in reports for o in report.outcomes]
    assert len(outcomes) >= 800
    assert not [o for o in outcomes if o.result == "timeout"]
    # Events may be lost (transient, not mandatory): the stuck subscriber's full queue drops
    # them rather than hold the publisher back (common/bus.py), so they are lost there, not
    # in the publisher's buffer (statistics.dropped, what this checked when it waited).
    assert stuck_depth == 20, "the stuck subscriber's queue should have filled up"
    assert statistics.published > 20 and statistics.failed == 0


@pytest.mark.slow
async def test_a_stuck_subscriber_on_the_embedded_bus_costs_events_not_transactions(
    tmp_path: Path,
) -> None:
    network = Network(NetworkConfig(tmp_path, BRANCHES, terminals=3, seed=3, events=SMALL_BUFFER))
    embedded = network.embedded
    assert embedded is not None
    # a dashboard that subscribed and stopped reading: its queue fills up and stays full
    embedded.declare(_watch("stuck.dashboard", max_length=20))

    async def nothing() -> None:
        return None

    async def depth() -> int:
        async with embedded.connect() as bus:
            return (await bus.queue_stats("stuck.dashboard")).messages

    reports, statistics, stuck_depth = await _slow_subscriber_run(network, nothing, depth, tmp_path)
    _assert_transactions_unaffected(reports, statistics, stuck_depth)


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_stuck_subscriber_on_rabbitmq_costs_events_not_transactions(
    tmp_path: Path, rabbitmq: RabbitMQ
) -> None:
    url = await asyncio.to_thread(rabbitmq.new_vhost)
    if url is None:
        pytest.skip("needs a vhost of its own")
    try:
        config = NetworkConfig(
            tmp_path, BRANCHES, terminals=3, seed=3, amqp_url=url, events=SMALL_BUFFER
        )
        network = Network(config)
        stuck = AmqpBus(url, name="stuck-dashboard")

        async def declare() -> None:
            # a bounded queue that nobody reads refuses publishes once full (reject-publish)
            await stuck.connect()
            await stuck.declare(_watch("stuck.dashboard", max_length=20))

        async def depth() -> int:
            return (await stuck.queue_stats("stuck.dashboard")).messages

        try:
            reports, statistics, stuck_depth = await _slow_subscriber_run(
                network, declare, depth, tmp_path
            )
        finally:
            await stuck.close()
        _assert_transactions_unaffected(reports, statistics, stuck_depth)
    finally:
        await asyncio.to_thread(rabbitmq.drop_vhost, url)
