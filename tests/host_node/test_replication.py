"""Replication records: a batch goes to the standby as the rows the primary wrote, checked
against the chain on the way in, and written with the batches checked meanwhile (no broker
here; test_standby runs the services on one)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import shutil
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from common.bus import Bus, Delivery, Handler, Message, QueueStats, Subscription
from common.frames import FrameKind
from common.identity import ensure_identity, identity_dir
from common.requests import Request
from common.topology import DR_ACKS
from host_node.batch import Settlement, accounts_to_load, plan, settle
from host_node.checkpoint import SIGNER
from host_node.errors import StoreError
from host_node.evidence import FrameProof
from host_node.journal import ChainHead
from host_node.ledger import AccountState, Appointment, Customer, DailyUsage, PinRecord
from host_node.replication import (
    decode_batch,
    encode_batch,
    encode_close,
    signed_frame,
    verify_batch,
)
from host_node.standby import StandbyService
from host_node.store import ClosedBooks, ReplicaRows, Store, _account_row, ledger_path
from tests.host_node.fakes import STAFF, SUPERVISOR, Teller, account_no, fake_hsm, item_of, now

A, B = account_no(1), account_no(2)
PIN = "1234"
#: Every stored table and column but a customer's ``created_at`` (the writer's own clock).
TABLES = {
    "customers": "id, name, id_type, id_number",
    "accounts": "*",
    "journal": "*",
    "postings": "*",
    "frames": "*",
    "evidence": "*",
    "idempotency": "*",
    "customer_tiers": "*",
    "tier_changes": "*",
    "checkpoints": "*",
    "host_state": "*",
}


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(ledger_path(tmp_path / "primary"))
    await store.open()
    await store.enrol_staff(STAFF.values())
    yield store
    await store.close()


@pytest.fixture
async def standby(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(ledger_path(tmp_path / "standby"))
    await store.open()
    yield store
    await store.close()


_command_ids = (f"c{n}" for n in itertools.count())


async def commit(store: Store, records: Sequence[Request], *, framed: bool = False) -> Settlement:
    """One batch committed on ``store``; ``framed``: its records came in one request frame."""
    items = [item_of(r) for r in records]
    if framed:
        proof = FrameProof(b'{"kind":"request","sender":"0001"}', bytes(range(32)) * len(items))
        items = [replace(item, frame=proof, index=n) for n, item in enumerate(items)]
    snapshot = await store.snapshot({i.request_id for i in items}, accounts_to_load(items))
    planned = plan(items, snapshot, _command_ids)
    responses = {c.command_id: fake_hsm(c) for c in planned.commands}
    settlement = settle(items, planned, snapshot, responses, store.head, now)
    await store.commit(settlement)
    return settlement


async def replicate(shipped: Settlement | ClosedBooks, standby: Store) -> None:
    """What the standby does with a shipped batch or closing of the books, short of the bus."""
    encoded = encode_batch(shipped) if isinstance(shipped, Settlement) else encode_close(shipped)
    record = orjson.loads(encoded)
    await standby.apply_replicas([verify_batch(decode_batch(record["batch"]), standby.head)])


def tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    connection = sqlite3.connect(path)
    try:
        return {
            table: connection.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
            for table, columns in TABLES.items()
        }
    finally:
        connection.close()


async def test_the_standby_stores_every_row_as_the_primary_did(
    primary: Store, standby: Store
) -> None:
    teller = Teller()
    pin_a, pin_b = teller.pin(PIN), teller.pin(PIN)
    days: list[list[Request]] = [
        [
            teller.open_account(A, deposit=6_000_000, pin=pin_a),  # a tier above base
            teller.open_account(B, deposit=1_000, pin=pin_b, id_number="110101199001011237"),
        ],
        [
            teller.deposit(A, 500),
            teller.withdraw(A, 700, teller.pin(PIN)),
            teller.withdraw(B, 100, teller.pin("9999")),  # declined: a PIN try counted
            teller.transfer(A, B, 5_000_000, teller.pin(PIN)),  # A drops a tier, B gains one
            teller.deposit(account_no(9), 100),  # declined: no such account
        ],
        [teller.freeze(B, SUPERVISOR), teller.deposit(A, 1)],
    ]
    for number, records in enumerate(days):
        settlement = await commit(primary, records, framed=number == 1)
        await replicate(settlement, standby)
        assert standby.head == primary.head
    held = tables(standby.path)
    assert held == tables(primary.path)
    assert len(held["journal"]) == 9 and held["postings"] and held["evidence"]
    assert held["frames"] and held["tier_changes"] and held["customer_tiers"]


async def test_known_accounts_are_updated_in_place_and_upserted_where_the_standby_lacks_them(
    primary: Store, standby: Store
) -> None:
    teller = Teller()
    opened = await commit(primary, [teller.open_account(A, deposit=100)])
    moved = await commit(primary, [teller.deposit(A, 5), teller.open_account(B, deposit=7)])
    assert moved.new_accounts is not None and A not in moved.new_accounts
    assert "new" in orjson.loads(encode_batch(moved))["batch"]  # the standby is told
    unknown = replace(opened, new_accounts=frozenset())  # "A was held": not on this standby
    for settlement in (unknown, moved):
        await replicate(settlement, standby)
    assert tables(standby.path) == tables(primary.path)


async def test_a_batch_that_does_not_continue_the_chain_is_refused(
    primary: Store, standby: Store
) -> None:
    teller = Teller()
    first = await commit(primary, [teller.open_account(A, deposit=100)])
    second = await commit(primary, [teller.deposit(A, 5), teller.deposit(A, 6)])
    record = orjson.loads(encode_batch(second))["batch"]
    with pytest.raises(ValueError, match="entry 2 follows entry 0"):
        verify_batch(decode_batch(record), ChainHead())
    with pytest.raises(ValueError, match="entry 2 does not link to entry 1"):
        verify_batch(decode_batch(record), ChainHead(1, "f" * 64))

    forged = orjson.loads(encode_batch(second))["batch"]
    hash_, body = forged["entries"][1]
    entry = orjson.loads(body)
    entry["postings"][0][1] += 100  # a canonical body, of another amount
    forged["entries"][1] = [hash_, orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()]
    with pytest.raises(ValueError, match="entry 3 does not match its hash"):
        verify_batch(decode_batch(forged), first.head)

    dropped = orjson.loads(encode_batch(second))["batch"]
    del dropped["entries"][0]
    with pytest.raises(ValueError, match="entry 3 follows entry 1"):
        verify_batch(decode_batch(dropped), first.head)
    assert standby.head == ChainHead()  # nothing of it was written


#: 100% a year: a few months' interest moves a customer across a tier.
RATE_BP = 10_000


async def test_the_standby_closes_its_books_as_the_primary_did(
    primary: Store, standby: Store
) -> None:
    teller = Teller()
    day = dt.date
    shipped: list[Settlement | ClosedBooks] = [
        await commit(primary, [teller.open_account(A, deposit=4_990_000)]),  # just under a tier
        await primary.close_books(day(2026, 3, 1), RATE_BP, now()),  # marks where to start
        await commit(primary, [teller.open_account(B, deposit=1_000)]),
        await primary.close_books(day(2026, 3, 10), RATE_BP, now()),  # accrues only
        await commit(primary, [teller.deposit(A, 500)]),
        await primary.close_books(day(2026, 6, 30), RATE_BP, now()),  # posts on 20/3 and 20/6
        await commit(primary, [teller.deposit(B, 1)]),
    ]
    for batch in shipped:
        await replicate(batch, standby)
    assert standby.head == primary.head
    held = tables(standby.path)
    assert held == tables(primary.path)
    interest = [row for row in held["journal"] if row[2] == "interest"]
    assert len(interest) == 2 and held["host_state"] == [("interest_closed_through", "2026-06-30")]
    assert [row[3:5] for row in held["tier_changes"]] == [("base", "branch")]  # by interest


async def test_a_closing_of_the_books_that_does_not_make_the_shipped_entries_is_refused(
    primary: Store, standby: Store
) -> None:
    teller = Teller()
    await replicate(await commit(primary, [teller.open_account(A, deposit=100_000)]), standby)
    await replicate(await primary.close_books(dt.date(2026, 3, 1), RATE_BP, now()), standby)
    closed = await primary.close_books(dt.date(2026, 3, 20), RATE_BP, now())
    assert closed.entries
    record = orjson.loads(encode_close(closed))["batch"]
    record["close"]["rate_bp"] = RATE_BP // 2  # entries as shipped, another accrual
    with pytest.raises(StoreError, match="do not make the primary's entries"):
        await standby.apply_replicas([verify_batch(decode_batch(record), standby.head)])
    with pytest.raises(ValueError, match="books closed on entry 1, not here"):
        verify_batch(decode_batch(orjson.loads(encode_close(closed))["batch"]), ChainHead())
    assert standby.head.seq == 1
    assert tables(standby.path)["host_state"] == [("interest_closed_through", "2026-03-01")]
    await replicate(closed, standby)
    assert tables(standby.path) == tables(primary.path)


@pytest.mark.parametrize(
    "shape",
    [
        {"entries": [[1, "a", "b"]]},  # the record of an earlier release
        {"entries": [["h", "not json"]], "customers": [], "accounts": []},
    ],
)
def test_a_record_that_is_not_a_batch_is_refused(shape: dict[str, object]) -> None:
    complete: dict[str, object] = {
        "customers": [],
        "accounts": [],
        "remembered": [],
        "evidence": [],
        "frames": [],
    }
    with pytest.raises((ValidationError, ValueError)):
        decode_batch({**complete, **shape})


#: UTC as the host writes it, naive as an old store may hold it, any zone, and any fixed offset
#: (orjson cannot write one with seconds).
_offsets = st.timedeltas(-dt.timedelta(hours=23), dt.timedelta(hours=23)).map(dt.timezone)
_zones: st.SearchStrategy[dt.tzinfo] = st.just(dt.UTC) | st.timezones() | _offsets
_since = dt.datetime(1900, 1, 1)
_times = st.datetimes(min_value=_since) | st.datetimes(min_value=_since, timezones=_zones)
_accounts = st.builds(
    AccountState,
    number=st.text(min_size=1, max_size=20),
    branch_id=st.text(min_size=1, max_size=6),
    kind=st.sampled_from(["customer", "cash", "expense"]),
    opened_at=_times,
    balance=st.integers(-(10**15), 10**15),
    status=st.sampled_from(["open", "closed"]),
    pin=st.none() | st.builds(PinRecord, st.text(), st.sampled_from(["ibm3624", "visa_pvv"])),
    pin_tries=st.integers(0, 9),
    holder=st.none() | st.builds(Customer, st.text(), st.text(), st.text()),
    frozen=st.booleans(),
    held=st.integers(0, 10**12),
    usage=st.builds(DailyUsage, st.none() | st.dates(), st.integers(0, 10**9)),
    appointments=st.lists(
        st.builds(Appointment, st.dates(), st.integers(1, 10**9), st.dates())
    ).map(tuple),
)


@given(account=_accounts)
def test_a_shipped_account_becomes_the_row_the_primary_wrote(account: AccountState) -> None:
    settlement = Settlement(
        replies=(),
        entries=(),
        accounts=(account,),
        customers={},
        remembered=(),
        head=ChainHead(),
    )
    shipped = decode_batch(orjson.loads(encode_batch(settlement))["batch"])
    assert verify_batch(shipped, ChainHead()).accounts == [_account_row(account)]


class Handed(Delivery):
    """A delivery that remembers how it was settled."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers: dict[str, object] = {}
        self.exchange = self.routing_key = self.queue = ""
        self.redelivered = False
        self.settled = ""

    async def ack(self) -> None:
        self.settled = self.settled or "ack"

    async def nack(self, *, requeue: bool = True) -> None:
        self.settled = self.settled or "nack"


