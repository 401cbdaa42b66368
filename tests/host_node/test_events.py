"""The host's event publisher: what operators see, and that it never holds a transaction up."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from common.bus import Delivery
from common.embedded_bus import EmbeddedBroker, EmbeddedBus
from common.events import (
    CustomerTier,
    EventType,
    ReplicationStatus,
    StatsSummary,
    TierChanged,
    decode_events,
    decode_stats,
)
from common.money import yuan
from common.replies import Reply
from common.requests import Request
from common.results import ResultCode
from common.topology import (
    EVENTS_EXCHANGE,
    Binding,
    QueueSpec,
    Topology,
)
from host_node import HostConfig, HostService
from host_node.events import EventConfig, EventPublisher
from host_node.metrics import HostCollector
from tests.host_node.conftest import connected
from tests.host_node.fakes import T0, BranchDesk, FakeCryptoNode, Teller, account_no, item_of

BRANCHES = ("0001", "0002")
A, B = account_no(1), account_no(2)
WATCH = "ops.watch"


class Watcher:
    """An ops consumer bound to every event and stats key."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.stats: list[StatsSummary] = []

    async def start(self, bus: EmbeddedBus, *, max_length: int = 100_000) -> None:
        await bus.declare(
            Topology(
                queues=(QueueSpec(WATCH, max_length=max_length),),
                bindings=(
                    Binding(WATCH, EVENTS_EXCHANGE, "bank.events.#"),
                    Binding(WATCH, EVENTS_EXCHANGE, "bank.stats.*"),
                ),
            )
        )
        await bus.consume(WATCH, self._on, prefetch=64)

    async def _on(self, delivery: Delivery) -> None:
        if delivery.routing_key.startswith("bank.stats."):
            self.stats.append(decode_stats(delivery.body))
        else:
            self.events.append((delivery.routing_key, delivery.body))
        await delivery.ack()

    def of_type(self, kind: EventType) -> list[object]:
        return [e for k, b in self.events if k.endswith("." + kind.value) for e in decode_events(b)]

    async def wait_for(self, kind: EventType, count: int = 1, timeout: float = 5.0) -> list[object]:
        async with asyncio.timeout(timeout):
            while len(self.of_type(kind)) < count:
                await asyncio.sleep(0.01)
        return self.of_type(kind)


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, HostService, Watcher]]:
    broker = EmbeddedBroker()
    crypto = FakeCryptoNode(await connected(broker))
    await crypto.start()
    watcher = Watcher()
    await watcher.start(await connected(broker))
    events = EventPublisher(await connected(broker), config=EventConfig(stats_interval_s=0.2))
    host = HostService(
        await connected(broker),
        tmp_path,
        branch_ids=BRANCHES,
        config=HostConfig(crypto_timeout_s=2.0),
        events=events,
    )
    await host.start()
    yield broker, host, watcher
    await host.stop()
    await crypto.stop()


async def test_answers_become_masked_events_and_stats(
    network: tuple[EmbeddedBroker, HostService, Watcher],
) -> None:
    broker, _, watcher = network
    desk = BranchDesk(await connected(broker))
    await desk.start()
    teller = Teller()
    replies = await desk.ask(
        [
            teller.open_account(A, deposit=yuan(100), pin=teller.pin("111111")),
            teller.deposit(A, yuan(60_000)),
            teller.withdraw(A, yuan(10), teller.pin("222222")),
            teller.withdraw(A, yuan(10), teller.pin("222222")),
            teller.withdraw(A, yuan(10), teller.pin("222222")),
            teller.deposit(B, 100),
        ]
    )
    assert [r.result.value for r in replies] == ["00", "00", "55", "55", "75", "14"]

    outcomes = await watcher.wait_for(EventType.TRANSACTION, 6)
    by_request = {o.request_id: o.result for o in outcomes}  # type: ignore[attr-defined]
    assert by_request == {r.request_id: r.result for r in replies}
    assert {o.branch for o in outcomes} == {"0001"}  # type: ignore[attr-defined]
    keys = {k for k, _ in watcher.events}
    assert "bank.events.0001.transaction" in keys and "bank.events.network.node_status" in keys
    assert all(k.startswith(("bank.events.0001.", "bank.events.network.")) for k in keys)
    declines = await watcher.wait_for(EventType.DECLINE, 4)
    assert sorted(d.reason for d in declines) == [  # type: ignore[attr-defined]
        "PIN locked: third wrong PIN",
        "no such account",
        "wrong PIN",
        "wrong PIN",
    ]
    (large,) = await watcher.wait_for(EventType.LARGE_CASH)
    assert large.amount_fen == yuan(60_000) and large.account == A[:6] + "******" + A[-4:]  # type: ignore[attr-defined]
    (lockout,) = await watcher.wait_for(EventType.PIN_LOCKOUT)
    assert lockout.request_id == replies[4].request_id  # type: ignore[attr-defined]
    (up,) = await watcher.wait_for(EventType.NODE_STATUS)
    assert up.status == "up"  # type: ignore[attr-defined]

    async with asyncio.timeout(5):
        while not any(s.requests >= 6 for s in watcher.stats):
            await asyncio.sleep(0.05)
    summary = next(s for s in watcher.stats if s.requests >= 6)
    assert summary.node == "host" and "inbox" in summary.queues
    assert sum(s.by_result.get("75", 0) for s in watcher.stats) == 1
    assert sum(s.by_branch.get("0001", 0) for s in watcher.stats) == 6

    everything = b"".join(body for _, body in watcher.events)
    assert A.encode() not in everything and b"Wang" not in everything
    assert b"111111" not in everything and b"222222" not in everything


