"""Disaster recovery on the command line: ``branchnet host --role standby``, ``host promote``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path

from common.errors import ConfigError
from host_node.config import pin_config


def add_host_flags(host: argparse.ArgumentParser) -> None:
    """Replication and promotion flags of ``branchnet host``."""
    host.add_argument(
        "action",
        nargs="?",
        choices=["serve", "promote"],
        default="serve",
        help="serve (default), or promote: make the standby on --data-dir the primary (a "
        "running standby promotes itself in place and serves; a stopped one is promoted offline)",
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
        running = _running_standby(data_dir)
        if running is not None:
            epoch = _promote_running(running, data_dir)
            print(f"promoted in place: process {running} now serves as primary (epoch {epoch})")
            return 0
        epoch = asyncio.run(_promote(amqp_url, data_dir))
        print(f"promoted: start `branchnet host --role primary` on {data_dir} (epoch {epoch})")
        return 0
    if args.role == "standby":
        if args.replicate is not None:
            raise ConfigError("--replicate is the primary's flag")
        if args.resync_from is not None:
            _resync(args.resync_from, data_dir)
        asyncio.run(serve_standby(amqp_url, data_dir, branch_ids, pin_config()))
        return 0
    config = dataclasses.replace(
        pin_config(),
        replication=args.replicate or "off",
        standby_lost=args.standby_lost,
        standby_timeout_s=args.standby_timeout,
    )
    asyncio.run(serve_host(amqp_url, data_dir, branch_ids, config))
    return 0


def _running_standby(data_dir: Path) -> int | None:
    """The process id of a standby serving ``data_dir``, if one runs."""
    from branchnet.nodes import standby_pid_path

    try:
        pid = int(standby_pid_path(data_dir).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _promote_running(pid: int, data_dir: Path, timeout_s: float = 60.0) -> int:
    """Ask the standby process ``pid`` to promote itself; wait until its store has a new epoch.

    Raises:
        HostError: it did not promote in time (see its log: out of sync?).
    """
    from host_node.errors import HostError
    from host_node.store import connect_read_only, ledger_path, read_meta

    def epoch() -> int:
        connection = connect_read_only(ledger_path(data_dir))
        try:
            return int(read_meta(connection, "epoch") or 0)
        finally:
            connection.close()

    before = epoch()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = epoch()
        if now > before:
            return now
        try:
            os.kill(pid, 0)
        except OSError:
            break
    raise HostError("the standby did not promote itself (see its log: out of sync?)")


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
