"""kill -9 of the host process at random points under load: nothing answered is lost or doubled.

A real ``branchnet host`` process runs over the test RabbitMQ while a branch in this test keeps
its terminals busy; the host is killed with SIGKILL at random moments (during start-up, in a
batch, between batches) and restarted. Afterwards the store must be consistent, every answer
the branch saw must be in the journal exactly once with the same result, and the journal must
verify. ``BRANCHNET_CRASH_KILLS`` sets the number of kills (CI: 5).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from branch_node import Branch, ClientConfig
from branch_node.session import BranchSession
from branchnet.buses import open_bus
from branchnet.network import ensure_keys
from branchnet.reconcile import reconcile
from common.identity import load_public
from common.topology import CORE, host_topology
from crypto_node import CryptoService, Hsm, load_crypto_keys
from host_node.audit import audit_store
from host_node.checkpoint import SIGNER
from host_node.store import ledger_path
from tests.branchnet.host_process import HostProcess
from tests.conftest import RabbitMQ

KILLS = int(os.environ.get("BRANCHNET_CRASH_KILLS", "5"))
BRANCH = "0001"


async def _answering(branch: Branch, count: int = 1, timeout_s: float = 60) -> None:
    """Return once the branch got ``count`` new answers."""
    wanted = branch.statistics().answered + count
    async with asyncio.timeout(timeout_s):
        while branch.statistics().answered < wanted:
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_kill_9_of_the_host_under_load_loses_and_doubles_nothing(
    rabbitmq: RabbitMQ, amqp_url: str, tmp_path: Path
) -> None:
    url = await asyncio.to_thread(rabbitmq.new_vhost) or amqp_url
    data_dir = tmp_path / "data"
    ensure_keys(data_dir, [BRANCH], 4)
    crypto_bus, branch_bus = open_bus(url, embedded=None, name="crypto"), None
    await crypto_bus.connect()
    await crypto_bus.declare(CORE + host_topology([BRANCH]))
    crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(data_dir)))
    await crypto.start()
    host = HostProcess(url, data_dir, tmp_path / "host.log")
    rng = random.Random(KILLS)
    try:
        host.start()
        branch_bus = open_bus(url, embedded=None, name=f"branch-{BRANCH}")
        await branch_bus.connect()
        branch = Branch(
            branch_bus,
            BRANCH,
            data_dir=data_dir,
            terminals=4,
            seed=7,
            client_config=ClientConfig(timeout_s=4.0, retries=8),
            session=BranchSession.load(data_dir, BRANCH),
        )
        await branch.start()
        # the workload runs until the kills are done, however fast this machine answers
        run = asyncio.create_task(branch.run(600))
        answered_at_kill: list[int] = []
        for _ in range(KILLS):
            # kill only once the (re)started host is answering, at a random moment after
            await _answering(branch)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            answered_at_kill.append(branch.statistics().answered)
            host.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            host.start()
        await _answering(branch, 150)  # and the last restart serves a while
        branch.wind_down()
        report = await run
        await branch.stop()
        assert host.stop() == 0, (tmp_path / "host.log").read_text()[-2000:]
    finally:
        host.kill()
        await crypto.stop()
        for bus in (branch_bus, crypto_bus):
            if bus is not None:
                await bus.close()
        if url != amqp_url:
            await asyncio.to_thread(rabbitmq.drop_vhost, url)

    # the kills really happened while the branch was being served
    assert host.kills == KILLS and len(set(answered_at_kill)) == KILLS
    answered = [o for o in report.outcomes if o.result != "timeout"]
    assert len(answered) >= len(report.outcomes) * 0.9
    reconciliation = reconcile(ledger_path(data_dir), [report])
    failed = {n: c.detail for n, c in reconciliation.checks.items() if not c.ok}
    assert reconciliation.ok, failed
    audit = audit_store(ledger_path(data_dir), load_public(data_dir, SIGNER))
    assert audit.ok, audit.findings
    assert audit.unsigned_tail == 0  # the clean stop at the end signed everything
