"""Failover under load in sync mode: kill -9 the primary, promote the standby, carry on.

Real processes over the test RabbitMQ: a primary (``--replicate sync``) and a standby
(``--role standby``), with a branch and the crypto node in this test. The primary is killed
with SIGKILL mid-load; ``branchnet host promote`` makes the running standby promote itself
and serve as the new primary on its own store. The branch never stops. Every answer it saw
must be in the new primary's journal; the books must agree; the old primary, restarted,
must refuse to process. RPO (approved answers missing from the new journal) and RTO (kill to
first approved reply from the new primary) are printed and written to ``failover.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from branch_node import Branch, ClientConfig
from branch_node.session import BranchSession
from branchnet.buses import open_bus
from branchnet.failover import failover_figures, prepare_standby, promote
from branchnet.network import ensure_keys
from branchnet.reconcile import reconcile
from common.identity import load_public
from common.topology import CORE, host_topology
from crypto_node import CryptoService, Hsm, load_crypto_keys
from host_node import journal_index
from host_node.audit import audit_store
from host_node.checkpoint import SIGNER
from host_node.store import ledger_path
from tests.branchnet.host_process import HostProcess
from tests.conftest import RabbitMQ

BRANCH = "0001"
REQUESTS = int(os.environ.get("BRANCHNET_FAILOVER_REQUESTS", "500"))


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_failover_in_sync_mode_loses_no_approved_transaction(
    rabbitmq: RabbitMQ, amqp_url: str, tmp_path: Path
) -> None:
    url = await asyncio.to_thread(rabbitmq.new_vhost) or amqp_url
    primary_dir, standby_dir = tmp_path / "primary", tmp_path / "standby"
    ensure_keys(primary_dir, [BRANCH], 8)
    prepare_standby(primary_dir, standby_dir)
    crypto_bus = open_bus(url, embedded=None, name="crypto")
    await crypto_bus.connect()
    await crypto_bus.declare(CORE + host_topology([BRANCH]))
    crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(primary_dir)))
    await crypto.start()
    log = tmp_path / "hosts.log"
    standby = HostProcess(url, standby_dir, log, "--role", "standby")
    primary = HostProcess(url, primary_dir, log, "--replicate", "sync", "--standby-lost", "stop")
    branch_bus = open_bus(url, embedded=None, name=f"branch-{BRANCH}")
    rng = random.Random(5)
    try:
        standby.start()
        primary.start()
        await branch_bus.connect()
        branch = Branch(
            branch_bus,
            BRANCH,
            data_dir=primary_dir,
            terminals=8,
            seed=11,
            client_config=ClientConfig(timeout_s=4.0, retries=10),
            session=BranchSession.load(primary_dir, BRANCH),
        )
        await branch.start()
        run = asyncio.create_task(branch.run(600, max_requests=REQUESTS))
        while branch.statistics().answered < REQUESTS // 5:
            await asyncio.sleep(0.1)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        killed_at = dt.datetime.now(dt.UTC)
        primary.kill()
        # `host promote` signals the running standby: it applies what it holds, takes the
        # next epoch, announces it and serves as the primary in the same process.
        promotion = await asyncio.to_thread(promote, url, standby_dir)
        assert promotion.returncode == 0, promotion.stderr[-2000:]
        assert "promoted in place" in promotion.stdout
        promoted_at = dt.datetime.now(dt.UTC)
        report = await run
        await branch.stop()

        # the old primary comes back: it must see the higher epoch and refuse
        returning = await asyncio.to_thread(
            subprocess.run,
            primary.command,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        refusal = " ".join(returning.stderr.split())
        assert returning.returncode != 0 and "refuses to process" in refusal
        assert standby.stop() == 0, log.read_text()[-2000:]
    finally:
        for process in (primary, standby):
            process.kill()
        await crypto.stop()
        await branch_bus.close()
        await crypto_bus.close()
        if url != amqp_url:
            await asyncio.to_thread(rabbitmq.drop_vhost, url)

    new_store = ledger_path(standby_dir)
    journal = journal_index(new_store)
    approved = [o.request_id for o in report.outcomes if o.result == "00"]
    lost = [request_id for request_id in approved if request_id not in journal]
    figures = failover_figures(report.outcomes, primary_dir, standby_dir, killed_at, promoted_at)
    (tmp_path / "failover.json").write_text(json.dumps(figures, indent=2))
    print(f"\nfailover figures: {json.dumps(figures)}")

    assert lost == []  # RPO 0: every approval the branch saw survived the site loss
    assert figures["rpo_approved_answers_lost"] == 0
    assert figures["rto_s"] is not None, "the new primary approved nothing"
    assert all(o.result != "timeout" for o in report.outcomes)
    reconciliation = reconcile(new_store, [report])
    failed = {n: c.detail for n, c in reconciliation.checks.items() if not c.ok}
    assert reconciliation.ok, failed
    audit = audit_store(new_store, load_public(standby_dir, SIGNER))
    assert audit.ok, audit.findings
