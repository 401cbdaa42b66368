"""Replication to the disaster-recovery standby: the wire records, the primary's side, the fence.

The primary ships each committed batch (its journal entries with everything the store wrote
beside them) and each signed checkpoint to ``dr.replication`` as ``journal`` frames whose
header the host signs with its identity key. A batch goes as the rows the primary's commit
wrote: each entry as the canonical body its hash covers (not encoded again), the rest as
stored. The standby hashes each body once, checks the links, writes the rows and acks its
applied position on ``dr.acks``. A closing of the books (daily interest) goes in order with
the batches, as its entries and what it closed with: its accrual changes every account row,
so the standby closes its own books alike and must make the very entries shipped.

Shipping does not wait for the broker (see :class:`Replicator`): in ``sync`` mode the primary
answers a batch only once the standby holds it (RPO 0), which its signed ack says; in
``async`` mode at once, reporting the lag.
When the standby does not ack within ``standby_timeout_s`` in sync mode, the primary either
stops answering (``standby_lost="stop"``: the batch's frames go back and are retried) or
degrades to async with an alert, returning to sync when the standby catches up.

The epoch fence: a promoted standby announces its epoch on ``dr.epoch``; a host starting as
primary reads every announcement and refuses to run when one is above its own epoch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from common.bus import Bus, Delivery, Message, Subscription
from common.errors import BranchnetError, FrameError
from common.events import ReplicationStatus
from common.frames import (
    MAX_RECORDS,
    Frame,
    FrameHeader,
    FrameKind,
    build_frame,
    decode_frame,
    encode_frame,
)
from common.identity import verify
from common.logs import get_logger
from common.results import ResultCode
from common.topology import DEFAULT_EXCHANGE, DR_ACKS, DR_EPOCH, DR_REPLICATION
from host_node.batch import Settlement
from host_node.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from host_node.config import ReplicationMode, StandbyLost
from host_node.errors import HostError
from host_node.journal import ChainHead, JournalEntry, body_hash, entry_body
from host_node.ledger import AccountKind, AccountState, AccountStatus, PinMethod
from host_node.store import AccountRow, ClosedBooks, ReplicaRows

PRIMARY_SENDER = "host"
STANDBY_SENDER = "standby"

_log = get_logger(__name__)


class ReplicationError(HostError):
    """The standby did not confirm a batch in time and the host is set to stop answering."""


class FencedError(HostError):
    """A host with a higher epoch is primary; this one must not process."""


# --- wire records ------------------------------------------------------------------------


#: An account on the wire: its ``accounts`` row with the times left to orjson (the text
#: :meth:`~datetime.datetime.isoformat` makes) and the appointments as a list (their JSON
#: text is made on the standby).
_ShippedAccount = tuple[
    str,
    str | None,
    str | None,
    str,
    AccountKind,
    int,
    AccountStatus,
    int,
    str | None,
    PinMethod | None,
    int | None,
    int,
    str,
    int,
    int,
    str | None,
    int,
    int,
    list[tuple[str, int, str]],
]


class _Close(TypedDict):
    """A closing of the books on the wire (:class:`~host_node.store.ClosedBooks`)."""

    through: dt.date
    rate_bp: int
    now: dt.datetime
    after: tuple[int, str]  # the head it closed on: seq, hash


class _BatchRecord(TypedDict):
    """A committed batch on the wire: the rows the primary's commit wrote, as text, except
    what the standby reads from the entries' bodies (journal columns, postings). A closing
    of the books goes as a batch of its entries and ``close``, without other rows."""

    entries: list[tuple[str, str]]  # hash, body
    customers: list[tuple[str, str, str]]
    accounts: list[_ShippedAccount]
    remembered: list[tuple[str, str, str, int]]  # request id, content hash, reply, seq
    evidence: list[tuple[int, str | None, int | None, str, str | None, str]]
    frames: list[tuple[str, str, str]]  # digest, header, leaves (hex)
    new: NotRequired[list[str]]  # the accounts the primary did not hold before (absent: unknown)
    close: NotRequired[_Close]


class _EntryFields(TypedDict):
    """What the standby reads from an entry's body (the rest is only hashed)."""

    seq: int
    prev_hash: str
    request_id: str
    kind: str
    result: ResultCode
    postings: list[tuple[str, int]]
    processed_at: str


