"""The crypto node's bus shell: PIN command frames in, one PIN response frame out per frame.

Consumes ``crypto.commands``. Each message is a frame of kind ``pin_command`` whose records are
:data:`~common.pin_commands.PinCommand` JSON. The batch runs on the HSM in a worker thread
(one, so commands keep their order against the replay marks) — or, with ``inline_commands``,
a batch that small on the event loop (its crypto and its one KSN log append cost less than
the hand-off's two thread wake-ups; frames are served one at a time either way). The
answer is one
``pin_response`` frame, published to the default exchange with the command message's
``reply_to`` header as routing key (``host.crypto-replies`` by default); then the command
message is acked.

Bad input never stops the node: an undecodable frame is dead-lettered with the reason; a
record that does not parse is answered ``15`` (``68`` for an unknown command code) when its
``command_id`` is readable, else a copy of it is dead-lettered, and the rest of the frame is
still answered. One log line per frame, with counts only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from common.bus import Bus, Delivery, Message, Subscription
from common.errors import FrameError, UnroutableError
from common.frames import FrameKind, build_frame, decode_frame, encode_frame
from common.logs import get_logger
from common.pin_commands import (
    PIN_COMMAND_ADAPTER,
    HsmError,
    PinCommand,
    PinResponse,
)
from common.topology import (
    CORE,
    CRYPTO_COMMANDS,
    DEAD_EXCHANGE,
    DEFAULT_EXCHANGE,
    HOST_CRYPTO_REPLIES,
    ORIGIN_HEADER,
    REASON_HEADER,
    REPLY_TO_HEADER,
)
from crypto_node.hsm import Hsm

#: Header on a dead-lettered record copy: its position in the frame.
RECORD_HEADER = "x-branchnet-record"
SENDER = "crypto"
_COMMAND_CODES = frozenset({"GO", "VP", "CP", "TP", "GK", "IK", "EK", "KC", "EC"})
#: What a crypto node process of its own runs on its event loop: a batch of this many
#: commands is about a millisecond of CPU, less than the HSM thread's hand-off costs.
INLINE_COMMANDS = 8

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A record that did not parse: answered by id when possible, else dead-lettered."""

    command_id: str | None
    error: HsmError
    reason: str


def read_command(record: bytes) -> PinCommand | _Unreadable:
    """Parse one command record, or say how to answer it."""
    try:
        return PIN_COMMAND_ADAPTER.validate_json(record)
    except ValidationError as error:
        problem = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"]) or "record"
        reason = f"{where}: {problem['type']}"
    try:
        document = orjson.loads(record)
    except orjson.JSONDecodeError:
        return _Unreadable(None, HsmError.FORMAT_ERROR, "record is not JSON")
    if not isinstance(document, dict):
        return _Unreadable(None, HsmError.FORMAT_ERROR, "record is not a JSON object")
    command_id = document.get("command_id")
    if not isinstance(command_id, str) or not 1 <= len(command_id) <= 40:
        return _Unreadable(None, HsmError.FORMAT_ERROR, "missing or malformed command_id")
    if document.get("code") not in _COMMAND_CODES:
        return _Unreadable(command_id, HsmError.UNKNOWN_COMMAND, "unknown command code")
    return _Unreadable(command_id, HsmError.FORMAT_ERROR, reason)


