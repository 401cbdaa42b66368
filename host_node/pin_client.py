"""The host's side of the crypto node: a batch's PIN commands out in frames, answers back.

Commands go to the default exchange with routing key ``crypto.commands`` and a ``reply_to``
header naming ``host.crypto-replies``; responses come back there as ``PIN_RESPONSE`` frames
and are matched to commands by ``command_id``. One deadline covers the whole exchange,
sending included: a command unanswered within the timeout (or that could not be sent in
it — a broker withholding its confirms, or nacking a full ``crypto.commands``) gets None,
which the rules answer with ``91``; the batch never waits longer. Answers that arrive after
their batch gave up on them are dropped. Commands and answers are transient messages: they
are worthless after the deadline, so their confirms need not wait for the broker's disk.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterable, Iterator, Sequence

from pydantic import ValidationError

from common.bus import Bus, Delivery, Message, Subscription
from common.errors import BusError, FrameError
from common.frames import MAX_RECORDS, FrameKind, build_frame, decode_frame, encode_frame
from common.logs import get_logger
from common.pin_commands import PIN_RESPONSE_ADAPTER, PinCommand, PinResponse
from common.topology import (
    CRYPTO_COMMANDS,
    DEFAULT_EXCHANGE,
    HOST_CRYPTO_REPLIES,
    REPLY_TO_HEADER,
)

SENDER = "host"

_log = get_logger(__name__)


class _Awaiting:
    """One batch's answers as they come; ``done`` resolves when the last one is in."""

    __slots__ = ("answers", "done", "left")

    def __init__(self, command_ids: Iterable[str], done: asyncio.Future[None]) -> None:
        self.answers: dict[str, PinResponse | None] = dict.fromkeys(command_ids)
        self.left = len(self.answers)
        self.done = done

    def answer(self, response: PinResponse) -> None:
        self.answers[response.command_id] = response
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)


class PinClient:
    """Sends PIN commands in frames and awaits their answers together."""

    def __init__(self, bus: Bus, *, timeout_s: float, prefetch: int = 64) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self.prefetch = prefetch
        self._waiting: dict[str, _Awaiting] = {}  # by command id, until answered
        self._sequence = itertools.count(1)
        self._subscription: Subscription | None = None
        self.late = 0

    @property
    def pending(self) -> int:
        """Commands sent and not yet answered."""
        return len(self._waiting)

    def command_ids(self) -> Iterator[str]:
        """Fresh command ids, unique to this client so a predecessor's answers never match."""
        nonce = secrets.token_hex(4)
        return (f"{nonce}-{n}" for n in itertools.count(1))

    async def start(self) -> None:
        self._subscription = await self.bus.consume(
            HOST_CRYPTO_REPLIES, self._on_frame, prefetch=self.prefetch
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        for awaiting in self._waiting.values():
            if not awaiting.done.done():
                awaiting.done.set_result(None)  # its batch returns now, unanswered ones None
        self._waiting.clear()

    async def execute(self, commands: Sequence[PinCommand]) -> dict[str, PinResponse | None]:
        """Send ``commands`` and wait (up to the timeout) for all their answers.

        Returns:
            Each command id mapped to its response, or to None when none came in time.
        """
        if not commands:
            return {}
        awaiting = _Awaiting(
            (command.command_id for command in commands),
            asyncio.get_running_loop().create_future(),
        )
        waiting = self._waiting
        for command_id in awaiting.answers:
            waiting[command_id] = awaiting
        sent = False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.bus.publish(self._frames(commands))
                sent = True
                await awaiting.done
        except TimeoutError:
            if not sent:
                _log.warning("pin commands not sent in time", commands=len(commands))
        except BusError as error:
            _log.warning("pin commands not sent", commands=len(commands), error=str(error))
        finally:
            for command_id in awaiting.answers:
                waiting.pop(command_id, None)
        return awaiting.answers

    def _frames(self, commands: Sequence[PinCommand]) -> list[Message]:
        records = [command.__pydantic_serializer__.to_json(command) for command in commands]
        return [
            Message(
                DEFAULT_EXCHANGE,
                CRYPTO_COMMANDS,
                encode_frame(
                    build_frame(
                        FrameKind.PIN_COMMAND,
                        SENDER,
                        next(self._sequence),
                        records[start : start + MAX_RECORDS],
                    )
                ),
                {REPLY_TO_HEADER: HOST_CRYPTO_REPLIES},
                transient=True,
            )
            for start in range(0, len(records), MAX_RECORDS)
        ]

    async def _on_frame(self, delivery: Delivery) -> None:
        try:
            frame = decode_frame(delivery.body, expect=FrameKind.PIN_RESPONSE)
        except FrameError as error:
            _log.warning("pin response frame dead-lettered", reason=str(error))
            await self.bus.dead_letter(delivery, str(error))
            return
        unreadable = 0
        for raw in frame.records:
            try:
                response = PIN_RESPONSE_ADAPTER.validate_json(raw)
            except ValidationError:
                unreadable += 1
                continue
            awaiting = self._waiting.pop(response.command_id, None)
            if awaiting is None:
                self.late += 1  # its batch gave up on it, or answered twice
            else:
                awaiting.answer(response)
        if unreadable:
            _log.warning("pin responses unreadable", records=unreadable)
        await delivery.ack()
