"""Test doubles for the branch node: a PIN pad, a bank that decides like the host, a responder.

The fake PIN pad "encrypts" by writing the PIN digits into the block in clear; only these
tests read it back. The fake bank applies the host's rules (DESIGN.md, host_node/rules.py) to
what a request asks, so the workload model's expectations can be checked without a host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from branch_node.workload import Intent
from common.bus import Bus, Delivery, Message
from common.frames import FrameKind, build_frame, decode_frame, encode_frame
from common.replies import Reply, encode_reply
from common.requests import EncryptedPin, RecordError, Request, decode_request
from common.results import ResultCode
from common.topology import HOST_REQUESTS, REPLIES_EXCHANGE, branch_key

PIN_TRIES = 3


class FakePinPad:
    """Writes the PIN into the block in clear and counts its KSNs like a DUKPT pad."""

    def __init__(self, counter: int = 0) -> None:
        self._counter = counter  # the last one used
        self.used: list[int] = []

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def next_counter(self) -> int:
        return self._counter + 1

    def encrypt(self, pin: str, pan: str) -> EncryptedPin:
        self._counter += 1
        self.used.append(self._counter)
        ksn = f"{0xFFFF:016X}{self._counter:08X}"
        return EncryptedPin(pin_block=pin.ljust(32, "F"), ksn=ksn)


def clear_pin(encrypted: EncryptedPin | None) -> str | None:
    return None if encrypted is None else encrypted.pin_block.rstrip("F")


def fake_pinpads(
    data_dir: Path, branch_id: str, counters: Mapping[str, int] | None = None
) -> dict[str, FakePinPad]:
    """A ``PinPadLoader`` giving every terminal a fake pad resumed at its last counter."""
    return {terminal: FakePinPad(counter) for terminal, counter in (counters or {}).items()}


@dataclass
class _Account:
    pin: str | None
    balance: int
    tries: int = 0
    closed: bool = False


@dataclass
class FakeBank:
    """Accounts and the host's rules, decided in memory."""

    accounts: dict[str, _Account] = field(default_factory=dict)
    cash: int = 0  # counter cash taken in minus paid out

    def answer(self, request: Request) -> Reply:
        fields = request.model_dump()
        pin = clear_pin(getattr(request, "pin", None))
        result, balance, amount = self.decide(
            request.kind,
            fields["account"],
            amount=fields.get("amount", fields.get("initial_deposit")),
            to_account=fields.get("to_account"),
            pin=pin,
            new_pin=clear_pin(getattr(request, "new_pin", None)),
        )
        return reply_to(request.request_id, result, balance=balance, amount=amount)

    def answer_intent(self, intent: Intent, request_id: str = "0001-01-1") -> Reply:
        result, balance, amount = self.decide(
            intent.kind,
            intent.account,
            amount=intent.amount,
            to_account=intent.to_account,
            pin=intent.pin,
            new_pin=intent.new_pin,
        )
        return reply_to(request_id, result, balance=balance, amount=amount)

    def decide(
        self,
        kind: str,
        number: str,
        *,
        amount: int | None,
        to_account: str | None,
        pin: str | None,
        new_pin: str | None,
    ) -> tuple[ResultCode, int | None, int | None]:
        if kind == "open_account":
            if number in self.accounts:
                return ResultCode.ACCOUNT_EXISTS, None, None
            self.accounts[number] = _Account(pin, amount or 0)
            self.cash += amount or 0
            return ResultCode.APPROVED, amount or 0, amount or 0
        account = self.accounts.get(number)
        if account is None:
            return ResultCode.NO_SUCH_ACCOUNT, None, None
        if account.closed:
            return ResultCode.RESTRICTED, None, None
        if kind == "customer_query":  # a supervisor-authorised staff query: no PIN
            return ResultCode.APPROVED, account.balance, None
        if kind == "deposit":
            assert amount is not None
            account.balance += amount
            self.cash += amount
            return ResultCode.APPROVED, account.balance, amount
        if kind == "transfer":
            target = self.accounts.get(to_account or "")
            if target is None:
                return ResultCode.NO_SUCH_ACCOUNT, None, None
            if target.closed:
                return ResultCode.RESTRICTED, None, None
        refused = self._verify(account, pin)
        if refused is not None:
            return refused, None, None
        if kind == "balance":
            return ResultCode.APPROVED, account.balance, None
        if kind == "change_pin":
            account.pin = new_pin
            return ResultCode.APPROVED, None, None
        if kind == "close_account":
            payout, account.balance, account.closed = account.balance, 0, True
            self.cash -= payout
            return ResultCode.APPROVED, 0, payout
        assert amount is not None
        if amount > account.balance:
            return ResultCode.INSUFFICIENT_FUNDS, account.balance, None
        account.balance -= amount
        if kind == "withdraw":
            self.cash -= amount
        else:
            self.accounts[to_account or ""].balance += amount
        return ResultCode.APPROVED, account.balance, amount

    @staticmethod
    def _verify(account: _Account, pin: str | None) -> ResultCode | None:
        if account.pin is None:
            return ResultCode.NOT_PERMITTED
        if account.tries >= PIN_TRIES:
            return ResultCode.PIN_TRIES_EXCEEDED
        if pin != account.pin:
            account.tries += 1
            return (
                ResultCode.PIN_TRIES_EXCEEDED
                if account.tries >= PIN_TRIES
                else ResultCode.WRONG_PIN
            )
        account.tries = 0
        return None

    def locked(self, number: str) -> bool:
        account = self.accounts[number]
        return account.tries >= PIN_TRIES


