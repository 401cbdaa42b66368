"""The named fault-injection scenarios of ``branchnet chaos``.

Process scenarios run the crypto node and the host as real processes over RabbitMQ and the
branches in this process; each injects its fault repeatedly while the workload runs, then
waits until nothing is in flight and checks every request (:mod:`branchnet.chaos.checker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branch_node import Branch, BranchReport, ClientConfig, Outcome
from branch_node.session import BranchSession
from branchnet import broker
from branchnet.chaos import dr_scenarios as dr
from branchnet.chaos.load_scenarios import LOAD_SCENARIOS
from branchnet.chaos.processes import NodeProcesses
from branchnet.chaos.report import RunFacts, chaos_report, with_outcomes
from branchnet.chaos.simulation import run_deterministic
from branchnet.network import ensure_keys
from branchnet.nodes import wait_for_host
from common.amqp_bus import AmqpBus
from common.bus import Bus
from common.ids import branch_ids
from common.topology import CRYPTO_COMMANDS, HOST_REQUESTS
from host_node import journal_length, ledger_path
from host_node.config import StandbyLost

#: Over RabbitMQ a restart takes a second or two: retry long enough to ride it out.
PROCESS_CLIENT = ClientConfig(timeout_s=2.0, retries=40)


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """One chaos run. ``broker_dir`` is set when the run owns a private broker node."""

    data_dir: Path
    duration_s: float = 20.0
    seed: int = 1
    branches: int = 2
    terminals: int = 3
    amqp_url: str | None = None
    management_url: str | None = None
    broker_dir: Path | None = None
    standby_lost: StandbyLost = "stop"  # the sync primary's policy in standby scenarios
    mqtt_url: str | None = None


@dataclass(slots=True)
class _Run:
    """What an injector may touch while the workload runs."""

    config: ChaosConfig
    nodes: NodeProcesses
    branches: list[Branch]
    finished: asyncio.Future[Any]
    rng: random.Random
    faults: Counter[str]
    recovery: list[float]
    #: Beyond the requests: what the injector saw, its own checks (all must hold for a
    #: pass), and the outcomes of requests it sent itself (checked like the terminals').
    observed: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)

    def answered(self) -> int:
        return sum(b.statistics().answered for b in self.branches)

    async def pause(self, low: float, high: float) -> bool:
        """Sleep a random while; False when the workload finished meanwhile."""
        await asyncio.wait({self.finished}, timeout=self.rng.uniform(low, high))
        return not self.finished.done()

    async def measure_recovery(self, since: float, answered: int) -> None:
        """Record seconds from ``since`` until the branches' next answer."""
        while not self.finished.done() and self.answered() <= answered:
            await asyncio.sleep(0.01)
        if not self.finished.done():
            self.recovery.append(time.monotonic() - since)


Injector = Callable[[_Run], Coroutine[Any, Any, None]]


async def _kill_host(run: _Run) -> None:
    while await run.pause(1.5, 3.0):
        run.nodes.kill("host")
        run.faults["host_kill"] += 1
        killed_at, answered = time.monotonic(), run.answered()
        await asyncio.sleep(run.rng.uniform(0.2, 1.0))
        run.nodes.start("host")
        await run.measure_recovery(killed_at, answered)


async def _kill_crypto(run: _Run) -> None:
    while await run.pause(1.5, 3.0):
        run.nodes.kill("crypto")
        run.faults["crypto_kill"] += 1
        # down for longer than the host waits for the crypto node: PIN requests get 91
        timeout = run.nodes.crypto_timeout_s
        await asyncio.sleep(run.rng.uniform(timeout + 1.0, timeout + 2.5))
        restarted_at, answered = time.monotonic(), run.answered()
        run.nodes.start("crypto")
        await run.measure_recovery(restarted_at, answered)


async def _drop_connections(run: _Run) -> None:
    url, management = run.config.amqp_url, run.config.management_url
    assert url is not None and management is not None
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:]) or "/"
    while await run.pause(1.0, 2.5):
        dropped_at, answered = time.monotonic(), run.answered()
        closed = await asyncio.to_thread(broker.close_connections, management, url, vhost)
        run.faults["connections_closed"] += closed
        await run.measure_recovery(dropped_at, answered)


