"""Running one node as its own process over RabbitMQ until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from branch_node import Branch, BranchReport
from branch_node.session import BranchSession
from branchnet.buses import open_bus
from branchnet.observability import Exposed, start_metrics
from common.bus import Bus
from common.errors import BusError
from common.heap import settle
from common.logs import get_logger
from common.settings import load_settings
from common.topology import HOST_REQUESTS
from crypto_node import INLINE_COMMANDS, CryptoService, Hsm, load_crypto_keys
from crypto_node.lmk import Lmk
from host_node import HostConfig, HostService
from host_node.events import host_events
from host_node.guard import Guard
from host_node.standby import StandbyService, promote

_log = get_logger("branchnet.nodes")


def _stop_signal() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets. Installed before a node connects, so a signal that
    arrives while it starts still stops it cleanly (once started) rather than killing it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _serve(name: str, amqp_url: str, make: Callable[[Bus], Any]) -> None:
    """Connect, start the node ``make`` builds, wait for a signal, stop cleanly."""
    stop = _stop_signal()
    bus = open_bus(amqp_url, embedded=None, name=name)
    await bus.connect()
    node = make(bus)
    exposed = Exposed(await start_metrics(load_settings().metrics_port))
    try:
        await node.start()
        exposed.node(name, node)
        settle()
        _log.warning("node started", node=name)
        await stop.wait()
    finally:
        exposed.stopping(name)
        await node.stop()
        await bus.close()
        await exposed.close()
        _log.warning("node stopped", node=name)


async def serve_host(
    amqp_url: str,
    data_dir: Path,
    branch_ids: tuple[str, ...],
    config: HostConfig = HostConfig(),  # noqa: B008 - an immutable value
) -> None:
    """Run a primary host; its events go out on a connection of their own, so that reply
    frames and PIN commands never queue behind a burst of events."""
    events_bus = open_bus(amqp_url, embedded=None, name="host-events")
    await events_bus.connect()
    try:
        await _serve(
            "host",
            amqp_url,
            lambda bus: HostService(
                bus,
                data_dir,
                branch_ids=branch_ids,
                config=config,
                guard=Guard.load(data_dir, branch_ids),
                events=host_events(events_bus),
            ),
        )
    finally:
        await events_bus.close()


def standby_pid_path(data_dir: Path) -> Path:
    """Where a running standby writes its process id (``host promote`` signals it)."""
    return data_dir / "host" / "standby.pid"


async def serve_standby(
    amqp_url: str,
    data_dir: Path,
    branch_ids: tuple[str, ...],
    config: HostConfig = HostConfig(),  # noqa: B008 - an immutable value
) -> None:
    """Run a standby until SIGINT/SIGTERM; on SIGUSR1 promote it in place and serve as primary."""
    stop = _stop_signal()
    bus = open_bus(amqp_url, embedded=None, name="standby")
    await bus.connect()
    standby = StandbyService(bus, data_dir)
    pid_path = standby_pid_path(data_dir)
    host: HostService | None = None
    try:
        await standby.start()
        pid_path.write_text(f"{os.getpid()}\n")
        settle()
        _log.warning("node started", node="standby")
        promotion = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, promotion.set)
        stopped = asyncio.ensure_future(stop.wait())
        promoted = asyncio.ensure_future(promotion.wait())
        await asyncio.wait({stopped, promoted}, return_when=asyncio.FIRST_COMPLETED)
        promoted.cancel()
        if stopped.done():
            return
        await standby.stop()
        epoch = await promote(bus, data_dir, settle_s=0.1)
        pid_path.unlink(missing_ok=True)
        host = HostService(
            bus,
            data_dir,
            branch_ids=branch_ids,
            config=config,
            guard=Guard.load(data_dir, branch_ids),
        )
        await host.start()
        settle()
        _log.warning("node started", node="host", promoted_to_epoch=epoch)
        await stopped
    finally:
        pid_path.unlink(missing_ok=True)
        if host is not None:
            await host.stop()
        else:
            await standby.stop()
        await bus.close()
        _log.warning("node stopped", node="standby" if host is None else "host")


async def serve_crypto(amqp_url: str, data_dir: Path, lmk: Lmk | None = None) -> None:
    keys = load_crypto_keys(data_dir, lmk)
    await _serve(
        "crypto",
        amqp_url,
        lambda bus: CryptoService(bus, Hsm(keys), inline_commands=INLINE_COMMANDS),
    )


async def wait_for_host(bus: Bus, timeout_s: float = 120.0) -> None:
    """Wait until a host consumes ``host.requests`` (it binds branch keys when it starts).

    Raises:
        BusError: no host appeared within ``timeout_s``.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            if (await bus.queue_stats(HOST_REQUESTS)).consumers > 0:
                return
        except BusError:
            pass  # not declared yet: no host has started on this broker
        if asyncio.get_running_loop().time() > deadline:
            raise BusError(f"no host consumed {HOST_REQUESTS} within {timeout_s:.0f} s")
        await asyncio.sleep(0.25)


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
    """Run one branch's workload for ``duration_s``; on a signal each terminal finishes the
    customer it is serving and the run ends early."""
    stop = _stop_signal()
    bus = open_bus(amqp_url, embedded=None, name=f"branch-{branch_id}")
    await bus.connect()
    session = BranchSession.load(data_dir, branch_id)
    branch = Branch(
        bus, branch_id, data_dir=data_dir, terminals=terminals, seed=seed, session=session
    )
    exposed = Exposed(await start_metrics(load_settings().metrics_port))
    try:
        await wait_for_host(bus)
        await branch.start()
        exposed.node(f"branch-{branch_id}", branch)
        settle()
        run = asyncio.ensure_future(branch.run(duration_s, max_requests=max_requests))
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait({run, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if not run.done():
            branch.wind_down()
        return await run
    finally:
        await branch.stop()
        await bus.close()
        await exposed.close()


async def serve_echo(amqp_url: str, branch_ids: tuple[str, ...]) -> None:
    """The echo host (see :mod:`branchnet.echo`): the bus's throughput ceiling."""
    from branchnet.echo import EchoHost

    await _serve("echo", amqp_url, lambda bus: EchoHost(bus, branch_ids=branch_ids))
