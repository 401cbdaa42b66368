"""Maker-checker end to end: a real ``branchnet host`` process over RabbitMQ verifies supervisor
authorisations, roles and permissioned customer queries, and nothing refused touches the ledger.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from branch_node import Branch, ClientConfig
from branch_node.session import BranchSession
from branchnet.buses import open_bus
from branchnet.network import ensure_keys
from branchnet.scenarios import CHEN
from common.authorisation import StaffKey
from common.bus import Delivery
from common.events import EventType, SecurityAlert, SecurityAlertKind, decode_events
from common.identity import identity_dir
from common.money import yuan
from common.topology import CORE, EVENTS_EXCHANGE, Binding, QueueSpec, Topology, host_topology
from host_node.query_trail import read_trail
from host_node.staff import auditor_id, supervisor_id
from host_node.store import ledger_path
from tests.branchnet.host_process import HostProcess
from tests.conftest import RabbitMQ

pytestmark = pytest.mark.rabbitmq
BRANCH = "0001"
ALERTS = Topology(
    queues=(QueueSpec("test.security-alerts", durable=False),),
    bindings=(Binding("test.security-alerts", EVENTS_EXCHANGE, "bank.events.*.security_alert"),),
)


def ledger_rows(data_dir: Path, account: str) -> tuple[int, list[int]]:
    """The account's stored balance and every posting to it, from the host's store."""
    with sqlite3.connect(ledger_path(data_dir)) as db:
        (balance,) = db.execute(
            "SELECT balance FROM accounts WHERE number = ?", (account,)
        ).fetchone()
        rows = db.execute(
            "SELECT amount FROM postings WHERE account = ? ORDER BY rowid", (account,)
        )
        postings = [amount for (amount,) in rows]
    return balance, postings


async def test_a_host_process_refuses_absent_forged_and_self_signed_authorisations(
    rabbitmq: RabbitMQ, amqp_url: str, tmp_path: Path
) -> None:
    url = await asyncio.to_thread(rabbitmq.new_vhost) or amqp_url
    data_dir = tmp_path / "data"
    ensure_keys(data_dir, [BRANCH], 1)
    for key_file in identity_dir(data_dir).glob("staff-*.key"):
        assert key_file.stat().st_mode & 0o777 == 0o600
    host = HostProcess(url, data_dir, tmp_path / "host.log")
    bus = open_bus(url, embedded=None, name=f"branch-{BRANCH}")
    watcher = open_bus(url, embedded=None, name="ops")
    alerts: list[SecurityAlert] = []

    async def collect(delivery: Delivery) -> None:
        alerts.extend(e for e in decode_events(delivery.body) if isinstance(e, SecurityAlert))
        await delivery.ack()

    host.start()
    try:
        await watcher.connect()
        await watcher.declare(CORE + host_topology([BRANCH]) + ALERTS)
        await watcher.consume("test.security-alerts", collect, prefetch=16)
        await bus.connect()
        branch = Branch(
            bus,
            BRANCH,
            data_dir=data_dir,
            terminals=1,
            client_config=ClientConfig(timeout_s=4.0, retries=8),
            session=BranchSession.load(data_dir, BRANCH),
        )
        await branch.start()
        desk = branch.desk("01")
        supervisor = StaffKey.load(data_dir, supervisor_id(BRANCH))
        account = desk.issue_card()
        opened = await desk.ask(  # a passbook account: no PIN, no crypto node needed
            "open_account",
            account=account,
            customer_name="陈某",
            id_document=CHEN,
            initial_deposit=yuan(10_000),
        )
        assert opened.result.value == "00"
        order = {"account": account, "amount": yuan(1_000), "authority_ref": "(2026)京0101执9号"}
        absent = await desk.ask("deduct", **order)
        forger = StaffKey(supervisor.staff_id, Ed25519PrivateKey.generate())
        forged = await desk.ask("deduct", supervisor=forger, **order)
        signed = desk.request("deduct", supervisor=supervisor, **order)
        altered = await desk.submit(signed.model_copy(update={"amount": yuan(9_000)}))
        retried = await desk.submit(signed)  # the same id with the signed content: 94
        own_desk = branch.desk("01", teller=supervisor.staff_id, role="supervisor")
        self_signed = await own_desk.ask("deduct", supervisor=supervisor, **order)
        claimed = await branch.desk("01", role="supervisor").ask("deduct", **order)
        refused = [absent, forged, altered, self_signed, claimed]
        assert [(r.result.value, r.rule) for r in refused] == [
            ("63", "supervisor_authorisation"),
            ("63", "authorisation_signature"),
            ("63", "authorisation_signature"),
            ("63", "authorisation_refused"),
            ("58", "staff_role"),
        ]
        assert retried.result.value == "94"
        assert ledger_rows(data_dir, account) == (yuan(10_000), [yuan(10_000)])

        approved = await desk.ask("deduct", supervisor=supervisor, **order)
        assert (approved.result.value, approved.balance) == ("00", yuan(9_000))
        assert "authorised by S000101" in approved.reason

        query = {"account": account, "purpose": "court enquiry (2026)京0101执9号"}
        asked_alone = await desk.ask("customer_query", **query)
        asked = await desk.ask("customer_query", supervisor=supervisor, **query)
        auditor = branch.desk("01", teller=auditor_id(BRANCH), role="auditor")
        auditor_key = StaffKey.load(data_dir, auditor_id(BRANCH))
        audited = await auditor.ask("customer_query", supervisor=auditor_key, **query)
        posing = await auditor.ask("customer_query", **query)  # unsigned: anyone could type it
        auditor_pays = await auditor.ask(
            "deposit", supervisor=auditor_key, account=account, amount=yuan(1)
        )
        assert [(r.result.value, r.balance) for r in (asked_alone, asked, audited)] == [
            ("63", None),
            ("00", yuan(9_000)),
            ("00", yuan(9_000)),
        ]
        assert (posing.result.value, posing.rule) == ("58", "staff_signature")
        assert (auditor_pays.result.value, auditor_pays.rule) == ("58", "role_permission")
        async with asyncio.timeout(20):
            while len(alerts) < 6:
                await asyncio.sleep(0.05)
        await branch.stop()
    finally:
        status = host.stop()
        for each in (bus, watcher):
            await each.close()
        if url != amqp_url:
            await asyncio.to_thread(rabbitmq.drop_vhost, url)
    assert status == 0, (tmp_path / "host.log").read_text()[-2000:]
    assert ledger_rows(data_dir, account) == (yuan(9_000), [yuan(10_000), -yuan(1_000)])
    by_request = {a.source: a.alert for a in alerts}
    assert by_request == {
        forged.request_id: SecurityAlertKind.BAD_SIGNATURE,
        altered.request_id: SecurityAlertKind.BAD_SIGNATURE,
        self_signed.request_id: SecurityAlertKind.PERMISSION_DENIED,
        claimed.request_id: SecurityAlertKind.PERMISSION_DENIED,
        posing.request_id: SecurityAlertKind.PERMISSION_DENIED,
        auditor_pays.request_id: SecurityAlertKind.PERMISSION_DENIED,
    }
    assert all(a.type is EventType.SECURITY_ALERT and a.branch == BRANCH for a in alerts)
    trail = read_trail(data_dir, staff_id=auditor_id(BRANCH), role="auditor")
    assert [(r.staff_id, r.role, r.result) for r in trail] == [
        ("T000101", "teller", "63"),
        ("T000101", "teller", "00"),
        ("A000101", "auditor", "00"),
        ("A000101", "auditor", "58"),
    ]
    log = (tmp_path / "host.log").read_bytes()
    assert (
        b"PRIVATE KEY" not in log and supervisor.key.private_bytes_raw().hex().encode() not in log
    )
