"""Customer tiers (分层维护): each customer's tier from total assets, kept after every posting.

DOMAIN.md: customers are tiered by their financial assets at the bank, each tier with an owner.

| tier | assets (CNY) | owner |
| --- | --- | --- |
| ``base`` | under 50,000 | (no dedicated owner) |
| ``branch`` | 50,000 - 100,000 | branch staff (customers under 60) |
| ``director`` | 100,000 - 200,000 | branch director and lobby manager |
| ``wealth`` | 200,000 - 2,000,000 | wealth managers |
| ``private`` | over 2,000,000 | wealth management centre / private banking |

Lower bounds are inclusive, except that ``private`` starts above 2,000,000. The store
recomputes the tier of every customer whose money moved in a committed batch (or in an
interest posting) and records each change in ``tier_changes``; the host hands each change to
its ``on_tier_change`` hook and emits a masked ``tier_changed`` event.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass

from common.events import CustomerTier, TierChanged
from common.id_documents import mask_id_number
from common.money import yuan

TIERS: tuple[str, ...] = tuple(CustomerTier)
OWNERS: dict[str, str] = {
    CustomerTier.BASE: "",
    CustomerTier.BRANCH: "branch staff",
    CustomerTier.DIRECTOR: "branch director and lobby manager",
    CustomerTier.WEALTH: "wealth managers",
    CustomerTier.PRIVATE: "wealth management centre / private banking",
}


def tier_of(assets: int) -> CustomerTier:
    """The tier of a customer holding ``assets`` fen."""
    if assets > yuan(2_000_000):
        return CustomerTier.PRIVATE
    if assets >= yuan(200_000):
        return CustomerTier.WEALTH
    if assets >= yuan(100_000):
        return CustomerTier.DIRECTOR
    if assets >= yuan(50_000):
        return CustomerTier.BRANCH
    return CustomerTier.BASE


def rank(tier: str) -> int:
    return TIERS.index(tier)


@dataclass(frozen=True, slots=True)
class TierChange:
    """A customer moved between tiers. ``customer`` is the masked ID number."""

    customer: str
    branch_id: str
    old: str
    new: str
    assets: int
    at: dt.datetime

    @property
    def upgrade(self) -> bool:
        return rank(self.new) > rank(self.old)

    def as_event(self, node: str) -> TierChanged:
        """The masked ``tier_changed`` event (the ID number masked, no account number)."""
        return TierChanged(
            node=node,
            branch=self.branch_id,
            at=self.at,
            customer=self.customer,
            from_tier=CustomerTier(self.old),
            to_tier=CustomerTier(self.new),
        )


_CHUNK = 500
TierHook = Callable[[TierChange], object]

SCHEMA = """
CREATE TABLE IF NOT EXISTS customer_tiers (
    customer_id INTEGER PRIMARY KEY REFERENCES customers (id),
    tier        TEXT NOT NULL,
    assets      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tier_changes (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    branch_id   TEXT NOT NULL,
    old_tier    TEXT NOT NULL,
    new_tier    TEXT NOT NULL,
    assets      INTEGER NOT NULL,
    at          TEXT NOT NULL
);
-- the customers holding a batch's accounts, and all their accounts, without a table scan
CREATE INDEX IF NOT EXISTS accounts_customer ON accounts (customer_id);
"""


def update_tiers(
    connection: sqlite3.Connection, accounts: Collection[str] | None, at: dt.datetime
) -> list[TierChange]:
    """Recompute the tiers of the customers holding ``accounts`` (None: every customer),
    inside the caller's transaction; record and return the changes."""
    if accounts is None:
        return _update(connection, "", [], at)
    numbers = list(accounts)
    changes: list[TierChange] = []
    for start in range(0, len(numbers), _CHUNK):
        chunk = numbers[start : start + _CHUNK]
        where = (
            "WHERE a.customer_id IN (SELECT customer_id FROM accounts WHERE number IN "
            f"({', '.join('?' * len(chunk))}))"
        )
        changes += _update(connection, where, chunk, at)
    return changes


def _update(
    connection: sqlite3.Connection, where: str, parameters: list[str], at: dt.datetime
) -> list[TierChange]:
    rows = connection.execute(
        "SELECT a.customer_id, SUM(a.balance), MIN(a.opened_at || ' ' || a.branch_id), "
        "c.id_number, t.tier FROM accounts a JOIN customers c ON c.id = a.customer_id "
        f"LEFT JOIN customer_tiers t ON t.customer_id = a.customer_id {where} "
        "GROUP BY a.customer_id",
        parameters,
    ).fetchall()
    changes: list[TierChange] = []
    for customer_id, assets, home, id_number, stored in rows:
        tier = tier_of(assets)
        if tier == (stored or "base"):
            if stored is None:
                connection.execute(
                    "INSERT INTO customer_tiers (customer_id, tier, assets) VALUES (?, ?, ?)",
                    (customer_id, tier, assets),
                )
            continue
        change = TierChange(
            mask_id_number(id_number), home.rsplit(" ", 1)[1], stored or "base", tier, assets, at
        )
        connection.execute(
            "INSERT INTO customer_tiers (customer_id, tier, assets) VALUES (?, ?, ?) "
            "ON CONFLICT (customer_id) DO UPDATE SET tier = excluded.tier, "
            "assets = excluded.assets",
            (customer_id, tier, assets),
        )
        connection.execute(
            "INSERT INTO tier_changes (customer_id, branch_id, old_tier, new_tier, assets, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (customer_id, change.branch_id, change.old, tier, assets, at.isoformat()),
        )
        changes.append(change)
    return changes
