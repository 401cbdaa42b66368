"""The host behind secure envelopes, with real crypto node and branch, on both buses.

Bad frames of every shape (hypothesis-made from frames captured on the wire: replayed,
truncated, bit-flipped, spliced, oversized, unsigned, garbage, sent under another branch's
routing key) are thrown at the host while a branch runs beside them: each is refused with a
reason and a security alert, dead-lettered, and leaves the ledger and the journal alone; the
good traffic completes and reconciles. A host restart makes the branch sign on again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from branch_node.branch import Branch, BranchReport
from branch_node.client import ClientConfig
from branch_node.session import BranchSession
from branchnet.reconcile import reconcile
from common.bus import Bus, Delivery, Message
from common.envelope import read_sealed
from common.frames import MAX_FRAME_BYTES, FrameKind, build_frame, encode_frame
from common.identity import init_identities
from common.topology import (
    DEAD_QUEUE,
    REASON_HEADER,
    REQUESTS_EXCHANGE,
    Binding,
    QueueSpec,
    Topology,
    branch_key,
)
from crypto_node import CryptoService, Hsm, init_keys, load_crypto_keys
from host_node import HostService, check_store, ledger_path
from host_node.guard import Guard, Refusal, SecurityAlert

if TYPE_CHECKING:
    from tests.conftest import BusFactory

TAP = "test.tap"
BRANCHES = ["0001", "0002"]


@dataclass
class Secured:
    """A crypto node, a guarded host and branch 0001, plus a tap on 0001's request frames."""

    bus_factory: BusFactory
    data_dir: Path
    alerts: list[SecurityAlert] = field(default_factory=list)
    tapped: list[bytes] = field(default_factory=list)
    dead: list[Delivery] = field(default_factory=list)
    host: HostService | None = None
    crypto: CryptoService | None = None
    branch: Branch | None = None
    attacker: Bus | None = None

    async def start(self) -> None:
        init_keys(self.data_dir, BRANCHES, 2)
        init_identities(self.data_dir, BRANCHES)
        crypto_bus = await self.bus_factory("crypto")
        self.crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(self.data_dir)))
        await self.crypto.start()
        await self.start_host()
        self.attacker = await self.bus_factory("attacker")
        await self.attacker.declare(
            Topology(
                queues=(QueueSpec(TAP),),
                bindings=(Binding(TAP, REQUESTS_EXCHANGE, branch_key("0001")),),
            )
        )
        await self.attacker.consume(TAP, self._on_tap, prefetch=64)
        await self.attacker.consume(DEAD_QUEUE, self._on_dead, prefetch=64)
        branch_bus = await self.bus_factory("branch-0001")
        self.branch = Branch(
            branch_bus,
            "0001",
            data_dir=self.data_dir,
            terminals=2,
            client_config=ClientConfig(timeout_s=5),
            session=BranchSession.load(self.data_dir, "0001"),
        )
        await self.branch.start()

    async def start_host(self) -> None:
        guard = Guard.load(self.data_dir, BRANCHES, on_alert=self.alerts.append)
        bus = await self.bus_factory("host")
        self.host = HostService(bus, self.data_dir, branch_ids=BRANCHES, guard=guard)
        await self.host.start()

    async def stop(self) -> None:
        for node in (self.branch, self.host, self.crypto):
            if node is not None:
                with contextlib.suppress(Exception):
                    await node.stop()

    async def _on_tap(self, delivery: Delivery) -> None:
        self.tapped.append(delivery.body)
        await delivery.ack()

    async def _on_dead(self, delivery: Delivery) -> None:
        self.dead.append(delivery)
        await delivery.ack()

    def reconciles(self, report: BranchReport) -> None:
        result = reconcile(ledger_path(self.data_dir), [report])
        assert result.ok, result
        answered = {o.request_id for o in report.outcomes if o.result != "timeout"}
        assert len(answered) == len(report.outcomes) > 10
        assert self.host is not None
        assert self.host.statistics().journal_seq == len(answered)


@pytest.fixture
async def secured(bus_factory: BusFactory, tmp_path: Path) -> AsyncIterator[Secured]:
    network = Secured(bus_factory, tmp_path)
    try:
        await network.start()
        yield network
    finally:
        await network.stop()


