"""The scenario library through a real network: every rule shows its expected outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from branchnet.scenario_runner import Scenario, Script, run_scenario
from branchnet.scenarios import PIN, SCENARIOS, chen_case, resident
from common.money import yuan
from common.results import ResultCode
from host_node import ledger_path
from host_node.store import connect_read_only, journal_entries
from tests.branchnet.cli_run import run_cli


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in ("chen-case", "interest")])
async def test_each_scenario_meets_its_expectations(name: str, tmp_path: Path) -> None:
    report = await run_scenario(SCENARIOS[name], data_dir=tmp_path)
    assert report["ok"], [s for s in report["steps"] if not s["ok"]] or report
    assert report["reconciliation"]["ok"]
    assert len(report["steps"]) >= 4
    declined = [s for s in report["steps"] if s["result"] != "00"]
    assert declined and all(s["rule"] for s in declined)


async def test_a_simulated_year_of_interest_is_posted_quarterly(tmp_path: Path) -> None:
    report = await run_scenario(SCENARIOS["interest"], data_dir=tmp_path)
    assert report["ok"], report
    connection = connect_read_only(ledger_path(tmp_path))
    try:
        posted = [e for e in journal_entries(connection) if e.kind == "interest"]
    finally:
        connection.close()
    days = [e.request_id.split("-", 1)[1].rsplit("-", 1)[0] for e in posted]
    assert days == ["2002-03-20", "2002-06-20", "2002-09-20", "2002-12-20"]
    assert all(e.postings[0].account == "INTEREST-0001" and e.rule == "interest" for e in posted)
    assert "interest paid" in report["reconciliation"]["checks"]["customers_match_cash"]["detail"]


@pytest.mark.rabbitmq
async def test_the_chen_case_over_rabbitmq_refuses_both_withdrawals(
    tmp_path: Path, amqp_url: str
) -> None:
    report = await run_scenario(SCENARIOS["chen-case"], amqp_url=amqp_url, data_dir=tmp_path)
    assert report["ok"] and report["bus"] == "amqp"
    withdrawals = [s for s in report["steps"] if s["kind"] == "withdraw"]
    assert [(s["result"], s["rule"]) for s in withdrawals] == [
        ("77", "large_cash_identity"),
        ("77", "large_cash_identity"),
    ]
    assert [s["day"] for s in withdrawals] == ["2002-03-16", "2002-03-18"]
    for step in withdrawals:  # the journal shows which documents were checked, masked
        assert [i.split(" ")[0] for i in step["identities"]] == ["withdrawer", "holder"]
        assert all("*" in i for i in step["identities"])
        assert resident(202, "19750808", "310101").number not in json.dumps(report)
    assert report["steps"][-1]["balance"] == yuan(600_000)


async def test_a_scenario_whose_expectation_is_not_met_fails(tmp_path: Path) -> None:
    async def expects_the_wrong_thing(script: Script) -> None:
        await chen_case(script)
        account = script.steps[0]
        assert account.kind == "open_account"
        await script.step(
            "a small withdrawal expected to be refused",
            "balance",
            expect=ResultCode.IDENTITY_CHECK_FAILED,
            pin=PIN,
            account=script.desk.issue_card(),  # never opened: 14
        )

    report = await run_scenario(Scenario("wrong", "", expects_the_wrong_thing), data_dir=tmp_path)
    assert not report["ok"]
    assert report["failures"] == ["a small withdrawal expected to be refused"]
    assert report["steps"][-1]["result"] == "14"


def test_simulate_scenario_writes_the_report_and_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "chen.json"
    assert (
        run_cli("simulate", "--scenario", "chen-case", "--json-report", str(path), "--quiet") == 0
    )
    report = json.loads(path.read_text())
    assert report["scenario"] == "chen-case" and report["ok"]
    assert set(report["stopped_by"].values()) == {"large_cash_identity"}


def test_an_unknown_scenario_is_an_error() -> None:
    with pytest.raises(SystemExit, match="unknown scenario"):
        run_cli("scenarios", "run", "no-such-thing", "--quiet")