_BATCH_RECORD: TypeAdapter[_BatchRecord] = TypeAdapter(_BatchRecord)
_ENTRY_FIELDS: TypeAdapter[list[_EntryFields]] = TypeAdapter(list[_EntryFields])


@dataclass(frozen=True, slots=True)
class ShippedBatch:
    """A batch record as received: its shape checked, its chain not yet verified."""

    record: _BatchRecord
    bodies: list[bytes]
    entries: list[_EntryFields]

    @property
    def first_seq(self) -> int:
        return self.entries[0]["seq"] if self.entries else 0

    @property
    def after(self) -> int:
        """The entry it continues (0: a batch without entries, which has nothing to apply)."""
        if self.entries:
            return self.first_seq - 1
        close = self.record.get("close")
        return close["after"][0] if close else 0

    @property
    def last_seq(self) -> int:
        return self.entries[-1]["seq"] if self.entries else 0


def _shipped_account(account: AccountState) -> tuple[Any, ...]:
    pin, holder, usage = account.pin, account.holder, account.usage
    opened: dt.datetime | str = account.opened_at
    if account.opened_at.tzinfo not in (None, dt.UTC):
        opened = account.opened_at.isoformat()  # orjson writes offsets in whole minutes only
    return (
        account.number,
        holder.id_type if holder else None,
        holder.id_number if holder else None,
        account.branch_id,
        account.kind,
        account.balance,
        account.status,
        int(pin is not None),
        pin.value if pin else None,
        pin.method if pin else None,
        pin.key_version if pin else None,
        account.pin_tries,
        opened,
        int(account.frozen),
        account.held,
        usage.day,
        usage.cash_out,
        usage.transferred,
        [(a.date, a.amount, a.made_on) for a in account.appointments],
    )


def _account_row(shipped: _ShippedAccount) -> AccountRow:
    """The stored row of a shipped account: its appointments as the primary's JSON text."""
    appointments = shipped[18]
    return (*shipped[:18], json.dumps(appointments) if appointments else "[]")


def _shipped_entries(entries: Sequence[JournalEntry]) -> list[tuple[str, str]]:
    """Entries as the canonical bodies they were hashed from, not encoded again."""
    return [(e.hash, (e.body or entry_body(e)).decode()) for e in entries]


def encode_batch(settlement: Settlement) -> bytes:
    """A committed batch as one replication record (replies to the branches are not shipped)."""
    record: dict[str, object] = {
        "entries": _shipped_entries(settlement.entries),
        "customers": [(c.name, c.id_type, c.id_number) for c in settlement.customers.values()],
        "accounts": [_shipped_account(a) for a in settlement.accounts],
        "remembered": [
            (r.request_id, r.content_hash, r.json(), r.reply.journal_seq)
            for r in settlement.remembered
        ],
        "evidence": [
            (
                e.seq,
                e.frame_digest,
                e.record_index,
                e.record.decode(),
                e.pin_outcome,
                orjson.dumps(e.documents).decode(),
            )
            for e in settlement.evidence
        ],
        "frames": [(d, f.header.decode(), f.leaves.hex()) for d, f in settlement.frames.items()],
    }
    if settlement.new_accounts is not None:
        record["new"] = list(settlement.new_accounts)
    return orjson.dumps({"batch": record})


def encode_close(closed: ClosedBooks) -> bytes:
    """A closing of the books as one replication record: its entries, and what the standby
    closes its own books with (the accrual changes every account row: it is not shipped)."""
    close = {
        "through": closed.through,
        "rate_bp": closed.rate_bp,
        "now": closed.now,
        "after": (closed.after.seq, closed.after.hash),
    }
    record = {
        "entries": _shipped_entries(closed.entries),
        **{rows: [] for rows in ("customers", "accounts", "remembered", "evidence", "frames")},
        "close": close,
    }
    return orjson.dumps({"batch": record})


