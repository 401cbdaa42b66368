"""Customer tiers: the computation, and the host recording changes after each batch."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from common.money import yuan
from host_node.store import Store, connect, ledger_path
from host_node.tiers import TierChange, tier_of, update_tiers
from tests.host_node.fakes import Teller, account_no, run_batch, valid_id

A, B = account_no(1), account_no(2)


@pytest.mark.parametrize(
    ("assets", "tier"),
    [
        (yuan(49_999, 99), "base"),
        (yuan(50_000), "branch"),
        (yuan(100_000), "director"),
        (yuan(199_999), "director"),
        (yuan(200_000), "wealth"),
        (yuan(2_000_000), "wealth"),
        (yuan(2_000_000, 1), "private"),
    ],
)
def test_tier_boundaries(assets: int, tier: str) -> None:
    assert tier_of(assets) == tier


def test_a_change_event_is_masked() -> None:
    change = TierChange("110***********1233", "0001", "base", "wealth", 1, dt.datetime.now(dt.UTC))
    assert change.upgrade
    event = change.as_event("host")
    assert event.customer == "110***********1233" and event.branch == "0001"
    assert (event.from_tier, event.to_tier) == ("base", "wealth")


async def test_the_store_records_tier_changes_over_all_of_a_customers_accounts(
    tmp_path: Path,
) -> None:
    store = Store(ledger_path(tmp_path))
    await store.open()
    try:
        teller = Teller()
        pin = teller.pin("1234")
        await run_batch(
            store, [teller.open_account(A, deposit=yuan(30_000), pin=pin, id_number="chen")]
        )
        await run_batch(store, [teller.open_account(B, deposit=yuan(30_000), id_number="chen")])
        await run_batch(store, [teller.withdraw(A, yuan(20_000), teller.pin("1234"))])
    finally:
        await store.close()
    connection = sqlite3.connect(ledger_path(tmp_path))
    rows = connection.execute(
        "SELECT old_tier, new_tier, assets, branch_id FROM tier_changes ORDER BY id"
    ).fetchall()
    connection.close()
    assert rows == [
        ("base", "branch", yuan(60_000), "0001"),
        ("branch", "base", yuan(40_000), "0001"),
    ]
    assert valid_id("chen") not in repr(rows)


def test_recomputing_a_batchs_tiers_reads_only_its_customers_accounts(tmp_path: Path) -> None:
    connection = connect(ledger_path(tmp_path))
    try:
        traced: list[str] = []
        connection.set_trace_callback(traced.append)
        update_tiers(connection, [A, B], dt.datetime.now(dt.UTC))
        (query,) = [q for q in traced if q.startswith("SELECT")]
        plan = connection.execute(f"EXPLAIN QUERY PLAN {query}").fetchall()
    finally:
        connection.close()
    assert not [step for step in plan if step[3].startswith("SCAN")], plan  # no table scan
