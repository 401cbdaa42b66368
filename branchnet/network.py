"""Composing nodes: a crypto node, a host and branches, on one bus or on RabbitMQ.

:class:`Network` starts the nodes a simulation needs in dependency order (crypto, host,
branches) and stops them in reverse; each node gets its own bus connection, exactly as if it
ran in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branch_node import Branch
from branch_node.session import BranchSession
from branchnet.buses import open_bus
from branchnet.failover import prepare_standby
from common.authorisation import StaffKey, init_staff_keys
from common.bus import Bus
from common.embedded_bus import EmbeddedBroker
from common.errors import ConfigError
from common.identity import init_identities
from crypto_node import CryptoService, Hsm, init_keys, load_crypto_keys
from host_node import HostConfig, HostService
from host_node.config import pin_config
from host_node.events import EventConfig, host_events
from host_node.guard import Guard, SecurityHook
from host_node.staff import default_staff, signing_staff, supervisor_id
from host_node.standby import StandbyService

DEFAULT_HOST_CONFIG = HostConfig()


def ensure_keys(data_dir: Path, branch_ids: Sequence[str], terminals: int) -> None:
    """Create the key files on first use; refuse a data dir whose keys lack a branch.

    Identity keys missing for the host or a branch, and staff keys missing for a branch's
    supervisors and auditors, are created (kept when present).
    """
    init_identities(data_dir, branch_ids)
    init_staff_keys(data_dir, signing_staff(default_staff(branch_ids)))
    if not (data_dir / "keys" / "crypto.json").exists():
        init_keys(data_dir, branch_ids, terminals)
        return
    missing = [b for b in branch_ids if not (data_dir / "keys" / f"pinpads-{b}.json").exists()]
    if missing:
        raise ConfigError(
            f"{data_dir} has keys for fewer branches than asked (none for {', '.join(missing)});"
            " use a fresh --data-dir or re-run `branchnet keys init` with --force"
        )


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    data_dir: Path
    branch_ids: tuple[str, ...]
    terminals: int = 4
    seed: int = 1
    amqp_url: str | None = None
    #: Run a DR standby (in ``<data_dir>/standby``) with sync replication.
    standby: bool = False
    host_config: HostConfig | None = None
    host_clock: Callable[[], dt.datetime] | None = None
    events: EventConfig = field(default_factory=EventConfig)
    #: Secure envelopes (sealed, signed frames after a sign-on); False: plain frames.
    envelopes: bool = True
    #: Receives the host's security alerts (refused frames).
    on_security: SecurityHook | None = None
    #: Per-node AMQP URLs (``host``, ``crypto``, ``branch-<id>``: see branchnet.access);
    #: a node not named uses ``amqp_url``.
    node_urls: Mapping[str, str] = field(default_factory=dict)
    #: False: start only the crypto node and the host (a load generator brings its own load).
    run_branches: bool = True


def standby_dir(data_dir: Path) -> Path:
    """Where a simulation's standby keeps its store and its copy of the host key."""
    return data_dir / "standby"


class Network:
    """All nodes of one simulated network, started together."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self.embedded = None if config.amqp_url else EmbeddedBroker()
        self.buses: list[Bus] = []
        self.crypto: CryptoService | None = None
        self.host: HostService | None = None
        self.standby: StandbyService | None = None
        self.branches: list[Branch] = []

    def open_bus(self, name: str) -> Bus:
        """A new, not yet connected, bus on the network's broker (closed with the network)."""
        return self._bus(name)

    def _bus(self, name: str) -> Bus:
        url = self.config.node_urls.get(name, self.config.amqp_url)
        bus = open_bus(url if self.config.amqp_url else None, embedded=self.embedded, name=name)
        self.buses.append(bus)
        return bus

    async def start(self) -> None:
        config = self.config
        ensure_keys(config.data_dir, config.branch_ids, config.terminals)
        crypto_bus, host_bus = self._bus("crypto"), self._bus("host")
        await crypto_bus.connect()
        self.crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(config.data_dir)))
        await self.crypto.start()
        host_config = config.host_config or pin_config()
        if config.standby:
            await self._start_standby()
            host_config = dataclasses.replace(host_config, replication="sync")
        await host_bus.connect()
        extra: dict[str, Any] = {}
        if config.host_clock is not None:
            extra["clock"] = config.host_clock
        guard = None
        if config.envelopes:
            guard = Guard.load(config.data_dir, config.branch_ids, on_alert=config.on_security)
        events_bus = self._bus("events")  # events never share the replies' connection
        await events_bus.connect()
        self.host = HostService(
            host_bus,
            config.data_dir,
            branch_ids=config.branch_ids,
            config=host_config,
            events=host_events(events_bus, config.events),
            guard=guard,
            **extra,
        )
        await self.host.start()
        for index, branch_id in enumerate(config.branch_ids if config.run_branches else ()):
            bus = self._bus(f"branch-{branch_id}")
            await bus.connect()
            branch = Branch(
                bus,
                branch_id,
                data_dir=config.data_dir,
                terminals=config.terminals,
                seed=config.seed * 1000 + index,
                session=(
                    BranchSession.load(config.data_dir, branch_id) if config.envelopes else None
                ),
                supervisor=StaffKey.load(config.data_dir, supervisor_id(branch_id)),
            )
            await branch.start()
            self.branches.append(branch)

    async def _start_standby(self) -> None:
        data_dir = self.config.data_dir
        prepare_standby(data_dir, standby_dir(data_dir))
        bus = self._bus("standby")
        await bus.connect()
        self.standby = StandbyService(bus, standby_dir(data_dir))
        await self.standby.start()

    async def stop(self) -> None:
        """Stop branches, the host, the standby, then the crypto node; close every bus."""
        for branch in self.branches:
            with contextlib.suppress(Exception):
                await branch.stop()
        if self.host is not None:
            await self.host.stop()
        if self.standby is not None:
            head = self.host.store.head.seq if self.host is not None else 0
            await self._drain_standby(self.standby, head)
        if self.crypto is not None:
            await self.crypto.stop()
        for bus in reversed(self.buses):
            with contextlib.suppress(Exception):
                await bus.close()

    @staticmethod
    async def _drain_standby(standby: StandbyService, head: int, timeout_s: float = 10.0) -> None:
        """Let the standby apply what the host shipped last (to its shutdown checkpoint)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and standby.signed_to < head:
            await asyncio.sleep(0.05)
        await standby.stop()

    async def __aenter__(self) -> Network:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