class _Idle(Subscription):
    async def cancel(self) -> None:
        pass


class KeptBus(Bus):
    """Keeps what is published; delivers nothing (the test hands frames to the standby)."""

    def __init__(self) -> None:
        self.published: list[Message] = []

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def declare(self, topology: object) -> None:
        pass

    async def publish(self, messages: Sequence[Message]) -> None:
        self.published += messages

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        return _Idle()

    async def queue_stats(self, queue: str) -> QueueStats:
        return QueueStats(queue, 0, 0)

    def acks(self) -> list[int]:
        """The positions the standby acked."""
        return [
            orjson.loads(m.body.split(b"\n")[1])["seq"]
            for m in self.published
            if m.routing_key == DR_ACKS
        ]


class Writes:
    """Counts the batches of each write a store makes; fails the first ``failing`` writes."""

    def __init__(self, store: Store, failing: int = 0) -> None:
        self.sizes: list[int] = []
        self.failing = failing
        self._apply = store.apply_replicas

    async def __call__(self, batches: Sequence[ReplicaRows]) -> None:
        self.sizes.append(len(batches))
        if len(self.sizes) <= self.failing:
            raise StoreError("disk full")
        await self._apply(batches)


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[StandbyService]:
    ensure_identity(tmp_path / "replica", SIGNER)
    service = StandbyService(KeptBus(), tmp_path / "replica")
    await service.start()
    yield service
    await service.stop()


