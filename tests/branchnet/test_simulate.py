"""Whole-network simulations on both buses: they must reconcile."""

from __future__ import annotations

from pathlib import Path

import pytest

from branchnet.simulate import SimulationConfig, simulate


def _assert_reconciled(report: dict[str, object], at_least: int) -> None:
    reconciliation = report["reconciliation"]
    assert isinstance(reconciliation, dict)
    failed = {k: v for k, v in reconciliation["checks"].items() if not v["ok"]}
    assert reconciliation["ok"], failed
    assert report["requests"] >= at_least
    assert report["timeouts"] == 0
    by_result = report["by_result"]
    assert isinstance(by_result, dict)
    # the workload includes wrong PINs and overdrafts: the declines must really happen
    assert by_result.get("00", 0) > at_least // 2
    assert by_result.get("55", 0) > 0 and by_result.get("51", 0) > 0


@pytest.mark.slow
async def test_a_simulation_on_the_embedded_bus_reconciles(tmp_path: Path) -> None:
    config = SimulationConfig(
        branches=3, terminals=4, duration_s=120, max_requests=2000, data_dir=tmp_path
    )
    report = await simulate(config)
    _assert_reconciled(report, 2000)
    assert report["bus"] == "embedded"
    assert (tmp_path / "host" / "ledger.sqlite").exists()


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_simulation_over_rabbitmq_reconciles(tmp_path: Path, amqp_url: str) -> None:
    config = SimulationConfig(
        branches=3,
        terminals=4,
        duration_s=120,
        max_requests=2000,
        data_dir=tmp_path,
        amqp_url=amqp_url,
    )
    report = await simulate(config)
    _assert_reconciled(report, 2000)
    assert report["bus"] == "amqp"
