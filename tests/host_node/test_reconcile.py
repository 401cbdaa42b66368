from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common.ids import cash_account
from common.results import ResultCode
from host_node.errors import StoreError
from host_node.reconcile import CheckResult, check_store, journal_index, journal_length
from host_node.store import Store, ledger_path
from tests.host_node.fakes import Teller, account_no, run_batch

A, B = account_no(1), account_no(2)


@pytest.fixture
async def ledger(tmp_path: Path) -> Path:
    """A closed store after a small day at two branches."""
    store = Store(ledger_path(tmp_path))
    await store.open()
    home, away = Teller(), Teller(branch_id="0002")
    deposit = home.deposit(A, 300)
    await run_batch(
        store,
        [
            home.open_account(A, deposit=5_000, pin=home.pin("1234"), id_number="X1"),
            home.open_account(B, pin=home.pin("4321"), id_number="X2"),
        ],
    )
    await run_batch(
        store,
        [
            deposit,
            away.withdraw(A, 1_200, away.pin("1234")),
            home.transfer(A, B, 800, home.pin("1234")),
            home.withdraw(B, 10_000, home.pin("4321")),
        ],
    )
    await run_batch(store, [deposit.model_copy(update={"amount": 1})])
    await store.close()
    return ledger_path(tmp_path)


def tamper(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(statement)


def test_a_clean_store_passes_every_check(ledger: Path) -> None:
    before = ledger.read_bytes()
    checks = check_store(ledger)
    assert set(checks) == {
        "postings_balanced",
        "balances_match_postings",
        "hash_chain",
        "postings_match_journal",
        "customers_match_cash",
    }
    assert all(check.ok for check in checks.values()), checks
    assert checks["customers_match_cash"].detail.endswith("branch cash positions 4100")
    assert ledger.read_bytes() == before


def test_journal_index_says_what_became_of_each_request(ledger: Path) -> None:
    index = journal_index(ledger)
    assert journal_length(ledger) == sum(summary.entries for summary in index.values())
    assert len(index) == 6
    opening = index["0001-01-0000000002"]
    assert (opening.kind, opening.result, opening.entries) == ("open_account", "00", 1)
    assert opening.cash_in == {"0001": 5_000} and opening.cash_out == {}
    withdrawal = index["0002-01-0000000001"]
    assert withdrawal.postings == ((A, -1_200), (cash_account("0002"), 1_200))
    assert withdrawal.cash_out == {"0002": 1_200}
    reused = index["0001-01-0000000001"]
    assert (reused.result, reused.entries) == (ResultCode.APPROVED, 2)
    assert index["0001-01-0000000005"].result is ResultCode.INSUFFICIENT_FUNDS
    assert index["0001-01-0000000005"].postings == ()


def test_a_changed_balance_is_found(ledger: Path) -> None:
    tamper(ledger, f"UPDATE accounts SET balance = balance + 100 WHERE number = '{A}'")
    checks = check_store(ledger)
    assert not checks["balances_match_postings"].ok
    assert A in checks["balances_match_postings"].detail
    assert not checks["customers_match_cash"].ok
    assert checks["hash_chain"].ok


def test_an_edited_journal_entry_is_found(ledger: Path) -> None:
    forged = 'replace(body, \'"result":"51"\', \'"result":"00"\')'
    tamper(ledger, f"UPDATE journal SET body = {forged}")
    checks = check_store(ledger)
    assert checks["hash_chain"] == CheckResult(False, "entry 6 does not match its hash")


def test_a_removed_posting_is_found(ledger: Path) -> None:
    tamper(ledger, "DELETE FROM postings WHERE rowid = (SELECT MIN(rowid) FROM postings)")
    checks = check_store(ledger)
    assert not checks["postings_balanced"].ok
    assert not checks["postings_match_journal"].ok
    assert "entry 1" in checks["postings_match_journal"].detail


def test_no_store_no_reconciliation(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        check_store(tmp_path / "missing.sqlite")


def test_a_store_without_its_tables_yet_is_not_readable(tmp_path: Path) -> None:
    # what a reader sees while a host is creating its store: the file, no tables yet
    path = tmp_path / "ledger.sqlite"
    sqlite3.connect(path).close()
    with pytest.raises(StoreError, match="cannot read the journal"):
        journal_length(path)
