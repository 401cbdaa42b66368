"""The bus contract (common/bus.py), run against the embedded bus and RabbitMQ alike.

Each test gets buses on a fresh embedded broker or a fresh RabbitMQ vhost (``bus_factory``).
The last tests are RabbitMQ's own: queue arguments, dead-letter headers, a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp import frame as pamqp_frame

from common.amqp_bus import AmqpBus, queue_arguments
from common.amqp_consumer import Acks, AmqpSubscription, delivery_headers
from common.bus import Bus, Delivery, Message
from common.errors import BusClosedError, BusError, UnroutableError
from common.topology import (
    CORE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    ORIGIN_HEADER,
    REASON_HEADER,
    REPLIES_EXCHANGE,
    Binding,
    QueueSpec,
    Topology,
    branch_key,
    branch_reply_queue,
    branch_topology,
    event_key,
)
from tests.conftest import BusFactory, RabbitMQ

WAIT_S = 20.0


def queue(spec: QueueSpec) -> Topology:
    return Topology(queues=(spec,))


def to_queue(name: str, body: bytes, **headers: str) -> Message:
    """A message for ``name`` through the default exchange."""
    return Message("", name, body, headers)


class Inbox:
    """A handler that keeps what it is given; acks at once unless told not to."""

    def __init__(self, *, ack: bool = True) -> None:
        self.ack = ack
        self.deliveries: list[Delivery] = []
        self.arrived = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.arrived.set()
        if self.ack:
            await delivery.ack()

    @property
    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]

    async def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Delivery]:
        await until(lambda: len(self.deliveries) >= count, timeout_s)
        return self.deliveries


async def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


async def stays(condition: Callable[[], bool], seconds: float = 0.5) -> bool:
    """``condition`` holds throughout ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if not condition():
            return False
        await asyncio.sleep(0.02)
    return condition()


async def waiting(bus: Bus, name: str) -> int:
    return (await bus.queue_stats(name)).messages


async def settle_count(bus: Bus, name: str, expected: int) -> int:
    """The queue's message count once it reached ``expected`` (or what it was at the end);
    RabbitMQ counts a just-requeued message a moment later."""
    count = -1

    async def check() -> bool:
        nonlocal count
        count = await waiting(bus, name)
        return count == expected

    for _ in range(100):
        if await check():
            break
        await asyncio.sleep(0.05)
    return count


# -- the contract, on both buses -----------------------------------------------------------


