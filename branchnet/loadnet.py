"""The network a load test drives.

Three kinds of target:

- ``embedded``: a crypto node and a host in this process on the embedded bus (the generator
  shares their event loop and CPU; the quickest start, not the fastest host);
- ``rabbitmq``: a RabbitMQ — a private node started for the run, or the one ``amqp_url``
  names — with the crypto node and the host each in a process of its own, as deployed;
- ``external``: a network already running at ``amqp_url``; the generator only sends (it needs
  the network's data directory for the PIN pad keys and its registered branch ids).

Run as ``python -m branchnet.loadnet host ...`` this module is the host process of a
``rabbitmq`` target, with the host's batching tunables on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from branchnet.buses import open_bus
from branchnet.failover import prepare_standby
from branchnet.network import (
    DEFAULT_HOST_CONFIG,
    Network,
    NetworkConfig,
    ensure_keys,
    standby_dir,
)
from common.bus import Bus
from common.errors import BranchnetError, BusError, ConfigError
from common.topology import CORE, CRYPTO_COMMANDS, DR_REPLICATION, HOST_REQUESTS
from host_node import HostConfig

TargetKind = Literal["embedded", "rabbitmq", "external"]
#: ``host``: the real host; ``echo``: the echo host (a ``rabbitmq`` target only).
HostKind = Literal["host", "echo"]
#: How long node processes get to come up, and to stop after SIGTERM.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """Where the load goes.

    Args:
        kind: see the module docstring.
        data_dir: keys, branch counters and (for started networks) the host's store.
        branch_ids: the branches the generator speaks for (registered with the host).
        terminals: PIN pads per branch (keys are made for that many when missing).
        amqp_url: the broker of a ``rabbitmq`` target (None: start a private node) or of an
            ``external`` one.
        host_config: the host's batching tunables (started networks only).
        host: the real host, or the echo host that answers every record at once with ``00``
            (a ``rabbitmq`` target only; no crypto node then).
        standby: a DR standby (in ``<data_dir>/standby``) to which the host replicates in
            sync mode: it answers once the standby holds the batch (started networks only).
    """

    kind: TargetKind
    data_dir: Path
    branch_ids: tuple[str, ...]
    terminals: int
    amqp_url: str | None = None
    host_config: HostConfig = DEFAULT_HOST_CONFIG
    host: HostKind = "host"
    standby: bool = False

    def __post_init__(self) -> None:
        if self.kind == "external" and self.amqp_url is None:
            raise ConfigError("an external network needs its AMQP URL")
        if self.host == "echo" and self.kind != "rabbitmq":
            raise ConfigError("the echo host runs on a rabbitmq target only")
        if self.standby and (self.kind == "external" or self.host == "echo"):
            raise ConfigError("a standby comes with a network the load test starts, real host")


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used (None when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (None when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


@dataclass(slots=True)
class _NodeProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass(slots=True)
class LoadTarget:
    """A started (or found) network; use as ``async with LoadTarget(config) as target``."""

    config: TargetConfig
    amqp_url: str | None = None
    _network: Network | None = None
    _broker_dir: Path | None = None
    _nodes: list[_NodeProcess] = field(default_factory=list)
    _buses: list[Bus] = field(default_factory=list)
    _probe: Bus | None = None

    async def __aenter__(self) -> LoadTarget:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if config.kind == "external":
            self.amqp_url = config.amqp_url
            return
        ensure_keys(config.data_dir, config.branch_ids, config.terminals)
        if config.kind == "embedded":
            self._network = Network(
                NetworkConfig(
                    data_dir=config.data_dir,
                    branch_ids=config.branch_ids,
                    terminals=config.terminals,
                    run_branches=False,
                    host_config=config.host_config,
                    standby=config.standby,
                )
            )
            await self._network.start()
            return
        url: str = (
            config.amqp_url if config.amqp_url else await asyncio.to_thread(self._start_broker)
        )
        self.amqp_url = url
        self._start_nodes(url)
        await self._await_nodes()

    async def stop(self) -> None:
        for bus in reversed(self._buses):
            with contextlib.suppress(Exception):
                await bus.close()
        self._buses.clear()
        self._probe = None
        if self._network is not None:
            await self._network.stop()
            self._network = None
        for node in reversed(self._nodes):  # the host first: it may need the crypto node
            await asyncio.to_thread(_terminate, node)
        self._nodes.clear()
        if self._broker_dir is not None:
            from branchnet.broker import stop_broker

            await asyncio.to_thread(stop_broker, self._broker_dir)
            shutil.rmtree(self._broker_dir, ignore_errors=True)
            self._broker_dir = None

    def open_bus(self, name: str) -> Bus:
        """A new, not yet connected, bus to the target (closed when the target stops)."""
        if self._network is not None:
            return self._network.open_bus(name)
        bus = open_bus(self.amqp_url, embedded=None, name=name)
        self._buses.append(bus)
        return bus

    async def requests_waiting(self) -> int:
        """Request frames waiting in ``host.requests`` (not yet delivered to the host)."""
        if self._probe is None:
            self._probe = self.open_bus("loadtest-probe")
            await self._probe.connect()
        try:
            return (await self._probe.queue_stats(HOST_REQUESTS)).messages
        except BusError:
            return 0

    def host_rss_mb(self) -> float | None:
        """The host's resident memory: its process's, or this process's when embedded."""
        pid = self._host_pid()
        return rss_mb(pid) if pid is not None else None

    def host_cpu_s(self) -> float | None:
        """CPU seconds the host's process has used (this process's when embedded)."""
        pid = self._host_pid()
        return cpu_s(pid) if pid is not None else None

    def _host_pid(self) -> int | None:
        if self._network is not None:
            return os.getpid()
        host = next((n for n in self._nodes if n.name in ("host", "echo")), None)
        return host.process.pid if host is not None else None

    def describe(self) -> dict[str, object]:
        """The target, for a report (no credentials)."""
        from common.amqp_bus import redact_url

        return {
            "kind": self.config.kind,
            "amqp_url": redact_url(self.amqp_url) if self.amqp_url else None,
            "private_broker": self._broker_dir is not None,
            "node_processes": [n.name for n in self._nodes],
            "branches": len(self.config.branch_ids),
            "terminals": self.config.terminals,
            "host_rss": "host process" if self._nodes else "this process (host in it)",
        }

    # -- a rabbitmq target -------------------------------------------------------------------

    def _start_broker(self) -> str:
        from branchnet.broker import ensure_rabbitmq_installed, start_broker

        ensure_rabbitmq_installed()
        base_dir = Path(tempfile.mkdtemp(prefix="branchnet-loadtest-rabbitmq-"))
        base_dir.chmod(0o755)  # the node runs as user rabbitmq
        self._broker_dir = base_dir
        return start_broker(base_dir).amqp_url

    def _start_nodes(self, amqp_url: str) -> None:
        config = self.config
        env = dict(os.environ)
        env.update(
            BRANCHNET_AMQP_URL=amqp_url,
            BRANCHNET_DATA_DIR=str(config.data_dir),
            BRANCHNET_LOG_LEVEL=env.get("BRANCHNET_LOG_LEVEL", "warning"),
        )
        host = config.host_config
        branches = ["--branches", ",".join(config.branch_ids)]
        commands = {"crypto": [sys.executable, "-m", "branchnet.cli", "crypto"]}
        if config.standby:  # started before the host, which waits for its confirmations
            standby = standby_dir(config.data_dir)
            prepare_standby(config.data_dir, standby)
            commands["standby"] = [
                *(sys.executable, "-m", "branchnet.cli", "host", "--role", "standby"),
                *("--data-dir", str(standby), "--branches", str(len(config.branch_ids))),
            ]
        commands["host"] = [
            *(sys.executable, "-m", "branchnet.loadnet", "host", *branches),
            *("--max-batch-records", str(host.max_batch_records)),
            *("--prefetch", str(host.prefetch), "--synchronous", host.synchronous),
            *(("--replicate-sync",) if config.standby else ()),
        ]
        if config.host == "echo":
            commands = {"echo": [sys.executable, "-m", "branchnet.loadnet", "echo", *branches]}
        logs = config.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        for name, command in commands.items():
            path = logs / f"{name}.log"
            log = path.open("ab")
            process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            self._nodes.append(_NodeProcess(name, process, log, path))

    async def _await_nodes(self) -> None:
        """Wait until the crypto node and the host consume their queues."""
        assert self.amqp_url is not None
        bus = open_bus(self.amqp_url, embedded=None, name="loadtest-probe")
        await bus.connect()
        try:
            await bus.declare(CORE)
            deadline = time.monotonic() + START_TIMEOUT_S
            echo = self.config.host == "echo"
            queues = (HOST_REQUESTS,) if echo else (CRYPTO_COMMANDS, HOST_REQUESTS)
            if self.config.standby:
                queues = (DR_REPLICATION, *queues)
            for queue in queues:
                while True:
                    for node in self._nodes:
                        if node.process.poll() is not None:
                            raise BranchnetError(
                                f"the {node.name} node exited ({node.process.returncode}):\n"
                                + node.tail()
                            )
                    with contextlib.suppress(BusError):
                        if (await bus.queue_stats(queue)).consumers > 0:
                            break
                    if time.monotonic() > deadline:
                        raise BranchnetError(f"no consumer on {queue} after {START_TIMEOUT_S} s")
                    await asyncio.sleep(0.1)
        finally:
            await bus.close()


