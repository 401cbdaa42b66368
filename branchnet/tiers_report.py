"""``branchnet tiers report``: the five quarterly indicators of each branch, from a host store.

DOMAIN.md "Customer tiers": a branch is measured each quarter on 保、争、挖、抢、培. Computed
here from the journal (postings in processing order, quarters by the bank's calendar) and the
accounts table; a customer belongs to the branch of their first account.

- **churn** (保, keep): of the customers with a tier above ``base`` at the start of the
  quarter, the share at ``base`` at its end;
- **upgrade** (争, win): of the customers at the start, the share whose tier rose;
- **coverage** (挖, deepen): of the customers at the end, the share holding money in two or
  more accounts (products);
- **customer growth** (抢, gain): customers at the end against the start;
- **asset growth** (培, grow): the customers' assets at the end against the start.

Rates are fractions (None where the start has nothing to divide by).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_node.journal import JournalEntry
from host_node.policy import bank_day
from host_node.store import connect_read_only, journal_entries
from host_node.tiers import rank, tier_of

Quarter = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Holding:
    """A customer account as the report needs it."""

    customer: int
    branch_id: str
    opened_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Position:
    """A customer at a quarter's edge."""

    assets: int
    funded_accounts: int

    @property
    def tier(self) -> str:
        return tier_of(self.assets)


def quarter_of(moment: dt.datetime) -> Quarter:
    day = bank_day(moment)
    return day.year, (day.month - 1) // 3 + 1


def positions(
    holdings: Mapping[str, Holding], balances: Mapping[str, int], until: dt.datetime
) -> dict[int, Position]:
    """Every customer with an account opened by ``until``, with assets and funded accounts."""
    assets: dict[int, int] = defaultdict(int)
    funded: dict[int, int] = defaultdict(int)
    for number, holding in holdings.items():
        if holding.opened_at > until:
            continue
        balance = balances.get(number, 0)
        assets[holding.customer] += balance
        funded[holding.customer] += balance > 0
    return {c: Position(assets[c], funded[c]) for c in assets}


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def indicators(start: Mapping[int, Position], end: Mapping[int, Position]) -> dict[str, Any]:
    """The five indicators of one branch for one quarter."""
    tiered = [c for c, p in start.items() if p.tier != "base"]
    churned = [c for c in tiered if end.get(c, Position(0, 0)).tier == "base"]
    upgraded = [c for c, p in start.items() if c in end and rank(end[c].tier) > rank(p.tier)]
    covered = [c for c, p in end.items() if p.funded_accounts >= 2]
    assets_start = sum(p.assets for p in start.values())
    assets_end = sum(p.assets for p in end.values())
    return {
        "customers_start": len(start),
        "customers_end": len(end),
        "assets_start": assets_start,
        "assets_end": assets_end,
        "churn": _rate(len(churned), len(tiered)),
        "upgrade": _rate(len(upgraded), len(start)),
        "coverage": _rate(len(covered), len(end)),
        "customer_growth": _rate(len(end) - len(start), len(start)),
        "asset_growth": _rate(assets_end - assets_start, assets_start),
        "tiers_end": _count(p.tier for p in end.values()),
    }


def _count(tiers: Iterable[str]) -> dict[str, int]:
    counted: dict[str, int] = defaultdict(int)
    for tier in tiers:
        counted[tier] += 1
    return dict(sorted(counted.items(), key=lambda item: rank(item[0])))


def report(
    holdings: Mapping[str, Holding], entries: Iterable[JournalEntry]
) -> dict[str, list[dict[str, Any]]]:
    """Per branch, per quarter in the journal, the indicators (see the module docstring)."""
    balances: dict[str, int] = defaultdict(int)
    edges: list[tuple[Quarter, dict[int, Position]]] = []
    current: Quarter | None = None
    last: dt.datetime | None = None
    for entry in entries:
        quarter = quarter_of(entry.processed_at)
        if current is not None and quarter != current and last is not None:
            edges.append((current, positions(holdings, balances, last)))
        current, last = quarter, entry.processed_at
        for posting in entry.postings:
            if posting.account in holdings:
                balances[posting.account] += posting.amount
    if current is not None and last is not None:
        edges.append((current, positions(holdings, balances, last)))
    branches = sorted({h.branch_id for h in holdings.values()})
    home = _home_branches(holdings)
    result: dict[str, list[dict[str, Any]]] = {b: [] for b in branches}
    previous: dict[int, Position] = {}
    for quarter, snapshot in edges:
        for branch_id in branches:
            start = {c: p for c, p in previous.items() if home[c] == branch_id}
            end = {c: p for c, p in snapshot.items() if home[c] == branch_id}
            result[branch_id].append(
                {"quarter": f"{quarter[0]}Q{quarter[1]}", **indicators(start, end)}
            )
        previous = snapshot
    return result


def _home_branches(holdings: Mapping[str, Holding]) -> dict[int, str]:
    first: dict[int, Holding] = {}
    for holding in holdings.values():
        known = first.get(holding.customer)
        if known is None or holding.opened_at < known.opened_at:
            first[holding.customer] = holding
    return {c: h.branch_id for c, h in first.items()}


def read_report(store: Path) -> dict[str, list[dict[str, Any]]]:
    """:func:`report` over the host store at ``store`` (read-only)."""
    connection = connect_read_only(store)
    try:
        holdings = {
            number: Holding(customer, branch_id, dt.datetime.fromisoformat(opened))
            for number, customer, branch_id, opened in connection.execute(
                "SELECT number, customer_id, branch_id, opened_at FROM accounts "
                "WHERE kind = 'customer' AND customer_id IS NOT NULL"
            )
        }
        return report(holdings, journal_entries(connection))
    finally:
        connection.close()