async def shipped_frames(primary: Store, replica: StandbyService, batches: int) -> list[bytes]:
    """``batches`` committed batches of the primary as the host's signed frames."""
    teller = Teller()
    settlements = [await commit(primary, [teller.open_account(A, deposit=100)])]
    settlements += [await commit(primary, [teller.deposit(A, n + 1)]) for n in range(batches - 1)]
    return [
        signed_frame(replica.key, FrameKind.JOURNAL, "host", n, [encode_batch(s)], epoch=0)
        for n, s in enumerate(settlements, 1)
    ]


async def test_frames_checked_during_a_write_are_written_together_and_acked_once(
    primary: Store, replica: StandbyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = await shipped_frames(primary, replica, 4)
    writes = Writes(replica.store)
    monkeypatch.setattr(replica.store, "apply_replicas", writes)
    deliveries = [Handed(body) for body in frames]
    await replica._on_frame(deliveries[0])
    await asyncio.sleep(0)  # the writer takes the first frame alone
    for delivery in deliveries[1:]:  # checked while it writes
        await replica._on_frame(delivery)
    await replica._drain()
    assert writes.sizes == [1, 3]
    assert [d.settled for d in deliveries] == ["ack"] * 4
    assert isinstance(replica.bus, KeptBus) and replica.bus.acks() == [1, 4]
    assert replica.store.head == primary.head and replica.applied_batches == 4
    assert tables(replica.store.path) == tables(primary.path)


async def test_frames_not_written_go_back_to_the_queue_and_are_checked_again(
    primary: Store, replica: StandbyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = await shipped_frames(primary, replica, 2)
    writes = Writes(replica.store, failing=1)
    monkeypatch.setattr(replica.store, "apply_replicas", writes)
    refused = [Handed(body) for body in frames]
    for delivery in refused:
        await replica._on_frame(delivery)
    await replica._drain()
    assert [d.settled for d in refused] == ["nack", "nack"]
    assert replica.store.head == ChainHead() and isinstance(replica.bus, KeptBus)
    assert replica.bus.acks() == []
    again = [Handed(body) for body in frames]
    for delivery in again:
        await replica._on_frame(delivery)
    await replica._drain()
    assert [d.settled for d in again] == ["ack", "ack"]
    assert replica.store.head == primary.head and replica.bus.acks() == [2]


async def test_closings_of_the_books_apply_in_order_once_and_one_missed_is_a_gap(
    primary: Store, replica: StandbyService, tmp_path: Path
) -> None:
    teller = Teller()
    records = [
        encode_batch(await commit(primary, [teller.open_account(A, deposit=100_000)])),
        encode_close(await primary.close_books(dt.date(2026, 3, 1), RATE_BP, now())),
        encode_close(await primary.close_books(dt.date(2026, 3, 10), RATE_BP, now())),
        encode_close(await primary.close_books(dt.date(2026, 3, 20), RATE_BP, now())),
        encode_batch(await commit(primary, [teller.deposit(A, 5)])),
    ]
    frames = [
        signed_frame(replica.key, FrameKind.JOURNAL, "host", n, [record], epoch=0)
        for n, record in enumerate(records, 1)
    ]
    # each frame redelivered at once, then all of them again: each closing counts once
    for frame in [frames[0], *(f for body in frames[1:] for f in (body, body)), *frames]:
        await replica._on_frame(Handed(frame))
        await replica._drain()
    assert replica.store.head == primary.head and replica.in_sync
    assert tables(replica.store.path) == tables(primary.path)

    shutil.copytree(identity_dir(tmp_path / "replica"), identity_dir(tmp_path / "wiped"))
    wiped = StandbyService(KeptBus(), tmp_path / "wiped")
    await wiped.start()
    try:
        await wiped._on_frame(Handed(frames[2]))  # books closed on entry 1: it holds none
        assert not wiped.in_sync and await wiped.store.meta("missed") == "1..1"
    finally:
        await wiped.stop()
