"""Replication off the critical path: the primary's ``ship`` does not wait for the broker,
its frames keep their order through failures, one ack verification serves the acks that
queued, and the standby's writes do not wait for its position acks (no broker here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.bus import Message
from common.errors import BusError
from common.frames import Frame, FrameKind, decode_frame
from common.topology import DEAD_EXCHANGE, DR_ACKS, DR_REPLICATION, REASON_HEADER
from host_node import replication
from host_node.batch import Settlement
from host_node.checkpoint import sign_checkpoint
from host_node.journal import ChainHead
from host_node.replication import Replicator, encode_batch, signed_frame
from host_node.standby import StandbyService
from host_node.store import Store
from tests.host_node.fakes import Teller, now
from tests.host_node.test_replication import (
    A,
    Handed,
    KeptBus,
    commit,
    primary,
    replica,
    shipped_frames,
    tables,
)

__all__ = ["primary", "replica"]  # fixtures


class GatedBus(KeptBus):
    """Keeps what is published; a publish to ``held_key`` returns only once the gate opens,
    and the first ``failing`` publishes raise."""

    def __init__(self, held_key: str = "", failing: int = 0) -> None:
        super().__init__()
        self.held_key = held_key
        self.gate = asyncio.Event()
        self.failing = failing
        self.attempts = 0

    async def publish(self, messages: Sequence[Message]) -> None:
        self.attempts += 1
        if self.attempts <= self.failing:
            raise BusError("connection lost")
        self.published += messages
        if any(m.routing_key == self.held_key for m in messages):
            await self.gate.wait()

    def frames(self) -> list[list[bytes]]:
        """The records of each replication frame published, in order."""
        return [
            list(decode_frame(m.body).records)
            for m in self.published
            if m.routing_key == DR_REPLICATION
        ]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


def replicator(bus: KeptBus, key: Ed25519PrivateKey) -> Replicator:
    return Replicator(bus, key, key.public_key(), mode="sync", standby_lost="async", timeout_s=1.0)


async def batches(primary: Store, count: int) -> list[Settlement]:
    teller = Teller()
    settlements = [await commit(primary, [teller.open_account(A, deposit=100)])]
    settlements += [await commit(primary, [teller.deposit(A, n + 1)]) for n in range(count - 1)]
    return settlements


async def test_ship_returns_before_the_confirm_and_batches_queued_meanwhile_share_a_frame(
    primary: Store, replica: StandbyService
) -> None:
    settlements = await batches(primary, 4)
    bus = GatedBus(held_key=DR_REPLICATION)  # the broker confirms nothing until the gate opens
    sender = replicator(bus, replica.key)
    await sender.start(ChainHead())
    async with asyncio.timeout(1):  # none of these waits for a confirm
        await sender.ship(settlements[0])
        await until(lambda: len(bus.frames()) == 1)
        for settlement in settlements[1:]:
            await sender.ship(settlement)
    assert bus.frames() == [[encode_batch(settlements[0])]] and sender.lag == 4
    bus.gate.set()
    await sender.stop()  # publishes what is queued
    assert bus.frames() == [
        [encode_batch(settlements[0])],
        [encode_batch(s) for s in settlements[1:]],
    ]
    for message in bus.published:
        await replica._on_frame(Handed(message.body))
    await replica._drain()
    assert replica.store.head == primary.head
    assert tables(replica.store.path) == tables(primary.path)


async def test_a_checkpoint_leads_its_frame_so_the_standby_stores_it(
    primary: Store, replica: StandbyService
) -> None:
    settlements = await batches(primary, 3)
    bus = GatedBus(held_key=DR_REPLICATION)
    sender = replicator(bus, replica.key)
    await sender.start(ChainHead())
    await sender.ship(settlements[0])
    await until(lambda: len(bus.frames()) == 1)
    await sender.ship(settlements[1])
    hashes = [e.hash for s in settlements[:2] for e in s.entries]
    checkpoint = sign_checkpoint(replica.key, hashes, first_seq=1, epoch=0, signed_at=now())
    await sender.ship_checkpoint(checkpoint)
    await sender.ship(settlements[2])
    bus.gate.set()
    await sender.stop()
    assert [len(frame) for frame in bus.frames()] == [1, 1, 2]  # not after the batch
    for message in bus.published:
        await replica._on_frame(Handed(message.body))
    await replica._drain()
    assert replica.store.head == primary.head and replica.signed_to == checkpoint.seq


async def test_a_frame_the_bus_fails_to_publish_is_retried_before_later_batches(
    primary: Store, tmp_path: Path
) -> None:
    settlements = await batches(primary, 3)
    bus = GatedBus(failing=2)
    sender = replicator(bus, Ed25519PrivateKey.generate())
    await sender.start(ChainHead())
    await sender.ship(settlements[0])
    await until(lambda: sender.failing)
    assert not sender.status().standby_up  # reported, not only logged
    await sender.ship(settlements[1])
    await sender.ship(settlements[2])
    await until(lambda: not sender.failing)
    await sender.stop()
    shipped = [record for frame in bus.frames() for record in frame]
    assert shipped == [encode_batch(s) for s in settlements]
    assert sender.status().standby_up and bus.attempts == 3


def ack(key: Ed25519PrivateKey, seq: int) -> Handed:
    record = orjson.dumps({"seq": seq, "hash": "00" * 32})
    return Handed(signed_frame(key, FrameKind.ACK, "standby", seq, [record], epoch=1))


async def test_one_verification_serves_the_acks_that_queued_and_a_forgery_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Ed25519PrivateKey.generate()
    verified: list[int] = []
    signed_by = replication._signed_by

    def counted(frame: Frame, public_key: Ed25519PublicKey) -> bool:
        verified.append(frame.header.sequence)
        return signed_by(frame, public_key)

    monkeypatch.setattr(replication, "_signed_by", counted)
    bus = KeptBus()
    sender = replicator(bus, key)
    await sender.start(ChainHead())
    genuine = [ack(key, seq) for seq in (1, 3, 2)]
    forged = ack(Ed25519PrivateKey.generate(), 9)
    for delivery in [*genuine, forged]:
        await sender._on_ack(delivery)
    await sender.stop()
    assert sender.acked == 3 and verified == [9, 3]
    assert [d.settled for d in [*genuine, forged]] == ["ack"] * 4
    (dead,) = [m for m in bus.published if m.exchange == DEAD_EXCHANGE]
    assert dead.body == forged.body and "not signed" in dead.headers[REASON_HEADER]
    await sender._on_ack(ack(key, 2))  # below the position: nothing to verify
    await sender.stop()
    assert sender.acked == 3 and verified == [9, 3]


async def test_writes_go_on_while_a_position_ack_waits_for_the_broker(
    primary: Store, replica: StandbyService
) -> None:
    frames = await shipped_frames(primary, replica, 4)
    bus = GatedBus(held_key=DR_ACKS)
    replica.bus = bus
    deliveries = [Handed(body) for body in frames]
    await replica._on_frame(deliveries[0])
    await until(lambda: bus.acks() == [1])  # published, its confirm held back
    for delivery in deliveries[1:]:
        await replica._on_frame(delivery)
    await until(lambda: replica.store.head == primary.head)
    await until(lambda: all(d.settled == "ack" for d in deliveries))
    assert bus.acks() == [1]
    bus.gate.set()
    await replica._drain()
    assert bus.acks() == [1, 4]  # the latest position, once
    assert all(m.transient for m in bus.published if m.routing_key == DR_ACKS)
