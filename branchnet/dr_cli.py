"""Disaster recovery on the command line: ``branchnet host --role standby``, ``host promote``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from common.errors import ConfigError
from host_node.config import HostConfig


def add_host_flags(host: argparse.ArgumentParser) -> None:
    """Replication and promotion flags of ``branchnet host``."""
    host.add_argument(
        "action",
        nargs="?",
        choices=["serve", "promote"],
        default="serve",
        help="serve (default), or promote: make this (stopped) standby the primary",
    )
    host.add_argument(
        "--replicate",
        choices=["sync", "async"],
        help="ship the journal to a standby: sync (answer once it holds a batch) or async",
    )
    host.add_argument(
        "--standby-lost",
        choices=["stop", "async"],
        default="async",
        help="sync mode, standby silent: stop answering, or degrade to async (default)",
    )
    host.add_argument(
        "--standby-timeout",
        type=float,
        default=5.0,
        help="seconds a sync batch waits for the standby (default 5)",
    )
    host.add_argument(
        "--resync-from",
        type=Path,
        help="standby: first copy a snapshot of the primary's store from this data directory",
    )


def run_host(
    args: argparse.Namespace, amqp_url: str, data_dir: Path, branch_ids: tuple[str, ...]
) -> int:
    from branchnet.nodes import serve_host, serve_standby

    if args.action == "promote":
        epoch = asyncio.run(_promote(amqp_url, data_dir))
        print(f"promoted: start `branchnet host --role primary` on {data_dir} (epoch {epoch})")
        return 0
    if args.role == "standby":
        if args.replicate is not None:
            raise ConfigError("--replicate is the primary's flag")
        if args.resync_from is not None:
            _resync(args.resync_from, data_dir)
        asyncio.run(serve_standby(amqp_url, data_dir))
        return 0
    config = HostConfig(
        replication=args.replicate or "off",
        standby_lost=args.standby_lost,
        standby_timeout_s=args.standby_timeout,
    )
    asyncio.run(serve_host(amqp_url, data_dir, branch_ids, config))
    return 0


def _resync(primary_dir: Path, data_dir: Path) -> None:
    from host_node.store import copy_store, ledger_path

    copy_store(ledger_path(primary_dir), ledger_path(data_dir))
    print(f"standby store replaced by a snapshot of {primary_dir}")


async def _promote(amqp_url: str, data_dir: Path) -> int:
    from branchnet.buses import open_bus
    from host_node.standby import promote

    bus = open_bus(amqp_url, embedded=None, name="promote")
    await bus.connect()
    try:
        return await promote(bus, data_dir)
    finally:
        await bus.close()
