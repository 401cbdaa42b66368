from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import orjson
import pytest
from structlog.testing import capture_logs

from branch_node.pinpad import PinPad
from common.bus import Bus, Delivery, Message
from common.embedded_bus import EmbeddedBroker
from common.frames import FrameKind, build_frame, decode_frame, encode_frame
from common.pin_commands import (
    PIN_RESPONSE_ADAPTER,
    Echo,
    ExportKey,
    GenerateKey,
    GenerateOffset,
    HsmError,
    KeyCheck,
    PinCommand,
    PinResponse,
    TranslatePin,
    VerifyPin,
)
from common.pinblock import decipher_format3
from common.topology import (
    CRYPTO_COMMANDS,
    DEAD_QUEUE,
    DEFAULT_EXCHANGE,
    HOST_CRYPTO_REPLIES,
    ORIGIN_HEADER,
    REASON_HEADER,
    REPLY_TO_HEADER,
    QueueSpec,
    Topology,
)
from crypto_node import INLINE_COMMANDS, CryptoKeys, CryptoService, Hsm
from crypto_node.service import RECORD_HEADER

PAN = "6200010100000018"
PIN = "802113"
TIMEOUT = 5.0


@dataclass
class Node:
    broker: EmbeddedBroker
    host: Bus
    keys: CryptoKeys
    pad: PinPad
    service: CryptoService
    replies: asyncio.Queue[Delivery]
    dead: asyncio.Queue[Delivery]
    hsm_threads: list[str]  # the thread each batch ran on

    async def send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        message_headers = {REPLY_TO_HEADER: HOST_CRYPTO_REPLIES} if headers is None else headers
        await self.host.publish([Message(DEFAULT_EXCHANGE, CRYPTO_COMMANDS, body, message_headers)])

    async def send_records(self, records: list[bytes], sequence: int = 1) -> None:
        await self.send(encode_frame(build_frame(FrameKind.PIN_COMMAND, "host", sequence, records)))

    async def reply(self, queue: asyncio.Queue[Delivery] | None = None) -> list[PinResponse]:
        delivery = await asyncio.wait_for((queue or self.replies).get(), TIMEOUT)
        frame = decode_frame(delivery.body, expect=FrameKind.PIN_RESPONSE)
        return [PIN_RESPONSE_ADAPTER.validate_json(record) for record in frame.records]


async def _collect(bus: Bus, queue_name: str) -> asyncio.Queue[Delivery]:
    queue: asyncio.Queue[Delivery] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await delivery.ack()
        queue.put_nowait(delivery)

    await bus.consume(queue_name, handler, prefetch=100)
    return queue


class _ThreadNoting(Hsm):
    """An HSM that notes the thread each batch ran on."""

    threads: list[str]

    def execute_batch(self, commands: Sequence[PinCommand]) -> list[PinResponse]:
        self.threads.append(threading.current_thread().name)
        return super().execute_batch(commands)


@pytest.fixture(params=[0, INLINE_COMMANDS], ids=["thread", "inline"])
async def node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    broker = EmbeddedBroker()
    crypto_bus, host = broker.connect(), broker.connect()
    await crypto_bus.connect()
    await host.connect()
    keys = CryptoKeys.generate()
    hsm = _ThreadNoting(keys, persist=False)
    hsm.threads = []
    service = CryptoService(crypto_bus, hsm, inline_commands=request.param)
    await service.start()
    replies = await _collect(host, HOST_CRYPTO_REPLIES)
    dead = await _collect(host, DEAD_QUEUE)
    pad = PinPad(*keys.pinpad_key("0001", "01"))
    yield Node(broker, host, keys, pad, service, replies, dead, hsm.threads)
    await service.stop()
    await host.close()
    await crypto_bus.close()


def _encode(command: GenerateOffset | VerifyPin | Echo) -> bytes:
    return command.__pydantic_serializer__.to_json(command)


def _verify_record(node: Node, command_id: str, pin: str, value: str) -> bytes:
    """A VP command record for ``pin`` typed at the node's PIN pad."""
    block = node.pad.encrypt(pin, PAN)
    return _encode(VerifyPin(command_id=command_id, pan=PAN, pin=block, verification_value=value))


async def _enroll(node: Node) -> str:
    command = GenerateOffset(command_id="enrol", pan=PAN, pin=node.pad.encrypt(PIN, PAN))
    await node.send_records([_encode(command)])
    (response,) = await node.reply()
    assert response.error is HsmError.OK and response.verification_value
    return response.verification_value


async def test_a_command_frame_gets_one_response_frame(node: Node) -> None:
    value = await _enroll(node)
    records = [
        _verify_record(node, "ok", PIN, value),
        _verify_record(node, "bad", "000000", value),
        _encode(Echo(command_id="echo")),
    ]
    await node.send_records(records, sequence=2)
    responses = await node.reply()
    assert [(r.command_id, r.error) for r in responses] == [
        ("ok", HsmError.OK),
        ("bad", HsmError.VERIFICATION_FAILED),
        ("echo", HsmError.OK),
    ]
    assert node.replies.empty()
    stats = await node.host.queue_stats(CRYPTO_COMMANDS)
    assert stats.messages == 0  # acked
    assert node.service.frames_handled == 2


