"""Composing nodes: a crypto node, a host and branches, on one bus or on RabbitMQ.

:class:`Network` starts the nodes a simulation needs in dependency order (crypto, host,
branches) and stops them in reverse; each node gets its own bus connection, exactly as if it
ran in its own process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from branch_node import Branch
from branchnet.buses import open_bus
from common.bus import Bus
from common.embedded_bus import EmbeddedBroker
from common.errors import ConfigError
from crypto_node import CryptoService, Hsm, init_keys, load_crypto_keys
from host_node import HostConfig, HostService

DEFAULT_HOST_CONFIG = HostConfig()


def ensure_keys(data_dir: Path, branch_ids: Sequence[str], terminals: int) -> None:
    """Create the key files on first use; refuse a data dir whose keys lack a branch."""
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
    #: False: start only the crypto node and the host (a load generator brings its own load).
    run_branches: bool = True
    host_config: HostConfig = DEFAULT_HOST_CONFIG


class Network:
    """All nodes of one simulated network, started together."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self.embedded = None if config.amqp_url else EmbeddedBroker()
        self.buses: list[Bus] = []
        self.crypto: CryptoService | None = None
        self.host: HostService | None = None
        self.branches: list[Branch] = []

    def open_bus(self, name: str) -> Bus:
        """A new, not yet connected, bus on the network's broker (closed with the network)."""
        return self._bus(name)

    def _bus(self, name: str) -> Bus:
        bus = open_bus(self.config.amqp_url, embedded=self.embedded, name=name)
        self.buses.append(bus)
        return bus

    async def start(self) -> None:
        config = self.config
        ensure_keys(config.data_dir, config.branch_ids, config.terminals)
        crypto_bus, host_bus = self._bus("crypto"), self._bus("host")
        await crypto_bus.connect()
        self.crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(config.data_dir)))
        await self.crypto.start()
        await host_bus.connect()
        self.host = HostService(
            host_bus, config.data_dir, branch_ids=config.branch_ids, config=config.host_config
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
            )
            await branch.start()
            self.branches.append(branch)

    async def stop(self) -> None:
        """Stop branches, then the host, then the crypto node; close every bus."""
        for branch in self.branches:
            with contextlib.suppress(Exception):
                await branch.stop()
        if self.host is not None:
            await self.host.stop()
        if self.crypto is not None:
            await self.crypto.stop()
        for bus in reversed(self.buses):
            with contextlib.suppress(Exception):
                await bus.close()

    async def __aenter__(self) -> Network:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
