"""The audit trail of customer queries, written by the host and read by auditors only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from branchnet.cli import _parser
from common.settings import load_settings
from host_node import HostService
from host_node.query_trail import AuditDenied, audit_path, read_trail
from tests.host_node.fakes import BranchDesk, Teller
from tests.host_node.test_service import (  # noqa: F401 - fixtures
    A,
    B,
    codes,
    desk,
    host,
    keys_dir,
    open_accounts,
    teller,
)


def audit_command(staff_id: str, role: str, data_dir: Path) -> int:
    """``branchnet audit`` as parsed by the CLI (without ``main``'s logging set-up)."""
    args = _parser().parse_args(["audit", "--staff-id", staff_id, "--role", role])
    return int(args.run(args, load_settings(data_dir=data_dir)))


async def test_every_customer_query_leaves_one_trace_and_only_auditors_read_them(
    crypto: object,
    host: HostService,  # noqa: F811
    desk: BranchDesk,  # noqa: F811
    teller: Teller,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await open_accounts(desk, teller)
    query_a, query_b = teller.customer_query(A), teller.customer_query(B)
    replies = await desk.ask([query_a, query_b, teller.deposit(A, 100)])
    await desk.ask([query_a])  # a retry: answered again, recorded once
    assert codes(replies)[2] == "00"
    trail = read_trail(tmp_path, staff_id="AUD1", role="auditor")
    assert [(r.request_id, r.customer, r.purpose) for r in trail] == [
        (query_a.request_id, A, "statement"),
        (query_b.request_id, B, "statement"),
    ]
    assert {(r.staff_id, r.role, r.branch_id, r.terminal_id) for r in trail} == {
        (query_a.teller_id, "teller", "0001", "01")
    }
    assert [r.result for r in trail] == codes(replies)[:2]
    assert read_trail(tmp_path, staff_id="AUD1", role="auditor", customer=B) == trail[1:]
    with pytest.raises(AuditDenied, match="only auditors"):
        read_trail(tmp_path, staff_id=query_a.teller_id, role="teller")
    assert audit_command("T1", "teller", tmp_path) == 4
    assert "refused" in capsys.readouterr().out
    assert audit_command("AUD1", "auditor", tmp_path) == 0
    out = capsys.readouterr().out
    assert A in out and "statement" in out and "2 queries" in out
    with sqlite3.connect(audit_path(tmp_path)) as connection:
        reads = connection.execute("SELECT staff_id, role, granted FROM audit_reads").fetchall()
    assert reads == [
        ("AUD1", "auditor", 1),
        ("AUD1", "auditor", 1),
        (query_a.teller_id, "teller", 0),
        ("T1", "teller", 0),
        ("AUD1", "auditor", 1),
    ]
