"""Demand-deposit interest (存款有息): accrued daily, posted quarterly.

Every bank day's closing balance earns ``rate_bp`` basis points a year, one 365th a day. The
accrual is kept exactly, in *units* of fen x basis points (one fen of interest is
``10_000 * 365`` units), on the account row. On the 20th of the last month of each quarter
(20 March, June, September, December) the whole fen accrued are posted, for each branch in one
journal entry, from the branch's interest-expense account (``INTEREST-<branch>``) to its
customers; the fraction stays accrued. Reconciliation counts the expense accounts with the
branches' cash, so money is still conserved.

Days are closed lazily, before the first batch of a new bank day: between two batches no
balance changed, so every day in between closed with the balance the accounts hold now, and
a stretch of ``k`` days accrues ``balance * rate_bp * k`` units in one statement. A simulated
year therefore costs a few statements, whatever the clock's rate.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from common.results import ResultCode
from host_node.journal import ChainHead, JournalEntry, Origin, head_of, record_hash, seal
from host_node.ledger import Posting, interest_expense_account

#: Units of accrual in one fen of interest: basis points x days in a year.
UNITS_PER_FEN = 10_000 * 365
RULE = "interest"
_POST_TO_ACCOUNT = """
INSERT INTO accounts (number, customer_id, branch_id, kind, balance, status, has_pin,
                      pin_tries, opened_at)
VALUES (?, NULL, ?, 'expense', ?, 'open', 0, 0, ?)
ON CONFLICT (number) DO UPDATE SET balance = balance + excluded.balance
"""
#: The month of each quarter's posting day, and the day.
_POSTING_MONTHS = (3, 6, 9, 12)
_POSTING_DAY = 20


def is_posting_day(day: dt.date) -> bool:
    return day.day == _POSTING_DAY and day.month in _POSTING_MONTHS


def posting_days(after: dt.date, through: dt.date) -> Iterator[dt.date]:
    """Every posting day in ``(after, through]``."""
    year = after.year
    while True:
        for month in _POSTING_MONTHS:
            day = dt.date(year, month, _POSTING_DAY)
            if day > through:
                return
            if day > after:
                yield day
        year += 1


@dataclass(frozen=True, slots=True)
class Stretch:
    """Consecutive closed days ``(after, through]``, ending on a posting day when ``post``."""

    after: dt.date
    through: dt.date
    post: bool

    @property
    def days(self) -> int:
        return (self.through - self.after).days


def stretches(closed_through: dt.date, through: dt.date) -> list[Stretch]:
    """The days to close, cut after each posting day."""
    cuts = list(posting_days(closed_through, through))
    result: list[Stretch] = []
    start = closed_through
    for day in cuts:
        result.append(Stretch(start, day, True))
        start = day
    if start < through:
        result.append(Stretch(start, through, False))
    return result


def close_days(
    connection: sqlite3.Connection,
    head: ChainHead,
    closed_through: dt.date,
    through: dt.date,
    rate_bp: int,
    now: dt.datetime,
) -> list[JournalEntry]:
    """Accrue interest for the days ``(closed_through, through]`` and post it on posting days.

    Runs inside the caller's transaction; returns the journal entries to store (already
    chained after ``head``), whose postings the caller has not yet applied.
    """
    entries: list[JournalEntry] = []
    for stretch in stretches(closed_through, through):
        if rate_bp:
            connection.execute(
                "UPDATE accounts SET interest_units = interest_units + balance * ? "
                "WHERE kind = 'customer' AND status = 'open' AND balance > 0",
                (rate_bp * stretch.days,),
            )
        if stretch.post:
            for entry in _post(connection, head, stretch.through, rate_bp, now):
                for posting in entry.postings:  # before the next stretch accrues on them
                    connection.execute(
                        _POST_TO_ACCOUNT,
                        (posting.account, entry.branch_id, posting.amount, now.isoformat()),
                    )
                entries.append(entry)
                head = head_of(entry)
    return entries


def _post(
    connection: sqlite3.Connection,
    head: ChainHead,
    day: dt.date,
    rate_bp: int,
    now: dt.datetime,
) -> Iterator[JournalEntry]:
    rows = connection.execute(
        "SELECT branch_id, number, interest_units / ? FROM accounts "
        "WHERE kind = 'customer' AND interest_units >= ? ORDER BY branch_id, number",
        (UNITS_PER_FEN, UNITS_PER_FEN),
    ).fetchall()
    by_branch: dict[str, list[Posting]] = {}
    for branch_id, number, fen in rows:
        by_branch.setdefault(branch_id, []).append(Posting(number, fen))
    for branch_id, postings in by_branch.items():
        total = sum(p.amount for p in postings)
        request_id = f"interest-{day.isoformat()}-{branch_id}"
        origin = Origin(request_id, branch_id, None, None, None, now, now, record_hash(b""))
        entry = seal(
            head,
            origin,
            kind="interest",
            subject="",
            processed_at=now,
            postings=(Posting(interest_expense_account(branch_id), -total), *postings),
            result=ResultCode.APPROVED,
            reason=f"quarterly interest to {day.isoformat()} at {rate_bp} bp a year",
            rule=RULE,
        )
        head = head_of(entry)
        yield entry
    connection.execute(
        "UPDATE accounts SET interest_units = interest_units % ? WHERE kind = 'customer'",
        (UNITS_PER_FEN,),
    )