async def test_other_parts_of_the_host_emit_through_it(
    network: tuple[EmbeddedBroker, HostService, Watcher],
) -> None:
    _, host, watcher = network
    host.events.watch_replication(
        lambda: ReplicationStatus(mode="async", lag_entries=7, lag_s=0.25)
    )
    host.events.watch_tiers(lambda: {CustomerTier.WEALTH: 3})
    at = dt.datetime.now(dt.UTC)
    event = TierChanged(
        node="host", branch="0001", at=at, customer="110****1233", from_tier=None, to_tier="wealth"
    )
    assert host.events.emit(event)
    (changed,) = await watcher.wait_for(EventType.TIER_CHANGED)
    assert changed == event
    async with asyncio.timeout(5):
        while not any(s.replication is not None for s in watcher.stats):
            await asyncio.sleep(0.05)
    latest = watcher.stats[-1]
    assert latest.replication is not None and latest.replication.lag_entries == 7
    assert latest.tiers == {CustomerTier.WEALTH: 3}


async def test_a_stuck_subscriber_costs_events_not_transactions(tmp_path: Path) -> None:
    """A subscriber whose queue is full and never drains: the host answers everything."""
    broker = EmbeddedBroker()
    crypto = FakeCryptoNode(await connected(broker))
    await crypto.start()
    stuck = await connected(broker)
    await stuck.declare(
        Topology(
            queues=(QueueSpec("slow.dashboard", max_length=5),),
            bindings=(Binding("slow.dashboard", EVENTS_EXCHANGE, "bank.events.#"),),
        )
    )
    events = EventPublisher(
        await connected(broker),
        config=EventConfig(buffer_bound=50, batch_max=10, stop_grace_s=0.1),
    )
    host = HostService(await connected(broker), tmp_path, branch_ids=BRANCHES, events=events)
    await host.start()
    desk = BranchDesk(await connected(broker))
    await desk.start()
    teller = Teller()
    replies = await desk.ask([teller.open_account(A, deposit=yuan(1))])
    for _ in range(10):
        replies += await desk.ask([teller.deposit(A, 100 + n) for n in range(50)])
    await host.stop()
    await crypto.stop()
    assert len(replies) == 501 and all(r.approved for r in replies)
    statistics = events.statistics()
    # Events may be lost (transient, not mandatory): the full queue drops them and never holds
    # the publisher back (common/bus.py), so they are published, and lost there. (Before, the
    # publisher waited for room, and its buffer dropped the events instead.) A message carries
    # a batch's events of one routing key, so more messages than the queue's 5 went out.
    assert statistics.messages > 5
    assert (await stuck.queue_stats("slow.dashboard")).messages == 5
    # each answer raised one event: every event was published or counted as dropped
    assert statistics.published + statistics.dropped == statistics.emitted == 1 + 501 + 1
    assert statistics.published > 5 + 50
    assert statistics.buffered == 0 and statistics.failed == 0
    assert host.statistics().by_result == {"00": 501}


