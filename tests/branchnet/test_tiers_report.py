"""The quarterly tier indicators over a store a real network wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from branchnet.scenario_runner import Scenario, Script, run_scenario
from branchnet.scenarios import PIN, resident
from branchnet.tiers_report import read_report
from common.money import yuan
from common.results import ResultCode
from host_node import ledger_path
from tests.branchnet.cli_run import run_cli

OK = ResultCode.APPROVED


async def two_quarters(script: Script) -> None:
    """Q1: X 60k, Y 120k + 5k, Z 10k. Q2: X falls to 40k, Z rises to 210k, V opens with 1k."""
    cards: dict[str, str] = {}
    for who, order, deposit in (("X", 1, 60_000), ("Y", 2, 120_000), ("Y2", 2, 5_000),
                                ("Z", 3, 10_000)):  # fmt: skip
        cards[who] = script.card()
        await script.step(f"open {who}", "open_account", expect=OK, pin=PIN, account=cards[who],
                          customer_name=who, id_document=resident(order),
                          initial_deposit=yuan(deposit))  # fmt: skip
    script.next_day(30)  # into April: the second quarter
    await script.step("X withdraws", "withdraw", expect=OK, pin=PIN, account=cards["X"],
                      amount=yuan(20_000))  # fmt: skip
    await script.step("Z deposits", "deposit", expect=OK, account=cards["Z"], amount=yuan(200_000))
    await script.step("V opens", "open_account", expect=OK, pin=PIN, account=script.card(),
                      customer_name="V", id_document=resident(4),
                      initial_deposit=yuan(1_000))  # fmt: skip


async def test_the_five_indicators_of_a_quarter(tmp_path: Path) -> None:
    scenario = Scenario("two-quarters", "", two_quarters)
    assert (await run_scenario(scenario, data_dir=tmp_path))["ok"]
    (q1, q2) = read_report(ledger_path(tmp_path))["0001"]
    assert (q1["quarter"], q1["customers_end"], q1["assets_end"]) == ("2002Q1", 3, yuan(195_000))
    assert q1["coverage"] == pytest.approx(1 / 3, abs=1e-4)
    assert q2["quarter"] == "2002Q2"
    assert (q2["customers_start"], q2["customers_end"]) == (3, 4)
    assert q2["churn"] == 0.5  # X fell from "branch" to "base"; Y kept "director"
    assert q2["upgrade"] == pytest.approx(1 / 3, abs=1e-4)  # Z: base -> wealth
    assert q2["coverage"] == 0.25  # Y holds money in two accounts
    assert q2["customer_growth"] == pytest.approx(1 / 3, abs=1e-4)
    assert q2["asset_growth"] == pytest.approx((376_000 - 195_000) / 195_000, abs=1e-4)
    assert q2["tiers_end"] == {"base": 2, "director": 1, "wealth": 1}


def test_the_cli_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Exception, match="no store"):
        read_report(ledger_path(tmp_path))
    assert run_cli("simulate", "--scenario", "agent-withdrawal", "--quiet", "--json-report",
                 str(tmp_path / "r.json")) == 0  # fmt: skip
    data_dir = json.loads((tmp_path / "r.json").read_text())["data_dir"]
    assert run_cli("tiers", "report", "--data-dir", data_dir, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["0001"][0]["customers_end"] == 1


async def test_the_host_calls_its_tier_hook_after_the_batch(tmp_path: Path) -> None:
    from branchnet.network import Network, NetworkConfig
    from host_node.tiers import TierChange

    changes: list[TierChange] = []
    async with Network(NetworkConfig(tmp_path, ("0001",), terminals=1)) as network:
        assert network.host is not None
        network.host.on_tier_change = changes.append
        desk = network.branches[0].desk("01")
        account = desk.issue_card()
        opened = await desk.ask(
            "open_account", pin=PIN, account=account, customer_name="X",
            id_document=resident(1), initial_deposit=yuan(250_000),
        )  # fmt: skip
        assert opened.approved
        paid = await desk.ask("withdraw", pin=PIN, account=account, amount=yuan(150_000),
                              withdrawer=resident(1))  # fmt: skip
        assert paid.approved and paid.balance == yuan(100_000)
    assert [(c.old, c.new, c.upgrade) for c in changes] == [
        ("base", "wealth", True),
        ("wealth", "director", False),
    ]
    assert all(resident(1).number not in c.as_event("host").model_dump_json() for c in changes)