def decode_batch(document: Mapping[str, Any]) -> ShippedBatch:
    """The batch a replication record describes, its entries' bodies read but not verified.

    Raises:
        ValueError, pydantic.ValidationError: not a batch record.
    """
    record = _BATCH_RECORD.validate_python(document)
    bodies = [body.encode() for _, body in record["entries"]]
    entries = _ENTRY_FIELDS.validate_python([orjson.loads(body) for body in bodies])
    return ShippedBatch(record, bodies, entries)


def verify_batch(shipped: ShippedBatch, head: ChainHead) -> ReplicaRows:
    """The rows to write for a shipped batch that continues the chain at ``head``; each
    entry's body is hashed once.

    Raises:
        ValueError: the batch does not continue the chain, or an entry does not match its
            hash (the first break is named).
    """
    journal: list[tuple[int, str, str, str, bytes, str]] = []
    postings: list[tuple[int, str, int]] = []
    last = head
    record = shipped.record
    close = record.get("close")
    if close is not None and tuple(close["after"]) != (head.seq, head.hash):
        raise ValueError(f"chain broken: books closed on entry {close['after'][0]}, not here")
    for (hash_, _), body, entry in zip(
        shipped.record["entries"], shipped.bodies, shipped.entries, strict=True
    ):
        seq = entry["seq"]
        if seq != last.seq + 1:
            raise ValueError(f"chain broken: entry {seq} follows entry {last.seq}")
        if entry["prev_hash"] != last.hash:
            raise ValueError(f"chain broken: entry {seq} does not link to entry {last.seq}")
        if body_hash(body) != hash_:
            raise ValueError(f"chain broken: entry {seq} does not match its hash")
        journal.append(
            (seq, entry["request_id"], entry["kind"], entry["result"].value, body, hash_)
        )
        postings += [(seq, account, amount) for account, amount in entry["postings"]]
        last = ChainHead(seq, hash_)
    return ReplicaRows(
        customers=record["customers"],
        accounts=[_account_row(a) for a in record["accounts"]],
        journal=journal,
        postings=postings,
        frames=[
            (d, header.encode(), bytes.fromhex(leaves)) for d, header, leaves in record["frames"]
        ],
        evidence=[
            (seq, digest, index, kept.encode(), outcome, documents)
            for seq, digest, index, kept, outcome, documents in record["evidence"]
        ],
        idempotency=record["remembered"],
        at=dt.datetime.fromisoformat(shipped.entries[-1]["processed_at"])
        if shipped.entries
        else dt.datetime.now(dt.UTC),
        after=head,
        head=last,
        new_accounts=frozenset(record["new"]) if "new" in record else None,
        close=None if close is None else (close["through"], close["rate_bp"], close["now"]),
    )


def encode_checkpoint_record(checkpoint: Checkpoint) -> bytes:
    return orjson.dumps({"checkpoint": orjson.loads(encode_checkpoint(checkpoint))})


def decode_checkpoint_record(document: Mapping[str, Any]) -> Checkpoint:
    return decode_checkpoint(orjson.dumps(document["checkpoint"]))


def _header_bytes(header: FrameHeader) -> bytes:
    unsigned = header.model_copy(update={"signature": None})
    return unsigned.__pydantic_serializer__.to_json(unsigned, exclude_none=True)


def signed_frame(
    key: Ed25519PrivateKey,
    kind: FrameKind,
    sender: str,
    sequence: int,
    records: list[bytes],
    *,
    epoch: int,
) -> bytes:
    """A frame whose header carries ``key``'s signature over the rest of the header."""
    frame = build_frame(kind, sender, sequence, records, epoch=epoch)
    signature = key.sign(_header_bytes(frame.header)).hex()
    header = frame.header.model_copy(update={"signature": signature})
    return encode_frame(Frame(header, frame.records))


