"""``branchnet simulate --standby``: the standby ends up holding the host's journal and books."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from branchnet.network import standby_dir
from branchnet.simulate import SimulationConfig, simulate
from host_node.store import ledger_path


async def test_a_simulation_with_a_standby_reconciles_and_the_standby_matches(
    tmp_path: Path,
) -> None:
    config = SimulationConfig(
        branches=2, terminals=3, duration_s=60, max_requests=300, data_dir=tmp_path, standby=True
    )
    report = await simulate(config)
    reconciliation = report["reconciliation"]
    assert reconciliation["ok"], reconciliation
    assert reconciliation["checks"]["standby_holds_journal"]["ok"]
    assert report["requests"] >= 300 and report["standby"] is True

    def balances(path: Path) -> list[tuple[str, int]]:
        connection = sqlite3.connect(path)
        try:
            return connection.execute("SELECT number, balance FROM accounts ORDER BY 1").fetchall()
        finally:
            connection.close()

    held = balances(ledger_path(standby_dir(tmp_path)))
    assert held == balances(ledger_path(tmp_path)) and len(held) > 10