async def test_a_batch_of_answers_goes_as_one_message_per_routing_key() -> None:
    """Not one message per event: each costs the host and the broker a publish."""
    broker = EmbeddedBroker()
    watcher = Watcher()
    await watcher.start(await connected(broker))
    events = EventPublisher(await connected(broker), config=EventConfig(stats_interval_s=0))
    await events.start()
    ones, twos = Teller("0001"), Teller("0002")
    requests = [ones.deposit(A, 100 + n) for n in range(5)] + [
        twos.deposit(account_no(3, "0002"), 100 + n) for n in range(3)
    ]
    declined = {requests[1].request_id, requests[6].request_id}
    answered = [
        (item_of(request), _answer(request, declined=request.request_id in declined))
        for request in requests
    ]
    events.on_batch(answered)
    await watcher.wait_for(EventType.TRANSACTION, len(requests))
    await watcher.wait_for(EventType.DECLINE, 2)
    await events.stop()
    by_key = {k: decode_events(b) for k, b in watcher.events if k.startswith("bank.events.000")}
    assert sorted(by_key) == [
        "bank.events.0001.decline",
        "bank.events.0001.transaction",
        "bank.events.0002.decline",
        "bank.events.0002.transaction",
    ]
    assert len([k for k, _ in watcher.events if k.startswith("bank.events.000")]) == 4
    ones_sent = by_key["bank.events.0001.transaction"]
    assert [getattr(e, "request_id", None) for e in ones_sent] == [
        r.request_id for r in requests[:5]
    ]
    assert len(by_key["bank.events.0002.transaction"]) == 3
    assert all(
        key == f"bank.events.{e.branch}.{e.type.value}" for key, es in by_key.items() for e in es
    )
    statistics = events.statistics()
    assert statistics.published == 8 + 2 + 2  # node up and down, one message each
    assert statistics.messages == 4 + 2


def _answer(request: Request, *, declined: bool) -> Reply:
    result = ResultCode.NO_SUCH_ACCOUNT if declined else ResultCode.APPROVED
    return Reply(
        request_id=request.request_id,
        result=result,
        reason=result.name.lower(),
        received_at=T0,
        processed_at=T0,
    )


def test_emit_never_waits_and_counts_drops() -> None:
    publisher = EventPublisher(
        EmbeddedBroker().connect(), config=EventConfig(buffer_bound=3, stats_interval_s=0)
    )
    at = dt.datetime.now(dt.UTC)
    results = [
        publisher.emit(
            TierChanged(
                node="host",
                branch="0001",
                at=at,
                customer="110****1233",
                from_tier=None,
                to_tier="base",
            )
        )
        for _ in range(5)
    ]
    assert results == [True, True, True, False, False]
    assert publisher.statistics().dropped == 2 and publisher.statistics().buffered == 3


async def test_the_host_exports_its_work_as_prometheus_metrics(
    network: tuple[EmbeddedBroker, HostService, Watcher],
) -> None:
    broker, host, _ = network
    registry = CollectorRegistry()
    registry.register(HostCollector(host.statistics))
    requests_before = (
        REGISTRY.get_sample_value("branchnet_requests_total", {"kind": "deposit", "result": "14"})
        or 0.0
    )
    commits_before = (
        REGISTRY.get_sample_value("branchnet_stage_seconds_count", {"stage": "journal_commit"})
        or 0.0
    )
    desk = BranchDesk(await connected(broker))
    await desk.start()
    teller = Teller()
    await desk.ask([teller.deposit(B, 100), teller.deposit(B, 200)])
    text = generate_latest(registry).decode()
    assert 'branchnet_frames_total{outcome="handled"} 1.0' in text
    assert 'branchnet_host_queue_depth{queue="inbox"} 0.0' in text
    requests_after = REGISTRY.get_sample_value(
        "branchnet_requests_total", {"kind": "deposit", "result": "14"}
    )
    assert requests_after == requests_before + 2
    commits = REGISTRY.get_sample_value(
        "branchnet_stage_seconds_count", {"stage": "journal_commit"}
    )
    assert commits is not None and commits >= commits_before + 1


async def test_a_refused_frame_raises_a_security_alert(
    network: tuple[EmbeddedBroker, HostService, Watcher],
) -> None:
    broker, _, watcher = network
    desk = BranchDesk(await connected(broker))
    await desk.start()
    teller = Teller()
    await desk.send([teller.deposit(A, 100)], sender="0002")  # 0002's name on 0001's key
    await desk.send_body(b"\x00garbage 6222020001000000123")
    alerts = await watcher.wait_for(EventType.SECURITY_ALERT, 2)
    kinds = sorted(a.alert.value for a in alerts)  # type: ignore[attr-defined]
    assert kinds == ["bad_frame", "permission_denied"]
    assert all(a.branch == "network" for a in alerts)  # type: ignore[attr-defined]
    assert b"6222020001000000123" not in b"".join(body for _, body in watcher.events)