def _signed_by(frame: Frame, key: Ed25519PublicKey) -> bool:
    """True when ``frame``'s header carries ``key``'s signature over the rest of it."""
    signature = frame.header.signature
    try:
        return signature is not None and verify(
            key, bytes.fromhex(signature), _header_bytes(frame.header)
        )
    except ValueError:
        return False


def open_signed_frame(body: bytes, key: Ed25519PublicKey, kind: FrameKind) -> Frame:
    """Decode a frame and check its header's signature.

    Raises:
        FrameError: malformed, of another kind, unsigned or not signed by ``key``.
    """
    frame = decode_frame(body, expect=kind)
    if not _signed_by(frame, key):
        raise FrameError(f"{kind} frame not signed by the host")
    return frame


# --- the fence ---------------------------------------------------------------------------


def epoch_message(key: Ed25519PrivateKey, epoch: int) -> Message:
    body = signed_frame(
        key, FrameKind.ACK, PRIMARY_SENDER, epoch, [orjson.dumps({"epoch": epoch})], epoch=epoch
    )
    return Message(DEFAULT_EXCHANGE, DR_EPOCH, body)


async def read_fence(bus: Bus, key: Ed25519PublicKey, *, settle_s: float = 0.5) -> int:
    """The highest epoch a promoted host announced on ``dr.epoch`` (0: none).

    Announcements stay queued: they are read without being acked and go back when the
    consumer is cancelled.
    """
    stats = await bus.queue_stats(DR_EPOCH)
    if stats.messages == 0:
        return 0
    highest = 0
    seen = asyncio.Event()
    held: list[Delivery] = []

    async def read(delivery: Delivery) -> None:
        nonlocal highest
        held.append(delivery)
        try:
            frame = open_signed_frame(delivery.body, key, FrameKind.ACK)
            highest = max(highest, frame.header.epoch)
        except FrameError as error:
            _log.warning("epoch announcement ignored", reason=str(error))
        if len(held) >= stats.messages:
            seen.set()

    subscription = await bus.consume(DR_EPOCH, read, prefetch=max(1, stats.messages))
    try:
        await asyncio.wait_for(seen.wait(), settle_s * 10)
    except TimeoutError:
        pass
    finally:
        await subscription.cancel()
    return highest


# --- the primary's side ------------------------------------------------------------------


#: Records waiting for the sender at most: beyond, ``ship`` waits for room (back-pressure).
OUTBOX_RECORDS = 256
#: Bytes of records one replication frame carries at most (well under the frame limit).
_FRAME_BUDGET = 1024 * 1024
#: First and longest pause between attempts to publish a frame the bus failed to publish.
_RETRY_S = (0.05, 1.0)