def reply_to(
    request_id: str,
    result: ResultCode = ResultCode.APPROVED,
    *,
    balance: int | None = None,
    amount: int | None = None,
) -> Reply:
    now = dt.datetime.now(dt.UTC)
    return Reply(
        request_id=request_id,
        result=result,
        reason=result.meaning,
        balance=balance,
        amount=amount,
        received_at=now,
        processed_at=now,
    )


def approve(request: Request) -> Reply:
    return reply_to(request.request_id)


class Responder:
    """A tiny host: consumes ``host.requests``, answers every record with a reply frame.

    Knobs: ``drop_first`` ignores the first copy of every request id; ``silent`` answers
    nothing; ``hold`` keeps replies until that many are due, then sends them in one frame in
    reverse order; ``duplicate`` sends every reply twice, the copy with ``duplicate_result``.
    """

    def __init__(
        self,
        bus: Bus,
        answer: Callable[[Request], Reply] = approve,
        *,
        drop_first: bool = False,
        silent: bool = False,
        hold: int = 0,
        duplicate: bool = False,
        duplicate_result: ResultCode = ResultCode.APPROVED,
    ) -> None:
        self.bus = bus
        self.answer = answer
        self.drop_first = drop_first
        self.silent = silent
        self.hold = hold
        self.duplicate = duplicate
        self.duplicate_result = duplicate_result
        self.frame_sizes: list[int] = []
        self.records: list[bytes] = []
        self.copies: Counter[str] = Counter()
        self.held: list[Reply] = []
        self.replied = asyncio.Event()
        self._sequence = 0

    async def start(self) -> None:
        await self.bus.consume(HOST_REQUESTS, self._on_frame, prefetch=8)

    async def _on_frame(self, delivery: Delivery) -> None:
        frame = decode_frame(delivery.body, expect=FrameKind.REQUEST)
        self.frame_sizes.append(frame.header.count)
        branch = frame.header.sender
        for record in frame.records:
            self.records.append(record)
            request = decode_request(record, branch_id=branch)
            assert not isinstance(request, RecordError), request
            self.copies[request.request_id] += 1
            if self.silent or (self.drop_first and self.copies[request.request_id] == 1):
                continue
            self.held.append(self.answer(request))
        if self.held and len(self.held) >= self.hold:
            replies = list(reversed(self.held)) if self.hold else self.held
            self.held = []
            await self.send(branch, replies)
        await delivery.ack()

    async def send(self, branch_id: str, replies: list[Reply]) -> None:
        records = [encode_reply(r) for r in replies]
        if self.duplicate:
            records += [
                encode_reply(r.model_copy(update={"result": self.duplicate_result}))
                for r in replies
            ]
        frame = build_frame(FrameKind.REPLY, "host", self._sequence, records)
        self._sequence += 1
        await self.bus.publish(
            [Message(REPLIES_EXCHANGE, branch_key(branch_id), encode_frame(frame))]
        )
        self.replied.set()
