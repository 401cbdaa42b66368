"""Fault injection: the checker's classes, the faulty bus, and every scenario in short form."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import urllib.parse
from pathlib import Path

import pytest

from branch_node import Outcome
from branchnet.broker import start_broker, stop_broker
from branchnet.chaos.checker import classify
from branchnet.chaos.faults import FaultPlan, FaultyBus
from branchnet.chaos.scenarios import SCENARIOS, ChaosConfig, run_scenario
from common.amqp_bus import AmqpBus
from common.bus import Delivery, Message
from common.embedded_bus import EmbeddedBroker
from common.errors import BusError
from common.results import ResultCode
from common.topology import CORE, CRYPTO_COMMANDS, DEFAULT_EXCHANGE
from host_node import JournalSummary
from tests.conftest import RabbitMQ


def _outcome(request_id: str, result: str) -> Outcome:
    return Outcome(
        request_id=request_id,
        kind="deposit",
        result=result,
        amount=100,
        cash_in=100 if result == "00" else 0,
        cash_out=0,
        account="6200010100000011",
        latency_s=0.01,
        sent_at=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
        expected="00",
    )


def _journaled(request_id: str, result: str, entries: int = 1) -> JournalSummary:
    return JournalSummary(
        request_id=request_id,
        result=ResultCode(result),
        kind="deposit",
        entries=entries,
        postings=(),
        cash_in={},
        cash_out={},
    )


def test_the_checker_sorts_every_request_into_its_class() -> None:
    outcomes = [
        _outcome("0001-01-0000000001", "00"),  # ok
        _outcome("0001-01-0000000002", "00"),  # lost: not journaled
        _outcome("0001-01-0000000003", "00"),  # lost: journaled as a decline
        _outcome("0001-01-0000000004", "00"),  # duplicated
        _outcome("0001-01-0000000005", "timeout"),  # unknown, journaled
        _outcome("0001-01-0000000006", "timeout"),  # unknown, not journaled
    ]
    journal = {
        "0001-01-0000000001": _journaled("0001-01-0000000001", "00"),
        "0001-01-0000000003": _journaled("0001-01-0000000003", "51"),
        "0001-01-0000000004": _journaled("0001-01-0000000004", "00", entries=2),
        "0001-01-0000000005": _journaled("0001-01-0000000005", "00"),
    }
    drained = classify(outcomes, journal, drained=True)
    assert drained.counts == {
        "ok": 1,
        "lost": 2,
        "duplicated": 1,
        "unknown_resolved": 2,
        "unknown_unresolved": 0,
    }
    assert drained.examples["lost"] == ["0001-01-0000000002", "0001-01-0000000003"]
    assert not drained.passed
    in_flight = classify(outcomes[4:], journal, drained=False)
    assert in_flight.counts["unknown_unresolved"] == 1 and not in_flight.passed
    assert classify(outcomes[:1], journal, drained=True).passed


async def test_the_faulty_bus_duplicates_and_reorders_but_loses_nothing() -> None:
    broker = EmbeddedBroker()
    bus = FaultyBus(broker.connect(), FaultPlan(0.5, 0.5, 0.02), random.Random(3))
    await bus.connect()
    await bus.declare(CORE)
    bodies = [str(n).encode() for n in range(200)]
    await bus.publish([Message(DEFAULT_EXCHANGE, CRYPTO_COMMANDS, b) for b in bodies])
    seen: list[bytes] = []

    async def collect(delivery: Delivery) -> None:
        seen.append(delivery.body)
        await delivery.ack()

    await bus.consume(CRYPTO_COMMANDS, collect, prefetch=50)
    await bus.close()  # held-back messages arrive before the connection closes
    await asyncio.sleep(0.05)
    assert set(seen) == set(bodies)
    assert len(seen) == 200 + bus.duplicated and bus.duplicated > 50
    assert seen != sorted(seen, key=lambda b: int(b)) and bus.delayed > 50


def _assert_passed(report: dict[str, object]) -> None:
    shown = {k: v for k, v in report.items() if k != "reconciliation"}
    assert report["passed"], json.dumps(shown)
    assert report["lost"] == report["duplicated"] == report["unknown_unresolved"] == 0, shown
    assert report["money_conserved"] and report["chain_verified"], shown
    assert isinstance(report["ok"], int) and report["ok"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_the_deterministic_simulation_holds_for_many_seeds(tmp_path: Path, seed: int) -> None:
    config = ChaosConfig(data_dir=tmp_path, duration_s=3.0, seed=seed)
    report = await run_scenario("deterministic", config)
    _assert_passed(report)
    faults = report["faults"]
    assert isinstance(faults, dict)
    assert faults.get("host_crash", 0) + faults.get("crypto_crash", 0) >= 1
    assert faults["duplicated_deliveries"] > 0 and faults["delayed_deliveries"] > 0


@pytest.mark.slow
@pytest.mark.rabbitmq
@pytest.mark.parametrize("name", ["host-kill", "crypto-kill", "connection-drop"])
async def test_process_scenarios_lose_nothing(
    tmp_path: Path, fresh_amqp_url: str, rabbitmq: RabbitMQ, name: str
) -> None:
    if SCENARIOS[name].needs_management and rabbitmq.management_url is None:
        pytest.fail("connection-drop needs the management API of the test broker")
    config = ChaosConfig(
        data_dir=tmp_path,
        duration_s=8.0,
        amqp_url=fresh_amqp_url,
        management_url=rabbitmq.management_url,
    )
    report = await run_scenario(name, config)
    _assert_passed(report)
    faults = report["faults"]
    assert isinstance(faults, dict) and sum(faults.values()) >= 1
    by_result = report["by_result"]
    assert isinstance(by_result, dict)
    if name == "crypto-kill":  # PIN requests were answered 91, not left hanging
        assert by_result.get("91", 0) > 0 and by_result.get("timeout", 0) == 0


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_broker_restart_loses_nothing(tmp_path: Path, rabbitmq: RabbitMQ) -> None:
    if rabbitmq.node is None:
        pytest.fail("broker-restart needs a private node of its own; unset BRANCHNET_AMQP_URL")
    broker_dir = tmp_path / "broker"
    info = await asyncio.to_thread(start_broker, broker_dir)
    try:
        config = ChaosConfig(
            data_dir=tmp_path / "data",
            duration_s=10.0,
            amqp_url=info.amqp_url,
            management_url=info.management_url,
            broker_dir=broker_dir,
        )
        report = await run_scenario("broker-restart", config)
    finally:
        await asyncio.to_thread(stop_broker, broker_dir)
    _assert_passed(report)
    assert report["faults"] == {"broker_restart": 1}


def _checks(report: dict[str, object], *names: str) -> None:
    """Each named check of the scenario ran and held (absent checks fail, not pass)."""
    checks = report["checks"]
    assert isinstance(checks, dict)
    assert {name: checks.get(name) for name in names} == dict.fromkeys(names, True), checks


@pytest.mark.slow
@pytest.mark.rabbitmq
@pytest.mark.parametrize("policy", ["stop", "async"])
async def test_a_killed_standby_keeps_its_policy_and_catches_up(
    tmp_path: Path, fresh_amqp_url: str, policy: str
) -> None:
    config = ChaosConfig(
        data_dir=tmp_path,
        duration_s=8.0,
        amqp_url=fresh_amqp_url,
        standby_lost=policy,  # type: ignore[arg-type]
    )
    report = await run_scenario("standby-kill", config)
    _assert_passed(report)
    standby = report["observed"]["standby"]
    assert isinstance(standby, dict) and standby["policy"] == f"standby-lost={policy}"
    assert report["faults"] == {"standby_kill": standby["outages"]} and standby["outages"] >= 1
    assert len(standby["catch_up_s"]) == standby["outages"]
    assert standby["standby_head"] == standby["primary_head"] == report["ok"]
    _checks(report, "standby_caught_up", "standby_head_equals_primary", "standby_chain_verifies")
    if policy == "stop":  # never an approval the standby did not hold
        _checks(report, "no_approval_without_standby")
        assert standby["approvals_beyond_standby"] == 0
    else:  # answers went on without the standby, with the alert
        _checks(report, "primary_kept_answering", "primary_reported_lag")


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_failover_under_load_loses_no_approved_answer(
    tmp_path: Path, fresh_amqp_url: str
) -> None:
    config = ChaosConfig(data_dir=tmp_path, duration_s=8.0, amqp_url=fresh_amqp_url)
    report = await run_scenario("failover", config)
    _assert_passed(report)  # checked against the new primary's journal
    _checks(report, "standby_promoted", "old_primary_refused", "rpo_zero", "new_primary_approved")
    figures = report["observed"]["failover"]
    assert isinstance(figures, dict) and figures["rpo_approved_answers_lost"] == 0
    assert figures["journal_entries_new_primary"] >= report["ok"]
    assert report["faults"] == {"primary_kill": 1}


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_store_damaged_at_rest_is_refused(tmp_path: Path, fresh_amqp_url: str) -> None:
    config = ChaosConfig(data_dir=tmp_path, duration_s=5.0, amqp_url=fresh_amqp_url)
    report = await run_scenario("journal-corruption", config)
    _assert_passed(report)  # the intact store, put back, holds every answer
    kinds = ("torn-wal-tail", "bit-flip", "torn-store-tail")
    _checks(report, "intact_store_starts", *(f"{kind}_refused" for kind in kinds))
    found = report["observed"]["corruption"]
    assert isinstance(found, dict)
    for kind in kinds:
        result = found[kind]
        assert result["applied"] and result["detected"] and result["exit_code"] == 1, result
        if result["first_bad_entry"] is not None:  # the host named the entry the damage hit
            assert result["named_entry"] == result["first_bad_entry"], result
    assert found["bit-flip"]["damaged_store"]["chain_verifies"] is False
    assert found["torn-store-tail"]["named_entry"] is not None  # the first it cannot read


def _mqtt_url_for(rabbitmq: RabbitMQ, amqp_url: str) -> str:
    if rabbitmq.node is None or rabbitmq.management_url is None:
        pytest.fail("slow-dashboard needs the MQTT listener and management API of our own node")
    return rabbitmq.node.mqtt_url_for(
        urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path[1:])
    )


@pytest.mark.slow
@pytest.mark.rabbitmq
@pytest.mark.parametrize("name", ["poison-message", "deadline", "slow-dashboard", "overload"])
async def test_message_and_load_scenarios_lose_nothing(
    tmp_path: Path, fresh_amqp_url: str, rabbitmq: RabbitMQ, name: str
) -> None:
    config = ChaosConfig(
        data_dir=tmp_path,
        duration_s=8.0,
        amqp_url=fresh_amqp_url,
        management_url=rabbitmq.management_url,
        mqtt_url=_mqtt_url_for(rabbitmq, fresh_amqp_url) if name == "slow-dashboard" else None,
    )
    report = await run_scenario(name, config)
    _assert_passed(report)
    observed, checks = report["observed"], report["checks"]
    assert isinstance(observed, dict) and isinstance(checks, dict) and checks
    assert all(checks.values()), checks
    by_result = report["by_result"]
    assert isinstance(by_result, dict)
    if name == "poison-message":
        sent = observed["poisons_sent"]
        assert observed["dead_lettered"] == sum(sent.values()) > 0
        assert set(sent) == set(observed["reasons"]) and len(sent) == 6
        assert observed["reasons"]["small_order_key_hello"] == {
            "malformed": sent["small_order_key_hello"]
        }
        assert by_result.get("14") == 1  # the probe after the poison: the host still answers
    elif name == "deadline":
        assert observed["declined_68"] > 0 and by_result.get("timeout", 0) > 0
        assert report["unknown_resolved"] == by_result["timeout"]
    elif name == "slow-dashboard":
        assert by_result.get("timeout", 0) == 0
        assert observed["dashboard_queue_max"] == observed["dashboard_queue_bound"]
        assert observed["host_events_buffered"] is not None and observed["host_rss"]["max_mb"] > 0
        async with AmqpBus(fresh_amqp_url) as bus:  # its stats queue went with it
            with pytest.raises(BusError):
                await bus.queue_stats("chaos.host-stats")
    else:
        assert observed["max_rate_rps"] > 0
        assert observed["offered_rate_rps"] == pytest.approx(2 * observed["max_rate_rps"], abs=0.2)
        assert observed["host_rss"]["samples"] > 0
