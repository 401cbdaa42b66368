"""Running one node as its own process over RabbitMQ until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from branch_node import Branch, BranchReport
from branchnet.buses import open_bus
from common.bus import Bus
from common.logs import get_logger
from crypto_node import CryptoService, Hsm, load_crypto_keys
from host_node import HostConfig, HostService

_log = get_logger("branchnet.nodes")
DEFAULT_HOST_CONFIG = HostConfig()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def _serve(name: str, amqp_url: str, make: Callable[[Bus], Any]) -> None:
    """Connect, start the node ``make`` builds, wait for a signal, stop cleanly."""
    bus = open_bus(amqp_url, embedded=None, name=name)
    await bus.connect()
    node = make(bus)
    try:
        await node.start()
        _log.warning("node started", node=name)
        await _until_signalled()
    finally:
        await node.stop()
        await bus.close()
        _log.warning("node stopped", node=name)


async def serve_host(
    amqp_url: str,
    data_dir: Path,
    branch_ids: tuple[str, ...],
    config: HostConfig = DEFAULT_HOST_CONFIG,
) -> None:
    def make(bus: Bus) -> HostService:
        return HostService(bus, data_dir, branch_ids=branch_ids, config=config)

    await _serve("host", amqp_url, make)


async def serve_crypto(amqp_url: str, data_dir: Path) -> None:
    keys = load_crypto_keys(data_dir)
    await _serve("crypto", amqp_url, lambda bus: CryptoService(bus, Hsm(keys)))


async def run_branch(
    amqp_url: str,
    data_dir: Path,
    branch_id: str,
    *,
    terminals: int,
    seed: int,
    duration_s: float,
    max_requests: int | None,
) -> BranchReport:
    """Run one branch's workload for ``duration_s`` (stops early on a signal)."""
    bus = open_bus(amqp_url, embedded=None, name=f"branch-{branch_id}")
    await bus.connect()
    branch = Branch(bus, branch_id, data_dir=data_dir, terminals=terminals, seed=seed)
    try:
        await branch.start()
        run = asyncio.ensure_future(branch.run(duration_s, max_requests=max_requests))
        signalled = asyncio.ensure_future(_until_signalled())
        await asyncio.wait({run, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if not run.done():
            run.cancel()
            raise SystemExit(130)
        return run.result()
    finally:
        await branch.stop()
        await bus.close()


async def serve_echo(amqp_url: str, branch_ids: tuple[str, ...]) -> None:
    """The echo host (see :mod:`branchnet.echo`): the bus's throughput ceiling."""
    from branchnet.echo import EchoHost

    await _serve("echo", amqp_url, lambda bus: EchoHost(bus, branch_ids=branch_ids))