async def _restart_broker(run: _Run) -> None:
    base_dir = run.config.broker_dir
    assert base_dir is not None
    while await run.pause(3.0, 5.0):
        stopped_at, answered = time.monotonic(), run.answered()
        await asyncio.to_thread(broker.stop_broker, base_dir)
        await asyncio.to_thread(broker.start_broker, base_dir)
        run.faults["broker_restart"] += 1
        await run.measure_recovery(stopped_at, answered)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    injector: Injector | None  # None: the embedded deterministic simulation
    needs_management: bool = False
    needs_own_broker: bool = False
    standby: bool = False  # the host replicates in sync mode to a standby process
    client: ClientConfig = PROCESS_CLIENT


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "deterministic",
            "embedded bus, seeded: duplicated and reordered deliveries, host and crypto crashes",
            None,
        ),
        Scenario("host-kill", "kill -9 the host mid-load and restart it, repeatedly", _kill_host),
        Scenario(
            "crypto-kill",
            "kill -9 the crypto node: PIN requests get 91 promptly, service resumes",
            _kill_crypto,
        ),
        Scenario(
            "connection-drop",
            "close every client connection through the management API, repeatedly",
            _drop_connections,
            needs_management=True,
        ),
        Scenario(
            "broker-restart",
            "stop and start the private RabbitMQ node under load",
            _restart_broker,
            needs_own_broker=True,
        ),
        Scenario("standby-kill", dr.STANDBY_KILL, dr.kill_standby, standby=True),
        Scenario("failover", dr.FAILOVER, dr.fail_over, standby=True),
        Scenario("journal-corruption", dr.CORRUPTION, dr.corrupt_journal),
    )
}
# poison-message, deadline, slow-dashboard, overload: branchnet/chaos/load_scenarios.py
SCENARIOS.update((n, Scenario(n, text, inject, **more)) for n, text, inject, more in LOAD_SCENARIOS)


async def run_scenario(name: str, config: ChaosConfig) -> dict[str, Any]:
    """Run scenario ``name`` and return its report (see :func:`chaos_report`)."""
    scenario = SCENARIOS[name]
    if scenario.injector is None:
        reports, facts = await run_deterministic(
            config.data_dir,
            seed=config.seed,
            duration_s=config.duration_s,
            branches=config.branches,
            terminals=config.terminals,
        )
    else:
        reports, facts = await _run_processes(config, scenario)
    return chaos_report(name, config.seed, ledger_path(config.data_dir), reports, facts)


async def _run_processes(
    config: ChaosConfig, scenario: Scenario
) -> tuple[list[BranchReport], RunFacts]:
    if config.amqp_url is None:
        raise ValueError("process scenarios need RabbitMQ")
    ids = tuple(branch_ids(config.branches))
    ensure_keys(config.data_dir, ids, config.terminals)
    buses: list[Bus] = []
    branches: list[Branch] = []
    faults: Counter[str] = Counter()
    recovery: list[float] = []
    assert scenario.injector is not None
    policy = config.standby_lost if scenario.standby else None
    with NodeProcesses(
        config.amqp_url, config.data_dir, config.branches, standby_lost=policy
    ) as nodes:
        nodes.start_all()
        try:
            for index, branch_id in enumerate(ids):
                bus = AmqpBus(config.amqp_url, name=f"chaos-branch-{branch_id}")
                buses.append(bus)
                await bus.connect()
                await wait_for_host(bus, timeout_s=60)
                branch = Branch(
                    bus,
                    branch_id,
                    data_dir=config.data_dir,
                    terminals=config.terminals,
                    seed=config.seed * 100 + index,
                    client_config=scenario.client,
                    # the host process opens sealed frames only
                    session=BranchSession.load(config.data_dir, branch_id),
                )
                await branch.start()
                branches.append(branch)
            finished = asyncio.ensure_future(
                asyncio.gather(*(b.run(config.duration_s) for b in branches))
            )
            run = _Run(
                config, nodes, branches, finished, random.Random(config.seed), faults, recovery
            )
            injector = asyncio.create_task(scenario.injector(run))
            reports = list(await finished)
            await injector
            reports = with_outcomes(reports, run.outcomes)
            nodes.start("host")
            nodes.start("crypto")
            store = ledger_path(nodes.host_dir)
            drained = await _drained(buses[0], store=store)
        finally:
            for branch in branches:
                with contextlib.suppress(Exception):
                    await branch.stop()
            for opened in buses:
                with contextlib.suppress(Exception):
                    await opened.close()
    return reports, RunFacts(
        dict(faults), recovery, drained, store=store, observed=run.observed, checks=run.checks
    )


async def _drained(bus: Bus, timeout_s: float = 60.0, store: Path | None = None) -> bool:
    """Nothing left in the request and command queues for a second; given the host's
    ``store``, also no journal entry added for three: a queue counts only what no consumer
    holds, and the host may hold hundreds of prefetched frames."""
    deadline = time.monotonic() + timeout_s
    quiet, entries = 0, -1
    while time.monotonic() < deadline:
        requests = await bus.queue_stats(HOST_REQUESTS)
        commands = await bus.queue_stats(CRYPTO_COMMANDS)
        idle = not (requests.messages or commands.messages)
        if store is not None:
            entries, before = await asyncio.to_thread(journal_length, store), entries
            idle = idle and entries == before
        quiet = quiet + 1 if idle else 0
        if quiet >= (30 if store is not None else 10):
            return True
        await asyncio.sleep(0.1)
    return False
