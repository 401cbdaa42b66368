"""The deterministic simulation: the whole network on the embedded bus under seeded faults.

One seed fixes the fault plan (how often deliveries are duplicated or held back and so
reordered) and the crash schedule of the host and the crypto node. A failing seed is
reproduced by running it again with that seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from branch_node import Branch, BranchReport, ClientConfig
from branchnet.chaos.faults import FaultPlan, FaultyBus
from branchnet.chaos.report import RunFacts
from branchnet.network import ensure_keys
from common.embedded_bus import EmbeddedBroker
from common.ids import branch_ids
from common.topology import CRYPTO_COMMANDS, HOST_REQUESTS
from crypto_node import CryptoService, Hsm, load_crypto_keys
from host_node import HostConfig, HostService

#: Branch clients retry often and briefly: replies are lost whenever a node crashes.
CHAOS_CLIENT = ClientConfig(timeout_s=0.5, retries=60)
#: A crashed crypto node must turn into prompt ``91`` answers, not long waits.
CHAOS_HOST = HostConfig(crypto_timeout_s=1.0)


@dataclass(slots=True)
class _Nodes:
    """The crashable nodes, each on its own faulty connection."""

    broker: EmbeddedBroker
    data_dir: Path
    branches: tuple[str, ...]
    rng: random.Random
    plan: FaultPlan
    host: HostService | None = None
    host_bus: FaultyBus | None = None
    crypto: CryptoService | None = None
    crypto_bus: FaultyBus | None = None

    def bus(self) -> FaultyBus:
        return FaultyBus(self.broker.connect(), self.plan, random.Random(self.rng.getrandbits(64)))

    async def start_host(self) -> None:
        self.host_bus = self.bus()
        await self.host_bus.connect()
        self.host = HostService(
            self.host_bus, self.data_dir, branch_ids=self.branches, config=CHAOS_HOST
        )
        await self.host.start()

    async def start_crypto(self) -> None:
        self.crypto_bus = self.bus()
        await self.crypto_bus.connect()
        self.crypto = CryptoService(self.crypto_bus, Hsm(load_crypto_keys(self.data_dir)))
        await self.crypto.start()

    async def crash_host(self) -> None:
        """The connection drops first (unacked frames go back), then the process is gone."""
        assert self.host is not None and self.host_bus is not None
        await self.host_bus.inner.close()
        await self.host.stop()

    async def crash_crypto(self) -> None:
        assert self.crypto is not None and self.crypto_bus is not None
        await self.crypto_bus.inner.close()
        await self.crypto.stop()

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
        if self.crypto is not None:
            await self.crypto.stop()
        for bus in (self.host_bus, self.crypto_bus):
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.close()


async def run_deterministic(
    data_dir: Path, *, seed: int, duration_s: float, branches: int = 2, terminals: int = 3
) -> tuple[list[BranchReport], RunFacts]:
    """Run the network under the faults ``seed`` draws; return what branches saw and facts."""
    rng = random.Random(seed)
    plan = FaultPlan(
        duplicate=rng.uniform(0.05, 0.5), delay=rng.uniform(0.05, 0.3), max_delay_s=0.05
    )
    ids = tuple(branch_ids(branches))
    ensure_keys(data_dir, ids, terminals)
    nodes = _Nodes(EmbeddedBroker(), data_dir, ids, rng, plan)
    await nodes.start_crypto()
    await nodes.start_host()
    faults: Counter[str] = Counter()
    recovery: list[float] = []
    branch_buses = [nodes.bus() for _ in ids]
    running: list[Branch] = []
    try:
        for index, (branch_id, bus) in enumerate(zip(ids, branch_buses, strict=True)):
            await bus.connect()
            branch = Branch(
                bus,
                branch_id,
                data_dir=data_dir,
                terminals=terminals,
                seed=seed * 100 + index,
                client_config=CHAOS_CLIENT,
            )
            await branch.start()
            running.append(branch)
        runs = asyncio.gather(*(b.run(duration_s) for b in running))
        while not runs.done():
            await asyncio.wait({runs}, timeout=rng.uniform(0.3, 1.2))
            if runs.done():
                break
            answered = sum(b.statistics().answered for b in running)
            if rng.random() < 0.7:
                await nodes.crash_host()
                faults["host_crash"] += 1
                await nodes.start_host()
            else:
                await nodes.crash_crypto()
                faults["crypto_crash"] += 1
                await nodes.start_crypto()
            recovery.append(await _recovered(running, answered, runs))
        reports = list(await runs)
        drained = await _drain(nodes)
    finally:
        for branch in running:
            await branch.stop()
        for bus in branch_buses:
            with contextlib.suppress(Exception):
                await bus.close()
        await nodes.stop()
    for faulty in [*branch_buses, nodes.host_bus, nodes.crypto_bus]:
        if faulty is not None:
            faults["duplicated_deliveries"] += faulty.duplicated
            faults["delayed_deliveries"] += faulty.delayed
    notes = [f"plan: duplicate {plan.duplicate:.2f}, delay {plan.delay:.2f}"]
    return reports, RunFacts(dict(faults), recovery, drained, notes)


async def _recovered(branches: list[Branch], answered: int, runs: asyncio.Future[Any]) -> float:
    """Seconds until a branch gets its next answer after a restart."""
    started = time.monotonic()
    while not runs.done() and sum(b.statistics().answered for b in branches) <= answered:
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _drain(nodes: _Nodes, timeout_s: float = 30.0) -> bool:
    """Wait until nothing is in flight: request and command queues empty, the host idle."""
    assert nodes.host is not None and nodes.host_bus is not None
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        requests = await nodes.host_bus.queue_stats(HOST_REQUESTS)
        commands = await nodes.host_bus.queue_stats(CRYPTO_COMMANDS)
        stats = nodes.host.statistics()
        idle = not (requests.messages or commands.messages or stats.inbox or stats.carried)
        quiet = quiet + 1 if idle else 0
        if quiet >= 5:
            return True
        await asyncio.sleep(0.1)
    return False
