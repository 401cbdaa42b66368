"""Test doubles for the host: a teller, a fake HSM (pure and on the bus), an in-memory bank.

The fake HSM treats a PIN block as the PIN digits padded with ``F`` and uses the clear PIN as
its "verification value", so pure tests can reason about right and wrong PINs without keys.
The in-memory bank runs batches through :func:`host_node.batch.plan` and
:func:`~host_node.batch.settle` and keeps what the store would keep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.authorisation import StaffKey
from common.bus import Bus, Delivery, Message, Subscription
from common.frames import Frame, FrameKind, build_frame, decode_frame, encode_frame
from common.id_documents import check_character, is_valid_resident_id
from common.ids import card_number, request_id
from common.pin_commands import (
    PIN_COMMAND_ADAPTER,
    PIN_RESPONSE_ADAPTER,
    ChangePinCommand,
    GenerateOffset,
    HsmError,
    PinCommand,
    PinResponse,
    VerifyPin,
)
from common.replies import Reply, decode_reply
from common.requests import (
    Balance,
    ChangePin,
    CloseAccount,
    CustomerQuery,
    Deposit,
    EncryptedPin,
    Freeze,
    IdDocument,
    OpenAccount,
    RecordError,
    Request,
    Transfer,
    Withdraw,
    decode_request,
    encode_request,
)
from common.topology import (
    CORE,
    CRYPTO_COMMANDS,
    DEAD_QUEUE,
    HOST_CRYPTO_REPLIES,
    REPLY_TO_HEADER,
    REQUESTS_EXCHANGE,
    branch_key,
    branch_reply_queue,
    branch_topology,
)
from host_node.batch import Settlement, Snapshot, Stored, accounts_to_load, plan, settle
from host_node.intake import Item, content_hash
from host_node.journal import ChainHead, JournalEntry
from host_node.ledger import AccountState
from host_node.staff import StaffMember, auditor_id, default_staff, supervisor_id, with_keys
from host_node.store import Store

T0 = dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.UTC)
#: The supervisors and auditors of branches 0001 and 0002, with their staff keys.
STAFF_KEYS = {
    staff_id: StaffKey(staff_id, Ed25519PrivateKey.generate())
    for branch in ("0001", "0002")
    for staff_id in (supervisor_id(branch), auditor_id(branch))
}
SUPERVISOR = STAFF_KEYS[supervisor_id("0001")]
#: The host's staff table for branches 0001 and 0002 (two tellers each), keys registered.
STAFF: dict[str, StaffMember] = {
    m.staff_id: m
    for m in with_keys(
        default_staff(["0001", "0002"], terminals=2),
        {i: k.key.public_key() for i, k in STAFF_KEYS.items()},
    )
}
_command_ids = (f"c{n}" for n in itertools.count())


def account_no(serial: int, branch_id: str = "0001") -> str:
    return card_number(branch_id, "01", serial)


def valid_id(label: str) -> str:
    """A valid resident ID number: ``label`` itself when it is one, else one derived from it."""
    if is_valid_resident_id(label):
        return label
    order = int(hashlib.sha256(label.encode()).hexdigest(), 16) % 1000
    first17 = f"11010119900307{order:03d}"
    return first17 + check_character(first17)


def fake_pin(pin: str, ksn_counter: int = 1) -> EncryptedPin:
    """A "PIN block" the fake HSM reads back in clear."""
    return EncryptedPin(pin_block=pin.ljust(32, "F"), ksn=f"{0xABCD:016X}{ksn_counter:08X}")


class PinEntry(Protocol):
    def encrypt(self, pin: str, pan: str) -> EncryptedPin: ...


class Teller:
    """Writes one terminal's requests with consecutive request ids.

    PINs go through ``pad`` (a real PIN pad) when given, else through :func:`fake_pin`.
    """

    def __init__(
        self,
        branch_id: str = "0001",
        terminal_id: str = "01",
        start: int = 1,
        pad: PinEntry | None = None,
        staff_id: str | None = None,
        role: str = "teller",
    ) -> None:
        self.branch_id = branch_id
        self.terminal_id = terminal_id
        self.staff_id = staff_id or f"T{branch_id}{terminal_id}"
        self.role = role
        self.pad = pad
        self._sequence = itertools.count(start)
        self._ksn = itertools.count(1)

    def pin(self, pin: str, pan: str = "") -> EncryptedPin:
        if self.pad is not None:
            return self.pad.encrypt(pin, pan)
        return fake_pin(pin, next(self._ksn))

    def _base(self) -> dict[str, Any]:
        return {
            "request_id": request_id(self.branch_id, self.terminal_id, next(self._sequence)),
            "branch_id": self.branch_id,
            "teller_id": self.staff_id,
            "terminal_id": self.terminal_id,
            "origin_time": T0,
            "role": self.role,
        }

    def open_account(
        self,
        account: str,
        *,
        deposit: int = 0,
        pin: EncryptedPin | None = None,
        id_number: str = "110101199003071233",
        document: IdDocument | None = None,
    ) -> OpenAccount:
        return OpenAccount(
            **self._base(),
            account=account,
            customer_name="Wang Fang",
            id_document=document or IdDocument(id_type="resident_id", number=valid_id(id_number)),
            pin=pin,
            initial_deposit=deposit,
        )

    def deposit(self, account: str, amount: int) -> Deposit:
        return Deposit(**self._base(), account=account, amount=amount)

    def withdraw(self, account: str, amount: int, pin: EncryptedPin) -> Withdraw:
        return Withdraw(**self._base(), account=account, amount=amount, pin=pin)

    def transfer(self, account: str, to: str, amount: int, pin: EncryptedPin) -> Transfer:
        return Transfer(**self._base(), account=account, to_account=to, amount=amount, pin=pin)

    def balance(self, account: str, pin: EncryptedPin) -> Balance:
        return Balance(**self._base(), account=account, pin=pin)

    def change_pin(self, account: str, pin: EncryptedPin, new_pin: EncryptedPin) -> ChangePin:
        return ChangePin(**self._base(), account=account, pin=pin, new_pin=new_pin)

    def close(self, account: str, pin: EncryptedPin) -> CloseAccount:
        return CloseAccount(**self._base(), account=account, pin=pin)

    def freeze(self, account: str, supervisor: StaffKey | None = SUPERVISOR) -> Freeze:
        request = Freeze(**self._base(), account=account, authority_ref="court 2026-17")
        return supervisor.authorise(request) if supervisor else request

    def customer_query(
        self, account: str, supervisor: StaffKey | None = None, purpose: str = "statement"
    ) -> CustomerQuery:
        request = CustomerQuery(**self._base(), account=account, purpose=purpose)
        return supervisor.authorise(request) if supervisor else request


def fake_hsm(command: PinCommand) -> PinResponse:
    """Answers like the crypto node, with the clear PIN as the verification value."""

    def clear(encrypted: EncryptedPin) -> str:
        return encrypted.pin_block.rstrip("F")

    match command:
        case GenerateOffset():
            return PinResponse(
                command_id=command.command_id,
                error=HsmError.OK,
                verification_value=clear(command.pin),
                key_version=1,
            )
        case VerifyPin():
            ok = clear(command.pin) == command.verification_value
            error = HsmError.OK if ok else HsmError.VERIFICATION_FAILED
            return PinResponse(command_id=command.command_id, error=error)
        case ChangePinCommand():
            if clear(command.pin) != command.verification_value:
                error = HsmError.VERIFICATION_FAILED
                return PinResponse(command_id=command.command_id, error=error)
            return PinResponse(
                command_id=command.command_id,
                error=HsmError.OK,
                verification_value=clear(command.new_pin),
                key_version=1,
            )
    return PinResponse(command_id=command.command_id, error=HsmError.UNKNOWN_COMMAND)


def item_of(record: Request | bytes, branch_id: str | None = None) -> Item:
    """An item as intake makes it from a request (or raw bytes) sent by its own branch."""
    if isinstance(record, bytes):
        raw, branch_id = record, branch_id or "0001"
    else:
        raw, branch_id = encode_request(record), branch_id or record.branch_id
    decoded = decode_request(raw, branch_id=branch_id)
    assert not (isinstance(decoded, RecordError) and decoded.request_id is None)
    return Item(branch_id, raw, decoded, content_hash(decoded, raw), T0, T0)


@dataclass
class MemoryBank:
    """What the store keeps, in memory, fed by plan and settle."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    known: dict[str, Stored] = field(default_factory=dict)
    journal: list[JournalEntry] = field(default_factory=list)
    head: ChainHead = field(default_factory=ChainHead)
    deferrals: int = 0
    crypto_up: bool = True
    #: The wall-clock time batches are taken at (deadlines are checked against it; None: not).
    taken_at: dt.datetime | None = None
    _ids: Iterable[str] = field(default_factory=lambda: (f"c{n}" for n in itertools.count()))

    def run(self, records: Sequence[Request | bytes | Item]) -> list[Reply]:
        """Process ``records`` as batches (the first, then any deferred) until all answered."""
        items = [r if isinstance(r, Item) else item_of(r) for r in records]
        answers: dict[int, Reply] = {}
        todo = list(range(len(items)))
        while todo:
            batch = [items[i] for i in todo]
            snapshot = Snapshot(dict(self.known), dict(self.accounts), STAFF)
            planned = plan(batch, snapshot, iter(self._ids), taken_at=self.taken_at)
            responses = {
                c.command_id: fake_hsm(c) if self.crypto_up else None for c in planned.commands
            }
            settled = settle(batch, planned, snapshot, responses, self.head, lambda: T0)
            self.accounts.update({a.number: a for a in settled.accounts})
            for row in settled.remembered:
                self.known[row.request_id] = Stored(row.content_hash, row.reply)
            self.journal.extend(settled.entries)
            self.head = settled.head
            later = []
            for index, reply in zip(todo, settled.replies, strict=True):
                if reply is None:
                    later.append(index)
                else:
                    answers[index] = reply
            assert len(later) < len(todo), "a batch must make progress"
            self.deferrals += len(later)
            todo = later
        return [answers[i] for i in range(len(items))]

    def balance(self, number: str) -> int:
        return self.accounts[number].balance


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def run_batch(store: Store, records: Sequence[Request]) -> Settlement:
    """One batch through a real store (its staff table the test :data:`STAFF`), with the fake
    HSM answering (deferred: unanswered)."""
    if not store.staff:
        await store.enrol_staff(STAFF.values())
    items = [item_of(r) for r in records]
    snapshot = await store.snapshot({i.request_id for i in items}, accounts_to_load(items))
    planned = plan(items, snapshot, _command_ids)
    responses = {c.command_id: fake_hsm(c) for c in planned.commands}
    settlement = settle(items, planned, snapshot, responses, store.head, now)
    await store.commit(settlement)
    return settlement