@pytest.mark.parametrize("node", [INLINE_COMMANDS], indirect=True, ids=["inline"])
async def test_small_batches_run_on_the_event_loop_when_asked(node: Node) -> None:
    value = await _enroll(node)
    for size in (INLINE_COMMANDS, INLINE_COMMANDS + 1):
        ids = [f"{size}-{n}" for n in range(size)]
        await node.send_records([_verify_record(node, i, PIN, value) for i in ids])
        assert [(r.command_id, r.error) for r in await node.reply()] == [
            (i, HsmError.OK) for i in ids
        ]
    # the enrolment and the batch of INLINE_COMMANDS on the loop, the larger in the HSM thread
    loop_thread = threading.current_thread().name
    assert node.hsm_threads[:2] == [loop_thread] * 2 and node.hsm_threads[2].startswith("hsm")


@pytest.mark.parametrize("node", [0], indirect=True, ids=["thread"])
async def test_batches_run_in_the_hsm_thread_unless_inline_is_asked(node: Node) -> None:
    value = await _enroll(node)
    await node.send_records([_verify_record(node, "v", PIN, value)])
    assert [r.error for r in await node.reply()] == [HsmError.OK]
    assert len(node.hsm_threads) == 2 and all(n.startswith("hsm") for n in node.hsm_threads)


async def test_a_batch_the_hsm_fails_is_answered_99(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(hsm: Hsm, commands: Sequence[PinCommand]) -> list[PinResponse]:
        raise RuntimeError("HSM fault")

    monkeypatch.setattr(Hsm, "execute_batch", fail)
    await node.send_records([_encode(Echo(command_id="e1")), _encode(Echo(command_id="e2"))])
    assert [(r.command_id, r.error) for r in await node.reply()] == [
        ("e1", HsmError.INTERNAL_ERROR),
        ("e2", HsmError.INTERNAL_ERROR),
    ]


async def test_a_replayed_block_in_a_later_frame_is_refused(node: Node) -> None:
    value = await _enroll(node)
    block = node.pad.encrypt(PIN, PAN)
    record = _encode(VerifyPin(command_id="v", pan=PAN, pin=block, verification_value=value))
    await node.send_records([record], sequence=2)
    assert [r.error for r in await node.reply()] == [HsmError.OK]
    await node.send_records([record], sequence=3)
    assert [r.error for r in await node.reply()] == [HsmError.REPLAY]


async def test_answers_go_to_the_reply_to_queue(node: Node) -> None:
    await node.host.declare(Topology(queues=(QueueSpec("test.replies"),)))
    elsewhere = await _collect(node.host, "test.replies")
    frame = build_frame(FrameKind.PIN_COMMAND, "host", 1, [_encode(Echo(command_id="e"))])
    await node.send(encode_frame(frame), {REPLY_TO_HEADER: "test.replies"})
    assert [r.command_id for r in await node.reply(elsewhere)] == ["e"]
    # without the header, the default queue
    await node.send(encode_frame(frame), {})
    assert [r.command_id for r in await node.reply()] == ["e"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"garbage", "bad frame header"),
        (
            encode_frame(build_frame(FrameKind.REQUEST, "0001", 1, [b"{}"])),
            "expected a pin_command frame",
        ),
    ],
)
async def test_bad_frames_are_dead_lettered(node: Node, body: bytes, reason: str) -> None:
    await node.send(body)
    dead = await asyncio.wait_for(node.dead.get(), TIMEOUT)
    assert dead.body == body
    assert reason in str(dead.headers[REASON_HEADER])
    assert dead.headers[ORIGIN_HEADER] == CRYPTO_COMMANDS
    assert node.replies.empty()
    assert (await node.host.queue_stats(CRYPTO_COMMANDS)).messages == 0


async def test_a_tampered_frame_is_dead_lettered(node: Node) -> None:
    body = encode_frame(build_frame(FrameKind.PIN_COMMAND, "host", 1, [b'{"a":1}']))
    await node.send(body.replace(b'{"a":1}', b'{"a":2}'))
    dead = await asyncio.wait_for(node.dead.get(), TIMEOUT)
    assert "Merkle" in str(dead.headers[REASON_HEADER])


async def test_bad_records_are_answered_or_dead_lettered_and_the_rest_answered(node: Node) -> None:
    value = await _enroll(node)
    good = _verify_record(node, "good", PIN, value)
    bad_pan = orjson.dumps({"code": "VP", "command_id": "badpan", "pan": "12", "pin": {}})
    unknown = orjson.dumps({"code": "ZZ", "command_id": "zz"})
    unreadable = b"{not json"
    no_id = orjson.dumps({"code": "EC"})
    await node.send_records([bad_pan, unreadable, good, unknown, no_id], sequence=2)
    responses = await node.reply()
    assert [(r.command_id, r.error) for r in responses] == [
        ("badpan", HsmError.FORMAT_ERROR),
        ("good", HsmError.OK),
        ("zz", HsmError.UNKNOWN_COMMAND),
    ]
    dead = [await asyncio.wait_for(node.dead.get(), TIMEOUT) for _ in range(2)]
    assert sorted(d.body for d in dead) == sorted([unreadable, no_id])
    assert {d.headers[RECORD_HEADER] for d in dead} == {"1", "4"}
    assert all(d.headers[ORIGIN_HEADER] == CRYPTO_COMMANDS for d in dead)
    assert {str(d.headers[REASON_HEADER]) for d in dead} == {
        "record is not JSON",
        "missing or malformed command_id",
    }