def _terminate(node: _NodeProcess) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
    node.log.close()


def _host_main(argv: Sequence[str]) -> int:
    from branchnet.nodes import serve_host
    from common.logs import configure_logging
    from common.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m branchnet.loadnet host")
    parser.add_argument("--branches", required=True, help="registered branch ids, comma separated")
    parser.add_argument("--max-batch-records", type=int, default=1024)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default="FULL")
    parser.add_argument(
        "--replicate-sync", action="store_true", help="answer once the standby holds a batch"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.amqp_url is None or settings.data_dir is None:
        print("BRANCHNET_AMQP_URL and BRANCHNET_DATA_DIR are required", file=sys.stderr)
        return 2
    config = HostConfig(
        max_batch_records=args.max_batch_records,
        prefetch=args.prefetch,
        queue_bound=max(512, args.prefetch),
        synchronous=args.synchronous,
        replication="sync" if args.replicate_sync else "off",
        standby_lost="stop",  # RPO 0: never an answer the standby does not hold
    )
    asyncio.run(
        serve_host(
            settings.amqp_url.get_secret_value(),
            settings.data_dir,
            tuple(args.branches.split(",")),
            config,
        )
    )
    return 0


def _echo_main(argv: Sequence[str]) -> int:
    from branchnet.nodes import serve_echo
    from common.logs import configure_logging
    from common.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m branchnet.loadnet echo")
    parser.add_argument("--branches", required=True, help="registered branch ids, comma separated")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.amqp_url is None:
        print("BRANCHNET_AMQP_URL is required", file=sys.stderr)
        return 2
    asyncio.run(serve_echo(settings.amqp_url.get_secret_value(), tuple(args.branches.split(","))))
    return 0


if __name__ == "__main__":
    mains = {"host": _host_main, "echo": _echo_main}
    if sys.argv[1:2] not in (["host"], ["echo"]):
        print("usage: python -m branchnet.loadnet host|echo --branches 0001,...", file=sys.stderr)
        sys.exit(2)
    sys.exit(mains[sys.argv[1]](sys.argv[2:]))
