"""Failover pieces shared by the failover test and the chaos scenarios: set up a standby,
promote a running one, and measure what a failover cost (RPO and RTO).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from branch_node import Outcome
from common.identity import ensure_identity, identity_dir
from host_node.checkpoint import SIGNER
from host_node.store import chain_head, connect_read_only, ledger_path

#: How long ``branchnet host promote`` may take on a busy machine.
PROMOTE_TIMEOUT_S = 120.0


def prepare_standby(primary_dir: Path, standby_dir: Path) -> None:
    """Give the standby at ``standby_dir`` its copy of the host identity (made if missing)."""
    ensure_identity(primary_dir, SIGNER)
    target = identity_dir(standby_dir)
    if not target.exists():
        # staff private keys stay with their owners: a promoted host needs only the .pub
        shutil.copytree(
            identity_dir(primary_dir), target, ignore=shutil.ignore_patterns("staff-*.key")
        )


def journal_head(data_dir: Path) -> int:
    """The last journal entry's number in the store under ``data_dir`` (0: empty)."""
    connection = connect_read_only(ledger_path(data_dir))
    try:
        return chain_head(connection).seq
    finally:
        connection.close()


def journal_hashes(data_dir: Path) -> dict[int, str]:
    """Every entry's hash by number."""
    connection = connect_read_only(ledger_path(data_dir))
    try:
        return dict(connection.execute("SELECT seq, hash FROM journal"))
    finally:
        connection.close()


def journal_seqs(data_dir: Path) -> dict[str, int]:
    """The (last) entry number of each request id in the journal."""
    connection = connect_read_only(ledger_path(data_dir))
    try:
        return dict(connection.execute("SELECT request_id, MAX(seq) FROM journal GROUP BY 1"))
    finally:
        connection.close()


def promote(amqp_url: str, standby_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``branchnet host promote`` on ``standby_dir`` (a running standby promotes itself
    in place and serves as the primary)."""
    command = [sys.executable, "-m", "branchnet.cli", "host", "promote"]
    command += ["--amqp-url", amqp_url, "--data-dir", str(standby_dir)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=PROMOTE_TIMEOUT_S, check=False
    )


def received_at(outcome: Outcome) -> dt.datetime:
    """When the terminal got its answer."""
    return outcome.sent_at + dt.timedelta(seconds=outcome.latency_s)


def failover_figures(
    outcomes: Iterable[Outcome],
    old_primary: Path,
    new_primary: Path,
    killed_at: dt.datetime,
    promoted_at: dt.datetime,
) -> dict[str, Any]:
    """RPO and RTO of one failover from the two stores and what the terminals saw.

    The new primary's own entries are those after the first entry number at which its journal
    and the old primary's part (the standby held a prefix of the old journal). RTO runs from
    the kill to the first approval the terminals got for one of those entries.
    """
    seen = list(outcomes)
    approved = [o for o in seen if o.result == "00"]
    new_seqs = journal_seqs(new_primary)
    old_hashes, new_hashes = journal_hashes(old_primary), journal_hashes(new_primary)
    first_own = next(
        (s for s in sorted(new_hashes) if old_hashes.get(s) != new_hashes[s]),
        max(new_hashes, default=0) + 1,
    )
    by_new = [received_at(o) for o in approved if new_seqs.get(o.request_id, 0) >= first_own]
    return {
        "rpo_approved_answers_lost": sum(o.request_id not in new_seqs for o in approved),
        "entries_primary_had_standby_lacked": max(0, max(old_hashes, default=0) - first_own + 1),
        "rto_s": round((min(by_new) - killed_at).total_seconds(), 2) if by_new else None,
        "promoted_s": round((promoted_at - killed_at).total_seconds(), 2),
        "answered": sum(o.result != "timeout" for o in seen),
        "approved": len(approved),
        "journal_entries_new_primary": max(new_hashes, default=0),
    }
