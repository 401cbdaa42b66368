"""A branch's terminals against a host (a fake bank, then the real nodes), on both buses."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from branch_node.branch import Branch, BranchReport
from branch_node.client import ClientConfig
from branch_node.errors import BranchError, BranchNotRegistered
from branch_node.workload import Mix, WorkloadConfig
from common.results import ResultCode
from common.topology import CORE, host_topology
from tests.branch_node.fakes import FakeBank, FakePinPad, Responder, fake_pinpads

if TYPE_CHECKING:
    from tests.conftest import BusFactory

#: Results a healthy network gives the workload (approvals and the declines it provokes).
EXPECTED_RESULTS = {"00", "51", "55", "75"}


@pytest.fixture
async def bank_host(bus_factory: BusFactory) -> FakeBank:
    """A fake host answering branches 0001 and 0003 from one in-memory bank."""
    bus = await bus_factory("host")
    await bus.declare(CORE + host_topology(["0001", "0003"]))
    bank = FakeBank()
    await Responder(bus, bank.answer).start()
    return bank


async def _run_branch(
    bus_factory: BusFactory,
    data_dir: Path,
    *,
    branch_id: str = "0001",
    duration_s: float = 0.5,
    max_requests: int | None = None,
    clean_stop: bool = True,
    terminals: int = 2,
) -> tuple[Branch, BranchReport]:
    bus = await bus_factory(f"branch-{branch_id}")
    branch = Branch(
        bus,
        branch_id,
        data_dir=data_dir,
        terminals=terminals,
        seed=3,
        pinpad_loader=fake_pinpads,
        state_block=50,
    )
    await branch.start()
    try:
        report = await asyncio.wait_for(branch.run(duration_s, max_requests=max_requests), 30)
    finally:
        if clean_stop:
            await branch.stop()
        else:  # a crash: the state file is never closed, the client just goes away
            await branch.client.stop()
    return branch, report


async def test_terminals_serve_concurrently_and_every_result_is_predicted(
    bus_factory: BusFactory, bank_host: FakeBank, tmp_path: Path
) -> None:
    _, report = await _run_branch(
        bus_factory, tmp_path, duration_s=120, terminals=3, max_requests=150
    )
    outcomes = report.outcomes
    assert len(outcomes) == 150
    assert {o.request_id[:7] for o in outcomes} == {"0001-01", "0001-02", "0001-03"}
    assert len({o.request_id for o in outcomes}) == len(outcomes)
    assert [o for o in outcomes if o.result != o.expected] == []
    assert sum(o.cash_in - o.cash_out for o in outcomes) == bank_host.cash
    stats = report.statistics
    assert stats.sent == stats.answered == len(outcomes) and stats.timeouts == 0
    assert stats.in_flight == 0 and stats.surprises == 0
    assert sum(stats.by_result.values()) == len(outcomes)
    assert report.conflicting() == []
    assert set(report.results_seen) == {o.request_id for o in outcomes}


async def test_max_requests_bounds_a_run(
    bus_factory: BusFactory, bank_host: FakeBank, tmp_path: Path
) -> None:
    _, report = await _run_branch(bus_factory, tmp_path, duration_s=30, max_requests=25)
    assert len(report.outcomes) == 25


@pytest.mark.parametrize("clean_stop", [True, False], ids=["clean stop", "crash"])
async def test_a_restarted_branch_reuses_no_request_id_card_or_ksn(
    bus_factory: BusFactory, bank_host: FakeBank, tmp_path: Path, clean_stop: bool
) -> None:
    first, before = await _run_branch(
        bus_factory, tmp_path, max_requests=120, clean_stop=clean_stop
    )
    second, after = await _run_branch(bus_factory, tmp_path, max_requests=120)
    assert not {o.request_id for o in before.outcomes} & {o.request_id for o in after.outcomes}
    # A reused card number would be refused by the bank (26) and surprise the model.
    assert [o for o in after.outcomes if o.result != o.expected] == []
    opened = [o.account for r in (before, after) for o in r.outcomes if o.kind == "open_account"]
    assert len(opened) == len(set(opened))
    for old, new in zip(first.terminals, second.terminals, strict=True):
        assert isinstance(old.pad, FakePinPad) and isinstance(new.pad, FakePinPad)
        assert old.pad.used and new.pad.used and min(new.pad.used) > max(old.pad.used)


async def test_a_branch_the_host_does_not_know_fails_clearly(
    bus_factory: BusFactory, bank_host: FakeBank, tmp_path: Path
) -> None:
    with pytest.raises(BranchNotRegistered, match="0002"):
        await _run_branch(bus_factory, tmp_path, branch_id="0002")


async def test_every_distinct_result_per_request_id_is_kept(
    bus_factory: BusFactory, tmp_path: Path
) -> None:
    bus = await bus_factory("host")
    await bus.declare(CORE + host_topology(["0001"]))
    bank = FakeBank()
    responder = Responder(
        bus, bank.answer, duplicate=True, duplicate_result=ResultCode.SYSTEM_ERROR
    )
    await responder.start()
    _, report = await _run_branch(bus_factory, tmp_path, max_requests=10)
    assert len(report.conflicting()) == 10
    assert all(len(seen) == 2 for seen in report.results_seen.values())
    assert report.statistics.client.duplicate_replies == 10


async def test_a_terminal_without_a_pin_pad_is_refused_at_start(
    bus_factory: BusFactory, tmp_path: Path
) -> None:
    bus = await bus_factory()
    branch = Branch(
        bus,
        "0001",
        data_dir=tmp_path,
        terminals=3,
        pinpad_loader=lambda d, b, c: {"01": FakePinPad()},
    )
    with pytest.raises(BranchError, match="02, 03"):
        await branch.start()


@pytest.mark.slow
async def test_end_to_end_with_the_real_host_and_crypto_node(
    bus_factory: BusFactory, tmp_path: Path
) -> None:
    from common.authorisation import StaffKey, init_staff_keys
    from crypto_node import CryptoService, Hsm, init_keys, load_crypto_keys
    from host_node import HostService
    from host_node.query_trail import read_trail

    init_keys(tmp_path, ["0001"], 2)
    init_staff_keys(tmp_path, ["S000101"])  # the host registers it at start
    crypto_bus, host_bus, branch_bus = [await bus_factory(n) for n in ("crypto", "host", "0001")]
    crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(tmp_path)))
    await crypto.start()
    host = HostService(host_bus, tmp_path, branch_ids=["0001"])
    await host.start()
    branch = Branch(
        branch_bus,
        "0001",
        data_dir=tmp_path,
        terminals=2,
        client_config=ClientConfig(timeout_s=5),
        workload=WorkloadConfig(mix=Mix(customer_query=8.0)),
        supervisor=StaffKey.load(tmp_path, "S000101"),
    )
    try:
        await branch.start()
        report = await asyncio.wait_for(branch.run(2.0), 60)
    finally:
        await branch.stop()
        await host.stop()
        await crypto.stop()
    results = Counter(o.result for o in report.outcomes)
    assert len(report.outcomes) > 20
    assert set(results) <= EXPECTED_RESULTS, results
    assert results["00"] > len(report.outcomes) // 2
    assert report.statistics.timeouts == 0
    assert report.conflicting() == []
    surprises = [(o.kind, o.expected, o.result) for o in report.outcomes if o.result != o.expected]
    assert surprises == []
    queries = [o for o in report.outcomes if o.kind == "customer_query"]
    assert queries and all(o.result == "00" for o in queries)  # signed by the supervisor
    trail = read_trail(tmp_path, staff_id="A000101", role="auditor")
    assert sorted(r.request_id for r in trail) == sorted(o.request_id for o in queries)


async def test_a_workload_with_customer_queries_needs_the_supervisor(
    bus_factory: BusFactory, tmp_path: Path
) -> None:
    with pytest.raises(BranchError, match="supervisor's staff key"):
        Branch(
            await bus_factory("0001"),
            "0001",
            data_dir=tmp_path,
            workload=WorkloadConfig(mix=Mix(customer_query=1.0)),
        )
