"""End-of-run reconciliation: the host's ledger and journal against what branches were told.

Checks (each a :class:`host_node.CheckResult`):
- the store's own invariants (host_node.reconcile.check_store: postings balance per entry,
  balances equal their postings, the hash chain verifies, customer money equals branch cash);
- ``cash_by_branch``: each branch's counter cash in the ledger equals the cash its approved
  replies moved (timed-out requests are resolved from the journal);
- ``journal_matches_replies``: every answered request id has exactly one journal entry with the
  same result; approved money movements have postings, declines have none;
- ``no_conflicting_answers``: no request id was answered twice with different results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from branch_node import BranchReport
from common.ids import cash_account
from host_node import CheckResult as Check
from host_node import JournalSummary, check_store, journal_index

#: Kinds whose approval always moves money (an opening deposit of zero does not).
_MOVING_KINDS = frozenset({"deposit", "withdraw", "transfer"})
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Reconciliation:
    checks: Mapping[str, Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


def reconcile(store_path: Path, reports: Sequence[BranchReport]) -> Reconciliation:
    """Run every check over the host store at ``store_path`` and the branches' reports."""
    checks: dict[str, Check] = dict(check_store(store_path))
    journal = journal_index(store_path)
    checks["cash_by_branch"] = _cash_by_branch(reports, journal)
    checks["journal_matches_replies"] = _journal_matches_replies(reports, journal)
    checks["no_conflicting_answers"] = _no_conflicting_answers(reports)
    return Reconciliation(checks)


def _cash_by_branch(
    reports: Sequence[BranchReport], journal: Mapping[str, JournalSummary]
) -> Check:
    problems: list[str] = []
    for report in reports:
        expected = 0
        for outcome in report.outcomes:
            if outcome.result == "timeout":
                summary = journal.get(outcome.request_id)
                if summary is not None:
                    expected += sum(
                        -amount
                        for account, amount in summary.postings
                        if account == cash_account(report.branch_id)
                    )
            else:
                expected += outcome.cash_in - outcome.cash_out
        ledger = _cash_position(journal, report.branch_id)
        if ledger != expected:
            problems.append(f"branch {report.branch_id}: ledger {ledger} fen, replies {expected}")
    if problems:
        return Check(False, "; ".join(problems[:_EXAMPLES]))
    return Check(True, f"{len(reports)} branches' counter cash agrees with their replies")


def _cash_position(journal: Mapping[str, JournalSummary], branch_id: str) -> int:
    account = cash_account(branch_id)
    return -sum(
        amount
        for summary in journal.values()
        for posted, amount in summary.postings
        if posted == account
    )


def _journal_matches_replies(
    reports: Sequence[BranchReport], journal: Mapping[str, JournalSummary]
) -> Check:
    problems: list[str] = []
    answered = 0
    for report in reports:
        for outcome in report.outcomes:
            if outcome.result == "timeout":
                continue
            answered += 1
            summary = journal.get(outcome.request_id)
            if summary is None:
                problems.append(f"{outcome.request_id}: answered {outcome.result}, not journaled")
            elif summary.entries != 1:
                problems.append(f"{outcome.request_id}: {summary.entries} journal entries")
            elif summary.result != outcome.result:
                problems.append(
                    f"{outcome.request_id}: answered {outcome.result}, journal {summary.result}"
                )
            elif outcome.result != "00" and summary.postings:
                problems.append(f"{outcome.request_id}: declined but has postings")
            elif outcome.kind in _MOVING_KINDS and outcome.result == "00" and not summary.postings:
                problems.append(f"{outcome.request_id}: approved {outcome.kind} without postings")
    if problems:
        more = f" (+{len(problems) - _EXAMPLES} more)" if len(problems) > _EXAMPLES else ""
        return Check(False, "; ".join(problems[:_EXAMPLES]) + more)
    return Check(True, f"{answered} answered requests each have one matching journal entry")


def _no_conflicting_answers(reports: Sequence[BranchReport]) -> Check:
    results: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        for request_id, seen in report.results_seen.items():
            results[request_id].update(seen)
    conflicts = sorted(rid for rid, seen in results.items() if len(seen) > 1)
    if conflicts:
        return Check(False, f"{len(conflicts)} ids answered differently, e.g. {conflicts[0]}")
    return Check(True, f"{len(results)} request ids, each answered consistently")


def with_standby(reconciliation: Reconciliation, store_path: Path, standby: Path) -> Reconciliation:
    """``reconciliation`` plus ``standby_holds_journal``: the standby's store (under the data
    directory ``standby``) holds the same journal and balances as the host's, and verifies."""
    from common.identity import load_public
    from host_node.audit import audit_store
    from host_node.store import ledger_path

    standby_store = ledger_path(standby)
    problems: list[str] = []
    for query in (
        "SELECT seq, hash FROM journal ORDER BY seq",
        "SELECT number, balance FROM accounts ORDER BY number",
    ):
        if _rows(store_path, query) != _rows(standby_store, query):
            problems.append(f"differs from the host: {query.split()[-3]}")
    audit = audit_store(standby_store, load_public(standby, "host"))
    problems += [finding.problem for finding in audit.findings[:_EXAMPLES]]
    check = Check(
        not problems, "; ".join(problems) or f"the standby holds all {audit.entries} entries"
    )
    return Reconciliation({**reconciliation.checks, "standby_holds_journal": check})


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    from host_node.store import connect_read_only

    connection = connect_read_only(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()
