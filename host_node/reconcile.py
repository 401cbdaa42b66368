"""Reconciling a host store after a run: read-only checks and an index of the journal.

:func:`check_store` proves the books: every entry's postings sum to zero, every balance is the
sum of its postings, the postings table says what the journal says, the hash chain verifies,
and the customers' money equals the cash the branches took in plus the interest they paid.
:func:`journal_index` tells the orchestrator what became of each request id.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from common.results import ResultCode
from host_node.errors import StoreError
from host_node.journal import JournalEntry, verify_chain
from host_node.ledger import CASH_PREFIX, is_cash_account
from host_node.store import connect_read_only, journal_entries

#: How many offenders a failed check names.
_SHOWN = 5


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class JournalSummary:
    """What the journal holds for one request id.

    ``result`` and ``kind`` are the deciding entry's (the last that is not a ``94`` refusal of
    reused content); ``entries`` counts every entry for the id; ``postings`` are all of them;
    ``cash_in`` and ``cash_out`` are counter cash by branch id.
    """

    request_id: str
    result: ResultCode
    kind: str
    entries: int
    postings: tuple[tuple[str, int], ...]
    cash_in: Mapping[str, int]
    cash_out: Mapping[str, int]


def check_store(path: Path) -> dict[str, CheckResult]:
    """Run every reconciliation check on the store at ``path`` without changing it.

    Raises:
        StoreError: there is no readable store at ``path``.
    """
    connection = connect_read_only(path)
    try:
        checks = {
            "postings_balanced": _postings_balanced(connection),
            "balances_match_postings": _balances_match_postings(connection),
            "customers_match_cash": _customers_match_cash(connection),
        }
        try:
            entries = list(journal_entries(connection))
        except (ValidationError, ValueError) as error:
            unreadable = CheckResult(False, f"an entry cannot be read: {type(error).__name__}")
            checks["hash_chain"] = checks["postings_match_journal"] = unreadable
        else:
            checks["hash_chain"] = _hash_chain(entries)
            checks["postings_match_journal"] = _postings_match_journal(connection, entries)
        return checks
    finally:
        connection.close()


def journal_length(path: Path) -> int:
    """How many entries the journal at ``path`` holds (a cheap sign of progress).

    Raises:
        StoreError: there is no readable store at ``path`` (also one whose host is still
            creating it: the file is there, its tables not yet).
    """
    connection = connect_read_only(path)
    try:
        (count,) = connection.execute("SELECT count(*) FROM journal").fetchone()
    except sqlite3.Error as error:
        raise StoreError(f"cannot read the journal at {path}: {error}") from None
    finally:
        connection.close()
    return int(count)


def journal_index(path: Path) -> dict[str, JournalSummary]:
    """Each request id in the journal with what became of it.

    Raises:
        StoreError: there is no readable store at ``path``.
    """
    connection = connect_read_only(path)
    try:
        by_id: dict[str, list[JournalEntry]] = {}
        for entry in journal_entries(connection):
            by_id.setdefault(entry.request_id, []).append(entry)
    finally:
        connection.close()
    return {request_id: _summary(entries) for request_id, entries in by_id.items()}


def _summary(entries: list[JournalEntry]) -> JournalSummary:
    deciding = next(
        (e for e in reversed(entries) if e.result is not ResultCode.DUPLICATE_MISMATCH),
        entries[-1],
    )
    postings = tuple((p.account, p.amount) for e in entries for p in e.postings)
    cash_in: Counter[str] = Counter()
    cash_out: Counter[str] = Counter()
    for account, amount in postings:
        if is_cash_account(account):
            branch_id = account.removeprefix(CASH_PREFIX)
            if amount < 0:
                cash_in[branch_id] -= amount
            else:
                cash_out[branch_id] += amount
    return JournalSummary(
        request_id=deciding.request_id,
        result=deciding.result,
        kind=deciding.kind,
        entries=len(entries),
        postings=postings,
        cash_in=dict(cash_in),
        cash_out=dict(cash_out),
    )


def _verdict(offenders: list[str], what: str, fine: str) -> CheckResult:
    if not offenders:
        return CheckResult(True, fine)
    shown = ", ".join(offenders[:_SHOWN])
    more = f" and {len(offenders) - _SHOWN} more" if len(offenders) > _SHOWN else ""
    return CheckResult(False, f"{len(offenders)} {what}: {shown}{more}")


def _postings_balanced(connection: sqlite3.Connection) -> CheckResult:
    rows = connection.execute(
        "SELECT journal_seq, SUM(amount) FROM postings GROUP BY journal_seq "
        "HAVING SUM(amount) != 0 ORDER BY journal_seq"
    ).fetchall()
    offenders = [f"entry {seq} nets {net}" for seq, net in rows]
    return _verdict(offenders, "unbalanced entries", "every entry's postings sum to zero")


def _balances_match_postings(connection: sqlite3.Connection) -> CheckResult:
    rows = connection.execute(
        "SELECT a.number, a.balance, COALESCE(SUM(p.amount), 0) AS posted "
        "FROM accounts a LEFT JOIN postings p ON p.account = a.number "
        "GROUP BY a.number HAVING a.balance != posted ORDER BY a.number"
    ).fetchall()
    orphans = connection.execute(
        "SELECT DISTINCT account FROM postings WHERE account NOT IN (SELECT number FROM accounts)"
    ).fetchall()
    offenders = [f"{number} holds {held}, postings say {posted}" for number, held, posted in rows]
    offenders += [f"postings to unknown account {number}" for (number,) in orphans]
    count = connection.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
    return _verdict(offenders, "accounts off", f"{count} balances equal their postings")


def _hash_chain(entries: list[JournalEntry]) -> CheckResult:
    problem = verify_chain(entries)
    if problem is not None:
        return CheckResult(False, problem)
    return CheckResult(True, f"{len(entries)} entries chained")


def _postings_match_journal(
    connection: sqlite3.Connection, entries: list[JournalEntry]
) -> CheckResult:
    journaled = Counter((e.seq, p.account, p.amount) for e in entries for p in e.postings)
    table = Counter(connection.execute("SELECT journal_seq, account, amount FROM postings"))
    offenders = [f"entry {s}: {amount} to {a} not posted" for s, a, amount in journaled - table]
    offenders += [f"entry {s}: {amount} to {a} not journaled" for s, a, amount in table - journaled]
    return _verdict(sorted(offenders), "postings differ", "the postings table matches the journal")


def _customers_match_cash(connection: sqlite3.Connection) -> CheckResult:
    customers, cash, interest = connection.execute(
        "SELECT COALESCE(SUM(CASE WHEN kind = 'customer' THEN balance END), 0), "
        "COALESCE(SUM(CASE WHEN kind = 'cash' THEN -balance END), 0), "
        "COALESCE(SUM(CASE WHEN kind = 'expense' THEN -balance END), 0) FROM accounts"
    ).fetchone()
    detail = f"customer balances {customers}, branch cash positions {cash}"
    if interest:
        detail += f", interest paid {interest}"
    return CheckResult(customers == cash + interest, detail)