def _bad_frames(captured: list[bytes], examples: int) -> list[tuple[bytes, str]]:
    """Hypothesis draws ``examples`` bad frames (body, routing key) from captured ones."""
    requests = [b for b in captured if read_sealed(b).header.kind is FrameKind.REQUEST]
    own = branch_key("0001")
    frame = st.sampled_from(requests)
    mutations = st.one_of(
        frame.map(lambda b: (b, own)),  # replayed
        st.tuples(frame, st.data()).map(
            lambda t: (t[0][: t[1].draw(st.integers(0, len(t[0]) - 1))], own)
        ),  # truncated
        st.tuples(frame, st.data()).map(lambda t: (_flip(t[0], t[1]), own)),  # bit-flipped
        st.tuples(frame, frame).map(
            lambda t: (t[0].partition(b"\n")[0] + b"\n" + t[1].partition(b"\n")[2], own)
        ),  # header of one frame, records of another (re-ordered)
        frame.map(lambda b: (b + b"x" * MAX_FRAME_BYTES, own)),  # oversized
        frame.map(lambda b: (b, branch_key("0002"))),  # under another branch's key
        st.binary(max_size=300).map(lambda b: (b, own)),  # garbage
        st.lists(
            st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b), min_size=1
        ).map(lambda r: (encode_frame(build_frame(FrameKind.REQUEST, "0001", 10**9, r)), own)),
    )
    drawn: list[tuple[bytes, str]] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutations)
    def draw(bad: tuple[bytes, str]) -> None:
        drawn.append(bad)

    draw()
    return drawn


def _flip(body: bytes, data: st.DataObject) -> bytes:
    position = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.integers(0, 7))
    changed = bytearray(body)
    changed[position] ^= 1 << bit
    return bytes(changed)


@pytest.mark.slow
async def test_bad_frames_are_refused_while_good_traffic_reconciles(secured: Secured) -> None:
    assert secured.branch is not None and secured.attacker is not None
    run = asyncio.create_task(secured.branch.run(2.5))
    async with asyncio.timeout(20):
        while len(secured.tapped) < 6:
            await asyncio.sleep(0.02)
    bad = _bad_frames(list(secured.tapped), 120)
    for body, key in bad:
        await secured.attacker.publish([Message(REQUESTS_EXCHANGE, key, body)])
    report = await asyncio.wait_for(run, 60)
    async with asyncio.timeout(20):
        while len(secured.alerts) < len(bad) or len(secured.dead) < len(bad):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert len(secured.alerts) == len(bad) == len(secured.dead)
    assert all(str(d.headers.get(REASON_HEADER, "")) for d in secured.dead)
    assert {a.refusal for a in secured.alerts} <= set(Refusal) - {Refusal.STALE_EPOCH}
    assert Refusal.REPLAYED in {a.refusal for a in secured.alerts}
    assert len(Counter(a.refusal for a in secured.alerts)) >= 4  # many shapes, not one
    secured.reconciles(report)
    assert secured.host is not None and secured.host.statistics().dead_frames == len(bad)


@pytest.mark.slow
async def test_a_host_restart_makes_the_branch_sign_on_again(secured: Secured) -> None:
    assert secured.branch is not None and secured.host is not None
    run = asyncio.create_task(secured.branch.run(3.0))
    await asyncio.sleep(1.0)
    await secured.host.stop()
    await secured.start_host()
    report = await asyncio.wait_for(run, 60)
    statistics = secured.branch.client.statistics()
    assert statistics.sign_ons >= 2
    assert report.statistics.timeouts == 0
    assert {a.refusal for a in secured.alerts} <= {Refusal.STALE_EPOCH}
    secured.reconciles(report)


@pytest.mark.slow
async def test_a_restarted_branch_continues_its_frame_sequence(secured: Secured) -> None:
    assert secured.branch is not None and secured.host is not None
    first = await asyncio.wait_for(secured.branch.run(0.5), 60)
    await secured.branch.stop()
    again = Branch(
        await secured.bus_factory("branch-0001-again"),
        "0001",
        data_dir=secured.data_dir,
        terminals=2,
        client_config=ClientConfig(timeout_s=5),
        session=BranchSession.load(secured.data_dir, "0001"),
    )
    secured.branch = again
    await again.start()
    second = await asyncio.wait_for(again.run(0.5), 60)
    # The host's replay window outlived the branch: reused sequences would be refused.
    assert secured.alerts == []
    assert second.statistics.timeouts == 0 and len(second.outcomes) > 5
    assert len(first.outcomes) > 5
    assert all(check.ok for check in check_store(ledger_path(secured.data_dir)).values())