class FakeCryptoNode:
    """Answers ``crypto.commands`` frames with :func:`fake_hsm`, one response frame each."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.frames: list[Frame] = []
        self.reply_to: list[object] = []
        self.hold = False
        self._held: list[Frame] = []
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        await self.bus.declare(CORE)
        self._subscription = await self.bus.consume(CRYPTO_COMMANDS, self._answer, prefetch=8)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()

    async def release(self) -> None:
        """Answer every frame received while holding."""
        self.hold = False
        for frame in self._held:
            await self._respond(frame)
        self._held.clear()

    async def _answer(self, delivery: Delivery) -> None:
        frame = decode_frame(delivery.body, expect=FrameKind.PIN_COMMAND)
        self.frames.append(frame)
        self.reply_to.append(delivery.headers.get(REPLY_TO_HEADER))
        await delivery.ack()
        if self.hold:
            self._held.append(frame)
        else:
            await self._respond(frame)

    async def _respond(self, frame: Frame) -> None:
        responses = [
            PIN_RESPONSE_ADAPTER.dump_json(fake_hsm(PIN_COMMAND_ADAPTER.validate_json(raw)))
            for raw in reversed(frame.records)
        ]
        reply = build_frame(FrameKind.PIN_RESPONSE, "crypto", len(self.frames), responses)
        await self.bus.publish([Message("", HOST_CRYPTO_REPLIES, encode_frame(reply))])


class BranchDesk:
    """A branch's end of the bus: sends request frames, collects reply frames and dead letters."""

    def __init__(self, bus: Bus, branch_id: str = "0001") -> None:
        self.bus = bus
        self.branch_id = branch_id
        self.replies: dict[str, list[Reply]] = {}
        self.reply_frames: list[Frame] = []
        self.dead: list[Delivery] = []
        self._arrived = asyncio.Event()
        self._sequence = itertools.count(1)

    async def start(self) -> None:
        await self.bus.declare(CORE + branch_topology(self.branch_id))
        await self.bus.consume(branch_reply_queue(self.branch_id), self._on_reply, prefetch=64)

    async def watch_dead_letters(self) -> None:
        await self.bus.consume(DEAD_QUEUE, self._on_dead, prefetch=64)

    async def send(
        self,
        records: Sequence[Request | bytes],
        *,
        sender: str | None = None,
        routing_key: str | None = None,
    ) -> None:
        raws = [r if isinstance(r, bytes) else encode_request(r) for r in records]
        frame = build_frame(FrameKind.REQUEST, sender or self.branch_id, next(self._sequence), raws)
        await self.send_body(encode_frame(frame), routing_key=routing_key)

    async def send_body(self, body: bytes, *, routing_key: str | None = None) -> None:
        key = routing_key or branch_key(self.branch_id)
        await self.bus.publish([Message(REQUESTS_EXCHANGE, key, body)])

    async def ask(self, records: Sequence[Request], timeout: float = 5.0) -> list[Reply]:
        """Send ``records`` in one frame and wait for the reply to each (retries included)."""
        wanted: list[tuple[str, int]] = []
        occurrences: Counter[str] = Counter()
        for record in records:
            known = len(self.replies.get(record.request_id, ()))
            wanted.append((record.request_id, known + occurrences[record.request_id]))
            occurrences[record.request_id] += 1
        await self.send(records)
        return await self._replies(wanted, timeout)

    async def answers(self, request_ids: Sequence[str], timeout: float = 5.0) -> list[Reply]:
        """The first reply to each of ``request_ids``, waiting for them to arrive."""
        return await self._replies([(rid, 0) for rid in request_ids], timeout)

    async def _replies(self, wanted: Sequence[tuple[str, int]], timeout: float) -> list[Reply]:
        async with asyncio.timeout(timeout):
            while any(len(self.replies.get(rid, ())) <= n for rid, n in wanted):
                self._arrived.clear()
                await self._arrived.wait()
        return [self.replies[rid][n] for rid, n in wanted]

    async def dead_letters(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        async with asyncio.timeout(timeout):
            while len(self.dead) < count:
                await asyncio.sleep(0.005)
        return self.dead

    async def _on_reply(self, delivery: Delivery) -> None:
        frame = decode_frame(delivery.body, expect=FrameKind.REPLY)
        self.reply_frames.append(frame)
        for raw in frame.records:
            reply = decode_reply(raw)
            self.replies.setdefault(reply.request_id, []).append(reply)
        self._arrived.set()
        await delivery.ack()

    async def _on_dead(self, delivery: Delivery) -> None:
        self.dead.append(delivery)
        await delivery.ack()