async def test_a_frame_of_only_unreadable_records_is_acked_without_reply(node: Node) -> None:
    await node.send_records([b"[]", b"nope"])
    dead = [await asyncio.wait_for(node.dead.get(), TIMEOUT) for _ in range(2)]
    assert {d.body for d in dead} == {b"[]", b"nope"}
    await asyncio.sleep(0.05)
    assert node.replies.empty()
    assert (await node.host.queue_stats(CRYPTO_COMMANDS)).messages == 0


async def test_an_unroutable_reply_dead_letters_the_command_frame(node: Node) -> None:
    frame = build_frame(FrameKind.PIN_COMMAND, "host", 1, [_encode(Echo(command_id="e"))])
    await node.send(encode_frame(frame), {REPLY_TO_HEADER: "no.such.queue"})
    dead = await asyncio.wait_for(node.dead.get(), TIMEOUT)
    assert dead.body == encode_frame(frame)
    assert "unroutable" in str(dead.headers[REASON_HEADER])


async def test_stop_leaves_later_frames_in_the_queue_for_a_restart(node: Node) -> None:
    await node.service.stop()
    assert (await node.host.queue_stats(CRYPTO_COMMANDS)).consumers == 0
    await node.send_records([_encode(Echo(command_id="e"))])
    await asyncio.sleep(0.05)
    assert (await node.host.queue_stats(CRYPTO_COMMANDS)).messages == 1
    assert node.replies.empty()
    await node.service.start()
    assert [(r.command_id, r.error) for r in await node.reply()] == [("e", HsmError.OK)]


async def test_no_pin_pan_block_or_key_reaches_the_logs(node: Node) -> None:
    with capture_logs() as logs:
        value = await _enroll(node)
        blocks = [node.pad.encrypt(PIN, PAN), node.pad.encrypt("999999", PAN)]
        records = [
            _encode(VerifyPin(command_id=f"v{n}", pan=PAN, pin=b, verification_value=value))
            for n, b in enumerate(blocks)
        ]
        await node.send_records([*records, b"{broken"], sequence=2)
        await node.reply()
        await node.send(b"garbage " + PAN.encode())
        await asyncio.wait_for(node.dead.get(), TIMEOUT)
        await asyncio.wait_for(node.dead.get(), TIMEOUT)
    frames = [entry for entry in logs if entry["event"] == "pin_frame"]
    assert len(frames) == 2
    assert frames[1]["records"] == 3 and frames[1]["records_dead_lettered"] == 1
    assert frames[1]["outcomes"] == {"ok": 1, "verification_failed": 1}
    text = repr(logs)
    initial_key = node.keys.pinpad_key("0001", "01")[1]
    secrets = [PIN, "999999", PAN, value, *(b.pin_block for b in blocks)]
    secrets += [node.keys.bdk.hex(), node.keys.pvk.hex(), initial_key.hex()]
    for secret in secrets:
        assert secret.upper() not in text.upper(), secret[:2]
    assert "pin_frame_dead_lettered" in text
    assert repr(node.service).startswith("CryptoService(")


async def test_key_and_translation_commands_travel_in_frames(node: Node) -> None:
    block = node.pad.encrypt(PIN, PAN)
    commands = [
        TranslatePin(
            command_id="tp", pan=PAN, pin_block=block.pin_block, ksn=block.ksn, format=4,
            destination_key="zpk/legacy", destination_format=3,
        ),
        KeyCheck(command_id="kc", key="zpk/legacy"),
        GenerateKey(command_id="gk", usage="K0", algorithm="A", mode_of_use="B", length=32),
        ExportKey(command_id="ek", key="pvk-ibm/1", kek="kek/main"),
    ]  # fmt: skip
    await node.send_records([c.__pydantic_serializer__.to_json(c) for c in commands])
    tp, kc, gk, ek = await node.reply()
    assert tp.error is HsmError.OK and tp.pin_block is not None
    zpk = node.keys.ring.get("zpk/legacy")
    assert decipher_format3(zpk.key, bytes.fromhex(tp.pin_block), PAN) == PIN
    assert kc.error is HsmError.OK and kc.kcv == zpk.kcv
    assert gk.error is HsmError.OK and gk.key_block is not None and gk.key_block.startswith("D")
    assert ek.error is HsmError.USAGE_ERROR and ek.key_block is None
    assert "pin_block" not in repr(tp) and tp.pin_block not in repr(tp)
