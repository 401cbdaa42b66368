from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.bus import Bus, Delivery, Message
from common.embedded_bus import EmbeddedBroker
from common.frames import FrameKind, build_frame, encode_frame
from common.pin_commands import PIN_RESPONSE_ADAPTER, HsmError, PinResponse, VerifyPin
from common.topology import (
    CORE,
    CRYPTO_COMMANDS,
    DEAD_QUEUE,
    HOST_CRYPTO_REPLIES,
    REASON_HEADER,
    QueueSpec,
    Topology,
)
from host_node.pin_client import PinClient
from tests.conftest import BusFactory
from tests.host_node.fakes import FakeCryptoNode, account_no, fake_pin

A = account_no(1)


def verify(command_id: str, pin: str) -> VerifyPin:
    return VerifyPin(command_id=command_id, pan=A, pin=fake_pin(pin), verification_value="1234")


@pytest.fixture
async def buses() -> AsyncIterator[tuple[Bus, Bus]]:
    broker = EmbeddedBroker()
    host, crypto = broker.connect(), broker.connect()
    await host.connect()
    await crypto.connect()
    await host.declare(CORE)
    yield host, crypto
    await host.close()
    await crypto.close()


@pytest.fixture
async def crypto(buses: tuple[Bus, Bus]) -> AsyncIterator[FakeCryptoNode]:
    node = FakeCryptoNode(buses[1])
    await node.start()
    yield node
    await node.stop()


@pytest.fixture
async def client(buses: tuple[Bus, Bus]) -> AsyncIterator[PinClient]:
    client = PinClient(buses[0], timeout_s=0.3)
    await client.start()
    yield client
    await client.stop()


async def test_a_batch_goes_in_one_frame_and_answers_match_by_id(
    client: PinClient, crypto: FakeCryptoNode
) -> None:
    commands = [verify(f"x-{n}", "1234" if n % 2 else "9999") for n in range(10)]
    answers = await client.execute(commands)
    assert len(crypto.frames) == 1 and crypto.frames[0].header.count == 10
    assert crypto.reply_to == [HOST_CRYPTO_REPLIES]
    for n in range(10):
        answer = answers[f"x-{n}"]
        assert answer is not None
        assert answer.error is (HsmError.OK if n % 2 else HsmError.VERIFICATION_FAILED)
    assert client.pending == 0


async def test_silence_is_none_and_a_late_answer_is_dropped(
    client: PinClient, crypto: FakeCryptoNode
) -> None:
    crypto.hold = True
    assert await client.execute([verify("late-1", "1234")]) == {"late-1": None}
    assert client.pending == 0
    await crypto.release()
    for _ in range(100):
        if client.late:
            break
        await asyncio.sleep(0.01)
    assert client.late == 1
    answers = await client.execute([verify("next", "1234")])
    assert answers["next"] is not None and answers["next"].error is HsmError.OK


async def test_no_crypto_node_means_none_for_every_command(client: PinClient) -> None:
    answers = await client.execute([verify("a", "1234"), verify("b", "1234")])
    assert answers == {"a": None, "b": None}


async def test_an_unreadable_response_frame_is_dead_lettered(
    client: PinClient, buses: tuple[Bus, Bus]
) -> None:
    crypto = buses[1]
    dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def collect(delivery: Delivery) -> None:
        await dead.put(delivery)
        await delivery.ack()

    await crypto.consume(DEAD_QUEUE, collect, prefetch=4)
    await crypto.publish([Message("", HOST_CRYPTO_REPLIES, b"garbage")])
    letter = await asyncio.wait_for(dead.get(), 2)
    assert letter.body == b"garbage" and "bad frame header" in str(letter.headers[REASON_HEADER])


async def test_commands_that_cannot_be_sent_get_none_by_the_deadline(
    bus_factory: BusFactory,
) -> None:
    """A broker that will not take the commands (here ``crypto.commands`` is full and nacks
    every publish) must cost the batch its crypto timeout, not stall it: the bus retries a
    nacked publish until the queue has room, so only the client's deadline ends the wait."""
    bus = await bus_factory()
    await bus.declare(Topology(queues=(QueueSpec(CRYPTO_COMMANDS, max_length=1),)))
    await bus.declare(CORE)  # keeps the bounded queue as it is
    await bus.publish([Message("", CRYPTO_COMMANDS, b"takes the only place")])
    client = PinClient(bus, timeout_s=0.5)
    await client.start()
    try:
        # the outer bound only keeps a regression from hanging the suite
        answers = await asyncio.wait_for(client.execute([verify("a", "1234")]), 60)
        assert answers == {"a": None}
        assert client.pending == 0
        # the next batch is not held up behind the one that gave up
        assert await asyncio.wait_for(client.execute([verify("b", "1234")]), 60) == {"b": None}
    finally:
        await client.stop()


async def _answer_frame(crypto: Bus, *responses: PinResponse) -> None:
    records = [PIN_RESPONSE_ADAPTER.dump_json(response) for response in responses]
    frame = build_frame(FrameKind.PIN_RESPONSE, "crypto", 1, records)
    await crypto.publish([Message("", HOST_CRYPTO_REPLIES, encode_frame(frame))])


async def test_answers_count_off_as_they_come_and_the_last_one_ends_the_wait(
    buses: tuple[Bus, Bus],
) -> None:
    host, crypto = buses
    client = PinClient(host, timeout_s=30.0)  # only the answers can end the wait in time
    await client.start()
    try:
        batch = asyncio.create_task(client.execute([verify("a", "1"), verify("b", "2")]))
        while client.pending < 2:
            await asyncio.sleep(0.005)
        await _answer_frame(crypto, PinResponse(command_id="b", error=HsmError.OK))
        while client.pending > 1:
            await asyncio.sleep(0.005)
        assert not batch.done()  # "a" is still unanswered
        twice = PinResponse(command_id="b", error=HsmError.REPLAY)
        await _answer_frame(crypto, twice, PinResponse(command_id="a", error=HsmError.OK))
        answers = await asyncio.wait_for(batch, 5)
        assert {i: a and a.error for i, a in answers.items()} == {
            "a": HsmError.OK,
            "b": HsmError.OK,  # the first answer stands; the second is late
        }
        assert client.late == 1 and client.pending == 0
    finally:
        await client.stop()


async def test_stopping_ends_a_waiting_batch_with_none_for_the_unanswered(
    buses: tuple[Bus, Bus],
) -> None:
    client = PinClient(buses[0], timeout_s=30.0)
    await client.start()
    batch = asyncio.create_task(client.execute([verify("a", "1")]))
    while not client.pending:
        await asyncio.sleep(0.005)
    await client.stop()
    assert await asyncio.wait_for(batch, 5) == {"a": None}