async def test_round_trip_keeps_body_headers_and_routing(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.plain")))
    inbox = Inbox()
    await bus.consume("t.plain", inbox, prefetch=10)

    await bus.publish([to_queue("t.plain", b"frame-1", **{"x-branchnet-kind": "request"})])

    [delivery] = await inbox.wait_for(1)
    assert delivery.body == b"frame-1"
    assert delivery.headers["x-branchnet-kind"] == "request"
    assert (delivery.exchange, delivery.routing_key, delivery.queue) == ("", "t.plain", "t.plain")
    assert delivery.redelivered is False
    assert await settle_count(bus, "t.plain", 0) == 0


async def test_prefetch_bounds_unacked_deliveries(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.prefetch")))
    await bus.publish([to_queue("t.prefetch", b"%d" % i) for i in range(10)])
    inbox = Inbox(ack=False)
    await bus.consume("t.prefetch", inbox, prefetch=3)

    await inbox.wait_for(3)
    assert await stays(lambda: len(inbox.deliveries) == 3)
    assert await waiting(bus, "t.prefetch") == 7

    await inbox.deliveries[0].ack()
    await inbox.wait_for(4)
    assert await stays(lambda: len(inbox.deliveries) == 4)
    assert inbox.bodies == [b"0", b"1", b"2", b"3"]


async def test_unacked_deliveries_come_back_when_their_consumer_goes(
    bus_factory: BusFactory,
) -> None:
    first, second = await bus_factory("first"), await bus_factory("second")
    await first.declare(queue(QueueSpec("t.unacked")))
    await first.publish([to_queue("t.unacked", b"a"), to_queue("t.unacked", b"b")])
    lost = Inbox(ack=False)
    await first.consume("t.unacked", lost, prefetch=10)
    await lost.wait_for(2)
    assert not any(d.redelivered for d in lost.deliveries)

    await first.close()
    again = Inbox()
    await second.consume("t.unacked", again, prefetch=10)

    await again.wait_for(2)
    assert sorted(again.bodies) == [b"a", b"b"]
    assert all(d.redelivered for d in again.deliveries)


async def test_cancelled_subscription_returns_unacked_deliveries(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.cancel")))
    await bus.publish([to_queue("t.cancel", b"kept")])
    held = Inbox(ack=False)
    subscription = await bus.consume("t.cancel", held, prefetch=1)
    await held.wait_for(1)

    await subscription.cancel()
    assert await settle_count(bus, "t.cancel", 1) == 1
    again = Inbox()
    await bus.consume("t.cancel", again, prefetch=1)

    [delivery] = await again.wait_for(1)
    assert (delivery.body, delivery.redelivered) == (b"kept", True)
    assert await stays(lambda: len(held.deliveries) == 1, 0.2)


async def test_nack_requeues_or_drops(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.nack")))
    seen: list[tuple[bytes, bool]] = []

    async def handler(delivery: Delivery) -> None:
        seen.append((delivery.body, delivery.redelivered))
        if delivery.body == b"retry" and not delivery.redelivered:
            await delivery.nack(requeue=True)
        elif delivery.body == b"drop":
            await delivery.nack(requeue=False)
        else:
            await delivery.ack()

    await bus.consume("t.nack", handler, prefetch=1)
    await bus.publish([to_queue("t.nack", b"retry"), to_queue("t.nack", b"drop")])

    await until(lambda: len(seen) >= 3)
    assert await stays(lambda: len(seen) == 3)
    assert sorted(seen) == [(b"drop", False), (b"retry", False), (b"retry", True)]
    assert await waiting(bus, "t.nack") == 0


async def test_failing_handler_gets_the_message_again(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.fails")))
    attempts: list[bool] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.redelivered)
        if len(attempts) == 1:
            raise RuntimeError("store unavailable")
        await delivery.ack()

    await bus.consume("t.fails", handler, prefetch=1)
    await bus.publish([to_queue("t.fails", b"x")])

    await until(lambda: len(attempts) == 2)
    assert attempts == [False, True]


async def test_dead_letter_moves_message_to_bn_dead_with_reason(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(CORE + queue(QueueSpec("t.source")))
    await bus.publish([to_queue("t.source", b"garbage", origin="branch-0001")])
    source = Inbox(ack=False)
    await bus.consume("t.source", source, prefetch=1)
    [delivery] = await source.wait_for(1)

    await bus.dead_letter(delivery, "bad frame: short header")

    dead = Inbox()
    await bus.consume(DEAD_QUEUE, dead, prefetch=10)
    [corpse] = await dead.wait_for(1)
    assert corpse.body == b"garbage"
    assert corpse.headers[REASON_HEADER] == "bad frame: short header"
    assert corpse.headers[ORIGIN_HEADER] == "t.source"
    assert corpse.headers["origin"] == "branch-0001"
    assert await settle_count(bus, "t.source", 0) == 0


async def test_unroutable_message_raises_after_the_others_went_out(
    bus_factory: BusFactory,
) -> None:
    bus = await bus_factory()
    await bus.declare(CORE + queue(QueueSpec("t.known")))

    with pytest.raises(UnroutableError, match="nowhere"):
        await bus.publish(
            [
                to_queue("t.known", b"1"),
                to_queue("nowhere", b"2"),
                Message(REPLIES_EXCHANGE, branch_key("9999"), b"3"),
                to_queue("t.known", b"4"),
            ]
        )

    assert await waiting(bus, "t.known") == 2
    with pytest.raises(UnroutableError, match=re.escape("bn.replies/branch.9999")):
        await bus.publish([Message(REPLIES_EXCHANGE, branch_key("9999"), b"3")])


async def test_a_message_not_mandatory_is_dropped_quietly_when_unroutable(
    bus_factory: BusFactory,
) -> None:
    bus = await bus_factory()
    await bus.declare(CORE + queue(QueueSpec("t.kept")))

    await bus.publish(
        [
            Message(REPLIES_EXCHANGE, branch_key("9999"), b"nobody", mandatory=False),
            Message("", "t.kept", b"transient", transient=True),
        ]
    )

    inbox = Inbox()
    await bus.consume("t.kept", inbox, prefetch=1)
    await inbox.wait_for(1)
    assert inbox.bodies == [b"transient"]


async def test_a_message_that_may_be_lost_is_dropped_by_a_full_queue(
    bus_factory: BusFactory,
) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.lossy", max_length=2)))
    events = [Message("", "t.lossy", b"%d" % i, transient=True, mandatory=False) for i in range(5)]
    assert all(event.may_be_lost for event in events)

    await asyncio.wait_for(bus.publish(events), 5)  # not held back by the full queue

    assert await settle_count(bus, "t.lossy", 2) == 2
    inbox = Inbox()
    await bus.consume("t.lossy", inbox, prefetch=5)
    await inbox.wait_for(2)
    assert await stays(lambda: inbox.bodies == [b"0", b"1"], 0.3)


async def test_a_body_larger_than_a_frame_arrives_whole(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.large")))
    bodies = [bytes(range(256)) * 1200, b"", b"small"]  # 300 KiB: RabbitMQ's frames are 128

    await bus.publish([to_queue("t.large", body, n=str(i)) for i, body in enumerate(bodies)])

    inbox = Inbox()
    await bus.consume("t.large", inbox, prefetch=5)
    await inbox.wait_for(3)
    assert sorted((int(str(d.headers["n"])), d.body) for d in inbox.deliveries) == list(
        enumerate(bodies)
    )


async def test_settles_in_one_go_settle_only_their_own_deliveries(
    bus_factory: BusFactory,
) -> None:
    """Deliveries settled together while an earlier one is still in hand: the earlier one
    stays unacked (acks of a run go as one ack of the highest, which must not cover it), and
    a nack among them holds."""
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.settle")))
    await bus.publish([to_queue("t.settle", b"%d" % i) for i in range(6)])
    held = Inbox(ack=False)
    subscription = await bus.consume("t.settle", held, prefetch=10)
    deliveries = sorted(await held.wait_for(6), key=lambda d: d.body)

    for delivery in deliveries[1:]:  # in one turn of the event loop
        if delivery.body == b"3":
            await delivery.nack(requeue=False)
        else:
            await delivery.ack()
    await subscription.cancel()

    again = Inbox()
    await bus.consume("t.settle", again, prefetch=10)
    [back] = await again.wait_for(1)
    assert (back.body, back.redelivered) == (b"0", True)
    assert await stays(lambda: len(again.deliveries) == 1, 0.3)
    assert await waiting(bus, "t.settle") == 0


async def test_publishing_to_an_undeclared_exchange_fails(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.after")))

    with pytest.raises(BusError, match="no exchange"):
        await bus.publish([Message("bn.missing", "x", b"1")])

    await bus.publish([to_queue("t.after", b"still works")])
    assert await waiting(bus, "t.after") == 1


async def test_missing_queue_is_an_error(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    with pytest.raises(BusError, match="no queue"):
        await bus.queue_stats("t.absent")
    with pytest.raises(BusError, match="no queue"):
        await bus.consume("t.absent", Inbox(), prefetch=1)
    await bus.declare(queue(QueueSpec("t.present")))
    assert (await bus.queue_stats("t.present")).messages == 0


async def test_closed_bus_refuses_work(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.closed")))
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.publish([to_queue("t.closed", b"late")])


async def test_direct_exchange_routes_each_branch_its_own_replies(
    bus_factory: BusFactory,
) -> None:
    bus = await bus_factory()
    await bus.declare(CORE + branch_topology("0001") + branch_topology("0002"))

    await bus.publish(
        [
            Message(REPLIES_EXCHANGE, branch_key("0001"), b"for-0001-a"),
            Message(REPLIES_EXCHANGE, branch_key("0002"), b"for-0002"),
            Message(REPLIES_EXCHANGE, branch_key("0001"), b"for-0001-b"),
        ]
    )

    one, two = Inbox(), Inbox()
    await bus.consume(branch_reply_queue("0001"), one, prefetch=10)
    await bus.consume(branch_reply_queue("0002"), two, prefetch=10)
    await one.wait_for(2)
    await two.wait_for(1)
    assert one.bodies == [b"for-0001-a", b"for-0001-b"]
    assert two.bodies == [b"for-0002"]
    assert one.deliveries[0].exchange == REPLIES_EXCHANGE
    assert one.deliveries[0].routing_key == branch_key("0001")


async def test_topic_routing_on_amq_topic(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(
        Topology(
            queues=(QueueSpec("t.branch-0001-events"), QueueSpec("t.declines"), QueueSpec("t.all")),
            bindings=(
                Binding("t.branch-0001-events", EVENTS_EXCHANGE, "bank.events.0001.*"),
                Binding("t.declines", EVENTS_EXCHANGE, "bank.events.*.decline"),
                Binding("t.all", EVENTS_EXCHANGE, "bank.events.#"),
            ),
        )
    )

    await bus.publish(
        [
            Message(EVENTS_EXCHANGE, event_key("0001", "decline"), b"d1"),
            Message(EVENTS_EXCHANGE, event_key("0002", "decline"), b"d2"),
            Message(EVENTS_EXCHANGE, event_key("0001", "large_cash"), b"c1"),
        ]
    )

    assert await waiting(bus, "t.branch-0001-events") == 2
    assert await waiting(bus, "t.declines") == 2
    assert await waiting(bus, "t.all") == 3
    inbox = Inbox()
    await bus.consume("t.declines", inbox, prefetch=10)
    await inbox.wait_for(2)
    assert sorted(inbox.bodies) == [b"d1", b"d2"]


async def test_single_active_consumer_hands_over_when_the_first_goes(
    bus_factory: BusFactory,
) -> None:
    primary, standby = await bus_factory("primary"), await bus_factory("standby")
    await primary.declare(queue(QueueSpec("t.sac", quorum=True, single_active_consumer=True)))
    active, waiting_one = Inbox(), Inbox()
    await primary.consume("t.sac", active, prefetch=10)
    await standby.consume("t.sac", waiting_one, prefetch=10)

    await primary.publish([to_queue("t.sac", b"%d" % i) for i in range(5)])
    await active.wait_for(5)
    assert await stays(lambda: not waiting_one.deliveries)

    active.ack = False
    await primary.publish([to_queue("t.sac", b"in-flight")])
    await active.wait_for(6)
    await primary.close()
    await standby.publish([to_queue("t.sac", b"after")])

    await waiting_one.wait_for(2)
    assert waiting_one.bodies == [b"in-flight", b"after"]
    assert waiting_one.deliveries[0].redelivered is True


async def test_bounded_queue_pushes_back_and_loses_nothing(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.bounded", max_length=10)))
    bodies = [b"%03d" % i for i in range(60)]

    publishing = asyncio.create_task(bus.publish([to_queue("t.bounded", b) for b in bodies]))
    await asyncio.sleep(0.5)
    assert not publishing.done(), "a full queue must hold the publisher back"
    assert await waiting(bus, "t.bounded") <= 10

    inbox = Inbox()
    await bus.consume("t.bounded", inbox, prefetch=5)
    await asyncio.wait_for(publishing, WAIT_S)
    await inbox.wait_for(len(bodies))
    assert await stays(lambda: len(inbox.deliveries) == len(bodies), 0.3)
    assert sorted(inbox.bodies) == bodies


@pytest.mark.slow
async def test_large_batch_is_confirmed_and_all_of_it_arrives(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.batch")))
    count = 5_000
    messages = [to_queue("t.batch", b"%05d" % i + bytes(1019), n=str(i)) for i in range(count)]

    await bus.publish(messages)

    assert await waiting(bus, "t.batch") == count
    inbox = Inbox()
    await bus.consume("t.batch", inbox, prefetch=500)
    await inbox.wait_for(count, 60)
    assert sorted(d.body[:5] for d in inbox.deliveries) == sorted(b"%05d" % i for i in range(count))
    assert {d.headers["n"] for d in inbox.deliveries} == {str(i) for i in range(count)}


async def test_delivery_limit_dead_letters_a_poison_message(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    limit = 2
    await bus.declare(CORE + queue(QueueSpec("t.poison", quorum=True, delivery_limit=limit)))
    deliveries: list[bool] = []

    async def crashing(delivery: Delivery) -> None:
        deliveries.append(delivery.redelivered)
        raise ValueError("cannot decode")

    await bus.consume("t.poison", crashing, prefetch=1)
    await bus.publish([to_queue("t.poison", b"poison", branch="0001")])

    dead = Inbox()
    await bus.consume(DEAD_QUEUE, dead, prefetch=10)
    [corpse] = await dead.wait_for(1)
    assert corpse.body == b"poison"
    assert corpse.headers[REASON_HEADER] == "delivery limit exceeded"
    assert corpse.headers[ORIGIN_HEADER] == "t.poison"
    assert corpse.headers["branch"] == "0001"
    assert deliveries == [False] + [True] * limit
    assert await settle_count(bus, "t.poison", 0) == 0


async def test_redeclaring_keeps_queues_and_their_messages(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(CORE + branch_topology("0001"))
    await bus.publish([Message(REPLIES_EXCHANGE, branch_key("0001"), b"kept")])

    await bus.declare(CORE + branch_topology("0001"))
    await bus.declare(queue(QueueSpec(branch_reply_queue("0001"), max_length=5)))

    assert await waiting(bus, branch_reply_queue("0001")) == 1


async def test_queue_stats_counts_consumers(bus_factory: BusFactory) -> None:
    bus = await bus_factory()
    await bus.declare(queue(QueueSpec("t.stats")))
    first = await bus.consume("t.stats", Inbox(), prefetch=1)
    await bus.consume("t.stats", Inbox(), prefetch=1)
    assert (await bus.queue_stats("t.stats")).consumers == 2
    await first.cancel()
    await until_stats(bus, "t.stats", consumers=1)


async def until_stats(bus: Bus, name: str, *, consumers: int) -> None:
    for _ in range(100):
        if (await bus.queue_stats(name)).consumers == consumers:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never had {consumers} consumers")


# -- RabbitMQ's own ------------------------------------------------------------------------


def test_queue_arguments_follow_the_spec() -> None:
    assert queue_arguments(QueueSpec("q")) == {}
    assert queue_arguments(
        QueueSpec("q", quorum=True, single_active_consumer=True, max_length=7, delivery_limit=3)
    ) == {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-max-length": 7,
        "x-overflow": "reject-publish",
        "x-delivery-limit": 3,
        "x-dead-letter-exchange": "bn.dead",
    }
    with pytest.raises(BusError, match="quorum"):
        queue_arguments(QueueSpec("q", delivery_limit=3))


def test_broker_dead_lettering_reads_like_ours() -> None:
    headers = delivery_headers(
        {"x-first-death-reason": "delivery_limit", "x-first-death-queue": "host.requests"},
        "bn.dead",
    )
    assert headers[REASON_HEADER] == "delivery limit exceeded"
    assert headers[ORIGIN_HEADER] == "host.requests"
    ours = delivery_headers({REASON_HEADER: "bad frame", "x-first-death-reason": "x"}, "bn.dead")
    assert ours[REASON_HEADER] == "bad frame"


class _FakeChannel:
    """What :class:`Acks` writes to: a channel number, the connection's write queue."""

    def __init__(self, *, room: int = 0) -> None:
        self.number = 7
        self.is_closed = False
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(room)
        self._observers: list[asyncio.Future[None]] = []

    @property
    def closing(self) -> asyncio.Future[None]:
        """An observer of the channel's closing."""
        observer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.is_closed:
            observer.set_result(None)
        self._observers.append(observer)
        return observer

    def close(self) -> None:
        self.is_closed = True
        for observer in self._observers:
            if not observer.done():
                observer.set_result(None)

    def written(self) -> list[tuple[str, int, bool]]:
        """The settles written so far: (method, delivery tag, multiple or requeue)."""
        settles = []
        while not self.write_queue.empty():
            payload = self.write_queue.get_nowait().payload
            while payload:
                used, channel, frame = pamqp_frame.unmarshal(payload)
                payload = payload[used:]
                assert channel == self.number
                assert isinstance(frame, spec.Basic.Ack | spec.Basic.Nack)
                flag = frame.multiple if isinstance(frame, spec.Basic.Ack) else frame.requeue
                settles.append((frame.name, frame.delivery_tag, flag))
        return settles


async def _settled(acks: list[int], nacks: list[int], delivered: int = 6) -> list[Any]:
    channel = _FakeChannel()
    settling = Acks(cast(aiormq.Channel, channel), "q")
    for tag in range(1, delivered + 1):
        settling.received(tag)
    for tag in nacks:
        settling.nack(tag, requeue=True)
    for tag in acks:
        settling.ack(tag)
    assert channel.written() == []  # not before the end of the loop's turn
    await asyncio.sleep(0)
    return channel.written()


async def test_acks_of_a_settled_run_go_as_one_multiple_ack() -> None:
    assert await _settled([1, 2, 3], []) == [("Basic.Ack", 3, True)]
    assert await _settled([3, 1, 2], []) == [("Basic.Ack", 3, True)]


async def test_acks_after_an_unsettled_delivery_go_one_by_one() -> None:
    assert await _settled([2, 3, 5], []) == [
        ("Basic.Ack", 2, False),
        ("Basic.Ack", 3, False),
        ("Basic.Ack", 5, False),
    ]
    assert await _settled([1, 2, 4, 6], []) == [
        ("Basic.Ack", 2, True),
        ("Basic.Ack", 4, False),
        ("Basic.Ack", 6, False),
    ]


async def test_nacks_go_before_a_multiple_ack_that_passes_them() -> None:
    assert await _settled([1, 3], [2]) == [("Basic.Nack", 2, True), ("Basic.Ack", 3, True)]


async def test_settles_wait_their_turn_behind_a_full_write_queue() -> None:
    channel = _FakeChannel(room=1)
    channel.write_queue.put_nowait(ChannelFrame(payload=b"", should_close=False))
    settling = Acks(cast(aiormq.Channel, channel), "q")
    for tag in range(1, 5):
        settling.received(tag)
    settling.ack(2)
    await asyncio.sleep(0)  # finds the queue full: waits
    settling.ack(1)
    settling.ack(3)
    await asyncio.sleep(0)
    assert channel.write_queue.get_nowait().payload == b""  # room for the waiting write

    await asyncio.sleep(0.01)
    assert channel.written() == [("Basic.Ack", 2, False)]  # the next waits for room again
    await settling.drain()
    assert channel.written() == [("Basic.Ack", 3, True)]


async def test_settles_on_a_closed_channel_are_dropped() -> None:
    channel = _FakeChannel()
    settling = Acks(cast(aiormq.Channel, channel), "q")
    settling.received(1)
    settling.ack(1)
    channel.close()
    await asyncio.sleep(0)
    assert channel.written() == []


async def test_a_settle_waiting_for_room_gives_up_when_the_channel_closes() -> None:
    channel = _FakeChannel(room=1)
    channel.write_queue.put_nowait(ChannelFrame(payload=b"", should_close=False))
    settling = Acks(cast(aiormq.Channel, channel), "q")
    settling.received(1)
    settling.ack(1)
    await asyncio.sleep(0)  # waits for room that never comes

    channel.close()
    await asyncio.wait_for(settling.drain(), WAIT_S)
    assert channel.write_queue.get_nowait().payload == b""
    assert channel.written() == []


def test_repr_hides_the_password() -> None:
    bus = AmqpBus("amqp://branchnet:s3cret@127.0.0.1:5672/bank")
    assert "s3cret" not in repr(bus)


async def test_connect_failure_is_a_bus_error() -> None:
    bus = AmqpBus("amqp://guest:guest@127.0.0.1:1/", reconnect_timeout_s=2)
    with pytest.raises(BusError, match="cannot connect"):
        await bus.connect()


def _close_connections(rabbitmq: RabbitMQ, vhost: str, name: str) -> int:
    """Force-close the broker connections named ``name`` through the management API."""
    assert rabbitmq.management_url is not None
    auth = urllib.parse.urlsplit(rabbitmq.amqp_url)
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(
        None, rabbitmq.management_url, auth.username or "guest", auth.password or "guest"
    )
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
    listing = (
        f"{rabbitmq.management_url}/api/vhosts/{urllib.parse.quote(vhost, safe='')}/connections"
    )
    with opener.open(listing, timeout=10) as response:
        connections = json.load(response)
    closed = 0
    for connection in connections:
        if connection.get("client_properties", {}).get("connection_name") == name:
            quoted = urllib.parse.quote(connection["name"], safe="")
            request = urllib.request.Request(
                f"{rabbitmq.management_url}/api/connections/{quoted}", method="DELETE"
            )
            with opener.open(request, timeout=10):
                closed += 1
    return closed


@pytest.fixture
async def amqp_bus(rabbitmq: RabbitMQ) -> AsyncIterator[AmqpBus]:
    """An AMQP bus named ``dropped`` on a vhost of its own."""
    url = await asyncio.to_thread(rabbitmq.new_vhost)
    if url is None:
        pytest.skip("needs the management API")
    bus = AmqpBus(url, name="dropped")
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.close()
        await asyncio.to_thread(rabbitmq.drop_vhost, url)


@pytest.mark.rabbitmq
@pytest.mark.slow
async def test_bus_survives_a_dropped_connection(amqp_bus: AmqpBus, rabbitmq: RabbitMQ) -> None:
    bus = amqp_bus
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(bus.url).path[1:])
    await bus.declare(queue(QueueSpec("t.drop")))
    inbox = Inbox()
    await bus.consume("t.drop", inbox, prefetch=10)
    await bus.publish([to_queue("t.drop", b"before")])
    await inbox.wait_for(1)

    closed = 0
    for _ in range(100):  # the management API lists a new connection after a moment
        closed = await asyncio.to_thread(_close_connections, rabbitmq, vhost, "dropped")
        if closed:
            break
        await asyncio.sleep(0.1)
    assert closed == 1

    await asyncio.wait_for(bus.publish([to_queue("t.drop", b"after")]), WAIT_S)
    await inbox.wait_for(2)
    assert inbox.bodies[-1] == b"after"


@pytest.mark.rabbitmq
async def test_a_consumer_the_broker_cancelled_consumes_again(amqp_bus: AmqpBus) -> None:
    bus = amqp_bus
    await bus.declare(queue(QueueSpec("t.recreated")))
    inbox = Inbox()
    await bus.consume("t.recreated", inbox, prefetch=10)

    connection = await aio_pika.connect(bus.url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete("t.recreated")  # the broker cancels the consumer
    await asyncio.sleep(0.3)  # it tries again, and waits for the queue
    await bus.declare(queue(QueueSpec("t.recreated")))
    await bus.publish([to_queue("t.recreated", b"again")])

    await inbox.wait_for(1)
    assert inbox.bodies == [b"again"]


@pytest.mark.rabbitmq
async def test_consuming_again_on_the_same_channel_leaves_held_deliveries_unacked(
    amqp_bus: AmqpBus,
) -> None:
    """After the broker cancelled a consumer, deliveries it handed out before are still on
    the channel: acks of later ones (a multiple ack) must not settle one still in hand."""
    bus = amqp_bus
    await bus.declare(queue(QueueSpec("t.again")))
    seen: list[bytes] = []

    async def hold_a(delivery: Delivery) -> None:
        seen.append(delivery.body)
        if delivery.body != b"a":
            await delivery.ack()

    subscription = cast(AmqpSubscription, await bus.consume("t.again", hold_a, prefetch=10))
    await bus.publish([to_queue("t.again", b"a"), to_queue("t.again", b"b")])
    await until(lambda: len(seen) == 2)
    acks = subscription._acks
    assert acks is not None
    channel, tag = acks.channel, subscription._consumer_tag
    await channel.basic_cancel(tag)  # what the broker may do
    subscription._on_broker_cancel(spec.Basic.Cancel(consumer_tag=tag))
    await until(lambda: tag in channel.consumers)  # consuming again, on the same channel

    await bus.publish([to_queue("t.again", b"c"), to_queue("t.again", b"d")])
    await until(lambda: len(seen) == 4)
    await subscription.cancel()

    again = Inbox()
    await bus.consume("t.again", again, prefetch=10)
    [back] = await again.wait_for(1)
    assert back.body == b"a"
