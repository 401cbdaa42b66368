"""The network as separate processes over RabbitMQ, and a host killed outright mid-load."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from branch_node import Branch, ClientConfig
from branch_node.session import BranchSession
from branchnet.chaos.processes import NodeProcesses
from branchnet.nodes import wait_for_host
from branchnet.reconcile import reconcile
from common.amqp_bus import AmqpBus
from host_node import StoreError, journal_length, ledger_path


def _journal_length(data_dir: Path) -> int:
    """The host's journal length so far (0 while the host is still creating its store)."""
    try:
        return journal_length(ledger_path(data_dir))
    except StoreError:
        return 0


@pytest.fixture
def nodes(tmp_path: Path, fresh_amqp_url: str) -> Iterator[NodeProcesses]:
    """Keys for one branch, and the crypto node and the host running as processes."""
    nodes = NodeProcesses(fresh_amqp_url, tmp_path, branches=1)
    subprocess.run(
        [sys.executable, "-m", "branchnet.cli", "keys", "init", "--branches", "1"],
        env=nodes.env,
        check=True,
        capture_output=True,
    )
    nodes.start("crypto")
    nodes.start("host")
    try:
        yield nodes
    finally:
        nodes.stop_all()


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_host_killed_mid_load_loses_no_acknowledged_transaction(
    tmp_path: Path, fresh_amqp_url: str, nodes: NodeProcesses
) -> None:
    bus = AmqpBus(fresh_amqp_url, name="test-branch")
    await bus.connect()
    branch = Branch(
        bus,
        "0001",
        data_dir=tmp_path,
        terminals=4,
        seed=11,
        client_config=ClientConfig(timeout_s=2.0, retries=20),
        session=BranchSession.load(tmp_path, "0001"),
    )
    try:
        await wait_for_host(bus, timeout_s=60)
        await branch.start()
        run = asyncio.create_task(branch.run(120, max_requests=900))
        while branch.statistics().answered < 300:
            assert not run.done(), "the branch stopped before the kill"
            await asyncio.sleep(0.05)
        host = nodes.running["host"]
        nodes.kill("host")  # SIGKILL: no drain, no clean close of the store
        assert host.returncode == -signal.SIGKILL
        answered_at_kill = branch.statistics().answered
        await asyncio.sleep(1.0)
        nodes.start("host")
        report = await asyncio.wait_for(run, timeout=300)
    finally:
        await branch.stop()
        await bus.close()

    answered = [o for o in report.outcomes if o.result != "timeout"]
    assert len(answered) >= 900 and len(answered) > answered_at_kill + 300
    assert not [o for o in report.outcomes if o.result == "timeout"]
    reconciliation = reconcile(ledger_path(tmp_path), [report])
    failed = {k: v for k, v in reconciliation.checks.items() if not v.ok}
    assert reconciliation.ok, failed


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_a_signalled_branch_process_finishes_its_customers_and_reports(
    tmp_path: Path, nodes: NodeProcesses
) -> None:
    report_path = tmp_path / "branch.json"
    branch = subprocess.Popen(
        [sys.executable, "-m", "branchnet.cli", "branch", "--id", "0001", "--duration", "600",
         "--json-report", str(report_path)],
        env=nodes.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(120):
            while _journal_length(tmp_path) < 50:
                assert branch.poll() is None, "the branch stopped on its own"
                await asyncio.sleep(0.2)
        branch.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(branch.wait, 60)
    finally:
        if branch.poll() is None:
            branch.kill()
    assert status == 0  # not killed by the signal: it wound down
    summary = json.loads(report_path.read_text())
    assert summary["requests"] >= 50 and summary["timeouts"] == 0
    # every request it sent was answered: the journal holds exactly the answered ones
    assert journal_length(ledger_path(tmp_path)) == summary["requests"]