class CryptoService:
    """Serves ``crypto.commands`` with an :class:`Hsm`.

    Args:
        bus: a connected bus.
        hsm: the HSM core.
        prefetch: command frames in flight from the queue.
        inline_commands: batches of at most this many commands run on the event loop
            (0: all in the HSM thread, for a loop shared with other nodes: the KSN log's
            ``fdatasync`` would hold them up).
    """

    def __init__(self, bus: Bus, hsm: Hsm, *, prefetch: int = 8, inline_commands: int = 0) -> None:
        self._bus = bus
        self._hsm = hsm
        self._prefetch = prefetch
        self._inline_commands = inline_commands
        self._executor: ThreadPoolExecutor | None = None
        self._sequence = itertools.count()
        self._subscription: Subscription | None = None
        self._stopping = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.frames_handled = 0
        self.commands_handled = 0

    def __repr__(self) -> str:
        return f"CryptoService(frames_handled={self.frames_handled})"

    async def start(self) -> None:
        """Declare the topology and start consuming ``crypto.commands``."""
        await self._bus.declare(CORE)
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hsm")
        self._subscription = await self._bus.consume(
            CRYPTO_COMMANDS, self._on_delivery, prefetch=self._prefetch
        )

    async def stop(self) -> None:
        """Finish the frames in hand, then stop consuming; others go back to the queue."""
        self._stopping = True
        await self._idle.wait()
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            return  # left unsettled: cancelling the subscription puts it back
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._handle(delivery)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _handle(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        try:
            frame = decode_frame(delivery.body, expect=FrameKind.PIN_COMMAND)
        except FrameError as error:
            await self._bus.dead_letter(delivery, str(error))
            _log.warning("pin_frame_dead_lettered", reason=str(error), queue=delivery.queue)
            return
        parsed = [read_command(record) for record in frame.records]
        commands = [item for item in parsed if not isinstance(item, _Unreadable)]
        results = iter(await self._execute(commands) if commands else [])
        responses: list[PinResponse] = []
        messages: list[Message] = []
        for index, (item, record) in enumerate(zip(parsed, frame.records, strict=True)):
            if not isinstance(item, _Unreadable):
                responses.append(next(results))
            elif item.command_id is not None:
                responses.append(PinResponse(command_id=item.command_id, error=item.error))
            else:
                messages.append(self._dead_record(delivery, record, index, item.reason))
        reply_to = delivery.headers.get(REPLY_TO_HEADER)
        queue = reply_to if isinstance(reply_to, str) and reply_to else HOST_CRYPTO_REPLIES
        if responses:
            to_json = PinResponse.__pydantic_serializer__.to_json  # the adapter's bytes, sooner
            records = [to_json(response) for response in responses]
            reply = build_frame(FrameKind.PIN_RESPONSE, SENDER, next(self._sequence), records)
            messages.append(Message(DEFAULT_EXCHANGE, queue, encode_frame(reply), transient=True))
        try:
            await self._bus.publish(messages)
        except UnroutableError:
            await self._bus.dead_letter(delivery, f"reply queue {queue!r} is unroutable")
            _log.error("pin_reply_unroutable", reply_queue=queue, sequence=frame.header.sequence)
            return
        await delivery.ack()
        self.frames_handled += 1
        self.commands_handled += len(frame.records)
        if not _log.is_enabled_for(logging.INFO):
            return  # the usual level: skip counting the outcomes for a line that is dropped
        outcomes = Counter(response.error.name.lower() for response in responses)
        _log.info(
            "pin_frame",
            sender=frame.header.sender,
            sequence=frame.header.sequence,
            records=len(frame.records),
            outcomes=dict(outcomes),
            records_dead_lettered=len(messages) - (1 if responses else 0),
            reply_queue=queue,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def _execute(self, commands: list[PinCommand]) -> list[PinResponse]:
        """Run the batch on the HSM (thread); a failure there answers every command ``99``."""
        try:
            if self._executor is None:
                raise RuntimeError("the crypto service is not started")
            if len(commands) <= self._inline_commands:
                return self._hsm.execute_batch(commands)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._hsm.execute_batch, commands)
        except Exception as error:
            _log.error("hsm_batch_failed", error=type(error).__name__)
            return [
                PinResponse(command_id=command.command_id, error=HsmError.INTERNAL_ERROR)
                for command in commands
            ]

    @staticmethod
    def _dead_record(delivery: Delivery, record: bytes, index: int, reason: str) -> Message:
        headers = {
            REASON_HEADER: reason,
            ORIGIN_HEADER: delivery.queue,
            RECORD_HEADER: str(index),
        }
        return Message(DEAD_EXCHANGE, delivery.routing_key, record, headers)
