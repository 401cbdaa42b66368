from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.ids import cash_account
from common.results import ResultCode
from host_node.batch import Remembered, accounts_to_load, plan, settle
from host_node.errors import StoreError
from host_node.journal import ChainHead
from host_node.staff import StaffMember
from host_node.store import Store, connect, ledger_path, read_staff
from tests.host_node.fakes import STAFF, Teller, account_no, fake_hsm, item_of, now, run_batch

A, B = account_no(1), account_no(2)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(ledger_path(tmp_path))
    await store.open()
    yield store
    await store.close()


async def test_a_committed_batch_is_there_after_reopening(store: Store, tmp_path: Path) -> None:
    teller = Teller()
    opening = teller.open_account(A, deposit=2_000, pin=teller.pin("1234"))
    settlement = await run_batch(store, [opening, teller.deposit(A, 500)])
    await store.close()
    reopened = Store(ledger_path(tmp_path))
    await reopened.open()
    try:
        assert reopened.head == settlement.head and reopened.head.seq == 2
        snapshot = await reopened.snapshot([opening.request_id], [A, cash_account("0001")])
        assert snapshot.known[opening.request_id].reply == settlement.replies[0]
        account = snapshot.accounts[A]
        assert (account.balance, account.pin_tries, account.status) == (2_500, 0, "open")
        assert account.pin is not None and account.pin.value == "1234"  # the fake HSM's value
        assert snapshot.accounts[cash_account("0001")].balance == -2_500
    finally:
        await reopened.close()


async def test_a_failed_commit_leaves_nothing_behind(store: Store) -> None:
    teller = Teller()
    opening = teller.open_account(A, deposit=2_000)
    first = await run_batch(store, [opening])
    items = [item_of(teller.deposit(A, 700))]
    snapshot = await store.snapshot([items[0].request_id], accounts_to_load(items))
    planned = plan(items, snapshot, iter(["c1"]))
    settlement = settle(items, planned, snapshot, {}, store.head, now)
    clash = Remembered(opening.request_id, "x", settlement.remembered[0].reply)
    broken = replace(settlement, remembered=(*settlement.remembered, clash))
    with pytest.raises(StoreError, match="not committed"):
        await store.commit(broken)
    assert store.head == first.head
    after = await store.snapshot([items[0].request_id], [A])
    assert after.accounts[A].balance == 2_000 and not after.known


async def test_a_settlement_must_continue_the_journal(store: Store) -> None:
    settlement = await run_batch(store, [Teller().open_account(A)])
    with pytest.raises(StoreError, match="does not continue"):
        await store.commit(replace(settlement, head=ChainHead()))


@pytest.mark.parametrize(("mode", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_wal_and_the_configured_synchronous_mode(
    tmp_path: Path, mode: str, level: int
) -> None:
    store = Store(ledger_path(tmp_path), synchronous=mode)  # type: ignore[arg-type]
    await store.open()
    try:
        connection = store._open()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        await store.close()


async def test_customers_are_kept_once_per_identity_document(store: Store) -> None:
    teller = Teller()
    same_person = [teller.open_account(n, id_number="X1") for n in (A, B)]
    await run_batch(store, same_person)
    query = "SELECT DISTINCT customer_id FROM accounts WHERE kind = 'customer'"
    assert len(store._open().execute(query).fetchall()) == 1


async def test_a_declined_batch_is_journaled_without_postings(store: Store) -> None:
    teller = Teller()
    settlement = await run_batch(store, [teller.deposit(A, 100)])
    assert settlement.replies[0] is not None
    assert settlement.replies[0].result is ResultCode.NO_SUCH_ACCOUNT
    connection = store._open()
    assert connection.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 1
    assert connection.execute("SELECT COUNT(*) FROM postings").fetchone()[0] == 0


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 42")
    with pytest.raises(StoreError, match="schema version 42"):
        connect(path)


async def test_staff_keys_are_registered_and_kept(store: Store, tmp_path: Path) -> None:
    await store.enrol_staff(STAFF.values())
    await store.close()
    reopened = Store(ledger_path(tmp_path))
    await reopened.open()
    try:
        assert reopened.staff == STAFF
        assert reopened.staff["S000101"].public_key is not None
        rekeyed = replace(STAFF["S000101"], public_key=bytes(32))
        await reopened.enrol_staff([rekeyed])
        assert reopened.staff["S000101"] == rekeyed  # a new key replaces the old one
    finally:
        await reopened.close()


def test_a_store_made_before_staff_keys_gains_the_column(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE staff (staff_id TEXT PRIMARY KEY, role TEXT NOT NULL, "
            "branch_id TEXT NOT NULL)"
        )
        old.execute("INSERT INTO staff VALUES ('S000101', 'supervisor', '0001')")
    connection = connect(path)
    try:
        assert read_staff(connection) == {
            "S000101": StaffMember("S000101", "supervisor", "0001", None)
        }
    finally:
        connection.close()


async def test_known_accounts_updated_or_every_account_upserted_store_alike(
    tmp_path: Path,
) -> None:
    """The primary names the accounts new to the store and updates the others in place; a
    settlement that does not say (the standby's, decoded) upserts each: the rows agree."""
    stores = [Store(tmp_path / name / "ledger.sqlite") for name in ("named", "unnamed")]
    teller = Teller()
    batches = [
        [teller.open_account(A, deposit=2_000, pin=teller.pin("1234"))],
        [
            teller.deposit(A, 500),
            teller.withdraw(A, 300, teller.pin("1234")),
            teller.open_account(B, deposit=900),
            teller.transfer(A, B, 100, teller.pin("1234")),
        ],
    ]
    for store in stores:
        await store.open()
    try:
        for records in batches:
            items = [item_of(r) for r in records]
            snapshot = replace(
                await stores[0].snapshot({i.request_id for i in items}, accounts_to_load(items)),
                staff=STAFF,
            )
            planned = plan(items, snapshot, iter(f"c{n}" for n in range(99)))
            responses = {c.command_id: fake_hsm(c) for c in planned.commands}
            settlement = settle(items, planned, snapshot, responses, stores[0].head, now)
            assert all(r is not None and r.approved for r in settlement.replies)
            assert settlement.new_accounts == {
                a.number for a in settlement.accounts if a.number not in snapshot.accounts
            }
            await stores[0].commit(settlement)
            await stores[1].commit(replace(settlement, new_accounts=None))
        assert settlement.new_accounts == {B}
        rows = [
            s._open().execute("SELECT * FROM accounts ORDER BY number").fetchall() for s in stores
        ]
        assert rows[0] == rows[1] and len(rows[0]) == 3
    finally:
        for store in stores:
            await store.close()