class Replicator:
    """Ships committed batches and checkpoints to the standby and tracks what it holds.

    ``ship`` queues a batch's record and returns: a sender task publishes the queued records
    in order, all those queued while the previous frame waited for the broker's confirm in
    one signed frame, one frame at a time (so a frame the broker refuses is retried before
    any later one goes). The broker's confirm is off the batch's path: the standby's signed
    ack, which ``held`` waits for in sync mode, implies the broker delivered the frame. A
    frame the bus fails to publish raises an alert and is retried, in order, until it goes;
    meanwhile the standby acks nothing new, so a sync primary meets its ``standby_lost``
    handling, and the lag grows.
    """

    def __init__(
        self,
        bus: Bus,
        key: Ed25519PrivateKey,
        public_key: Ed25519PublicKey,
        *,
        mode: ReplicationMode,
        standby_lost: StandbyLost,
        timeout_s: float,
    ) -> None:
        self.bus = bus
        self.key = key
        self.public_key = public_key
        self.mode = mode
        self.standby_lost = standby_lost
        self.timeout_s = timeout_s
        self.epoch = 0
        self.shipped = 0
        self.acked = 0
        self.degraded = False
        self._behind_since: float | None = None
        self._sequence = 0
        self._acked = asyncio.Condition()
        self._subscription: Subscription | None = None
        #: Records queued for the sender, oldest first, each with whether it is a checkpoint;
        #: ``_room`` is notified when the sender takes some.
        self._outbox: list[tuple[bytes, bool]] = []
        self._room = asyncio.Condition()
        self._sender: asyncio.Task[None] | None = None
        #: True from a failed publish until one succeeds; after ``stop``, a failure gives up.
        self.failing = False
        self._closing = False
        #: Acks received and not yet checked (see :meth:`_check_acks`).
        self._acks: list[Delivery] = []
        self._checker: asyncio.Task[None] | None = None

    @property
    def lag(self) -> int:
        """Entries shipped that the standby has not confirmed."""
        return max(0, self.shipped - self.acked)

    def status(self) -> ReplicationStatus:
        """What the ops stats summary reports: effective mode, lag in entries and seconds."""
        lag = self.lag
        if lag == 0:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = time.monotonic()
        behind_s = 0.0 if self._behind_since is None else time.monotonic() - self._behind_since
        return ReplicationStatus(
            mode="async" if self.degraded else self.mode,
            lag_entries=lag,
            lag_s=round(behind_s, 3),
            standby_up=not (self.degraded or self.failing),
        )

    async def start(self, head: ChainHead) -> None:
        self.shipped = head.seq
        self._closing = False
        self._subscription = await self.bus.consume(DR_ACKS, self._on_ack, prefetch=64)

    async def stop(self) -> None:
        """Stop reading acks; publish what is queued (giving up if the bus fails)."""
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        if self._checker is not None:
            await asyncio.shield(self._checker)
        self._closing = True
        await self._flush()

    async def ship(self, settlement: Settlement) -> None:
        """Queue a committed batch for the standby (see the class doc)."""
        if settlement.entries:
            await self._queue(encode_batch(settlement), checkpoint=False)
            self.shipped = settlement.head.seq

    async def ship_close(self, closed: ClosedBooks) -> None:
        """Queue a closing of the books for the standby, in order with the batches."""
        await self._queue(encode_close(closed), checkpoint=False)
        if closed.entries:
            self.shipped = closed.entries[-1].seq

    async def ship_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Queue a signed checkpoint after the batches it covers; after :meth:`stop`,
        publish it before returning."""
        await self._queue(encode_checkpoint_record(checkpoint), checkpoint=True)
        if self._closing:
            await self._flush()

    async def _queue(self, record: bytes, *, checkpoint: bool) -> None:
        if len(self._outbox) >= OUTBOX_RECORDS:
            async with self._room:
                await self._room.wait_for(lambda: len(self._outbox) < OUTBOX_RECORDS)
        self._outbox.append((record, checkpoint))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(), name="replication-sender")

    async def _flush(self) -> None:
        if self._sender is not None:
            await asyncio.shield(self._sender)

    def _take_frame(self) -> list[tuple[bytes, bool]]:
        """The oldest queued records that fit one frame (at least one). A checkpoint only
        leads a frame: the standby stores one once the entries it covers are written, and it
        writes a frame's batches after checking the whole frame."""
        size, count = 0, 0
        for record, checkpoint in self._outbox[:MAX_RECORDS]:
            size += len(record)
            if count and (size > _FRAME_BUDGET or checkpoint):
                break
            count += 1
        taken, self._outbox = self._outbox[:count], self._outbox[count:]
        return taken

    async def _send_queued(self) -> None:
        """Publish the queued records, frame after frame, until none is left; a frame the
        bus fails to publish goes back to the front and is retried (not after ``stop``)."""
        pause = _RETRY_S[0]
        while self._outbox:
            taken = self._take_frame()
            async with self._room:
                self._room.notify_all()
            self._sequence += 1
            body = signed_frame(
                self.key,
                FrameKind.JOURNAL,
                PRIMARY_SENDER,
                self._sequence,
                [record for record, _ in taken],
                epoch=self.epoch,
            )
            try:
                await self.bus.publish([Message(DEFAULT_EXCHANGE, DR_REPLICATION, body)])
            except BaseException as error:
                self._outbox[:0] = taken
                if not isinstance(error, Exception):
                    raise  # cancelled: the records stay queued
                if not self.failing:
                    _log.error(
                        "ALERT replication frame not published; retrying",
                        error=str(error)[:200],
                        queued=len(self._outbox),
                    )
                self.failing = True
                if self._closing:
                    _log.error("ALERT replication records not sent", queued=len(self._outbox))
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY_S[1])
                continue
            if self.failing:
                _log.warning("replication frames published again", queued=len(self._outbox))
            self.failing = False
            pause = _RETRY_S[0]

    async def held(self, seq: int) -> None:
        """In sync mode, return once the standby holds entry ``seq`` (see the module doc).

        Raises:
            ReplicationError: no confirmation in time and the host is set to stop answering.
        """
        if self.mode != "sync" or self.degraded or seq <= self.acked:
            if self.mode == "async" or self.degraded:
                self._report_lag()
            return
        started = time.monotonic()
        async with self._acked:
            try:
                await asyncio.wait_for(
                    self._acked.wait_for(lambda: self.acked >= seq), self.timeout_s
                )
                return
            except TimeoutError:
                pass
        waited = round(time.monotonic() - started, 2)
        if self.standby_lost == "stop":
            _log.error("standby silent; not answering", seq=seq, waited_s=waited)
            raise ReplicationError(f"the standby has not confirmed entry {seq}")
        self.degraded = True
        _log.error("ALERT standby silent; degraded to async replication", seq=seq, lag=self.lag)

    def _report_lag(self) -> None:
        if self.lag:
            _log.info("replication lag", lag=self.lag, shipped=self.shipped, acked=self.acked)

    async def _on_ack(self, delivery: Delivery) -> None:
        """Keep the ack for :meth:`_check_acks`, which runs once the queued ones are in."""
        self._acks.append(delivery)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_acks(), name="replication-acks")

    async def _check_acks(self) -> None:
        """Move the standby's confirmed position to the highest ack that verifies.

        Acks are positions, so of the acks that queued up only the highest claimed one needs
        its signature verified: those above it that do not verify are dead-lettered, those
        below it are settled unverified (they cannot move the position) and so one
        verification serves them all.
        """
        while self._acks:  # a task runs after the consumer handed over the acks it holds
            deliveries, self._acks = self._acks, []
            try:
                await self._check(deliveries)
            except (BranchnetError, OSError) as error:  # the broker redelivers them
                _log.error("standby acks not settled", error=str(error)[:200])

    async def _check(self, deliveries: list[Delivery]) -> None:
        claims: list[tuple[int, Frame, Delivery]] = []
        for delivery in deliveries:
            try:
                frame = decode_frame(delivery.body, expect=FrameKind.ACK)
                position = max(int(orjson.loads(r)["seq"]) for r in frame.records)
            except (FrameError, ValueError, KeyError, TypeError) as error:
                await self.bus.dead_letter(delivery, f"bad standby ack: {error}"[:200])
                continue
            claims.append((position, frame, delivery))
        claims.sort(key=lambda claim: claim[0], reverse=True)
        for index, (position, frame, delivery) in enumerate(claims):
            if position <= self.acked or _signed_by(frame, self.public_key):
                for _, _, settled in claims[index:]:
                    await settled.ack()
                await self._advance(position)
                break
            await self.bus.dead_letter(delivery, "bad standby ack: not signed by the host")

    async def _advance(self, position: int) -> None:
        async with self._acked:
            self.acked = max(self.acked, position)
            self._acked.notify_all()
        if self.degraded and self.acked >= self.shipped:
            self.degraded = False
            _log.warning("standby caught up; sync replication again", acked=self.acked)
