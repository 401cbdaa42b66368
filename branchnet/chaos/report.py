"""A chaos run's verdict and the JSON report of ``branchnet chaos``."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branch_node import BranchReport, Outcome
from branchnet.chaos.checker import classify
from branchnet.reconcile import reconcile
from host_node import journal_index

#: Reconciliation checks that together say money was conserved.
MONEY_CHECKS = (
    "postings_balanced",
    "balances_match_postings",
    "customers_match_cash",
    "cash_by_branch",
)


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a scenario observed besides the requests: faults injected, recovery times."""

    faults: Mapping[str, int] = field(default_factory=dict)
    recovery_s: Sequence[float] = ()
    drained: bool = True
    notes: Sequence[str] = ()
    #: The store to check when it is not the data directory's (after a failover).
    store: Path | None = None
    #: A scenario's own observations, reported as they are.
    observed: Mapping[str, Any] = field(default_factory=dict)
    #: A scenario's own checks by name; every one must hold for the run to pass.
    checks: Mapping[str, bool] = field(default_factory=dict)


def with_outcomes(reports: Sequence[BranchReport], extra: Sequence[Outcome]) -> list[BranchReport]:
    """``reports`` with ``extra`` outcomes (requests an injector sent for a branch) added to
    their branch's report, so that the checker and the cash reconciliation see them."""
    by_branch: dict[str, list[Outcome]] = {}
    for outcome in extra:
        by_branch.setdefault(outcome.request_id[:4], []).append(outcome)
    return [
        dataclasses.replace(r, outcomes=(*r.outcomes, *by_branch.get(r.branch_id, ())))
        for r in reports
    ]


def chaos_report(
    scenario: str, seed: int, store_path: Path, reports: Sequence[BranchReport], facts: RunFacts
) -> dict[str, Any]:
    """Check every request and the ledger; ``passed`` when nothing is lost, duplicated or
    unresolved, money is conserved, the chain verifies and the scenario's own checks hold."""
    store_path = facts.store or store_path
    outcomes = [o for report in reports for o in report.outcomes]
    verdict = classify(outcomes, journal_index(store_path), drained=facts.drained)
    reconciliation = reconcile(store_path, reports)
    checks = reconciliation.checks
    money = all(checks[name].ok for name in MONEY_CHECKS if name in checks)
    chain = checks["hash_chain"].ok if "hash_chain" in checks else False
    return {
        "scenario": scenario,
        "seed": seed,
        "requests": len(outcomes),
        "by_result": dict(sorted(Counter(o.result for o in outcomes).items())),
        **verdict.counts,
        "examples": verdict.examples,
        "money_conserved": money,
        "chain_verified": chain,
        "recovery_s": [round(s, 3) for s in facts.recovery_s],
        "faults": dict(facts.faults),
        "notes": list(facts.notes),
        "observed": dict(facts.observed),
        "checks": dict(facts.checks),
        "reconciliation": reconciliation.as_json(),
        "passed": verdict.passed and money and chain and all(facts.checks.values()),
    }
