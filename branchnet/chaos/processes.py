"""Nodes as operating-system processes, so faults can be real: SIGKILL, restart, promotion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from branchnet.failover import prepare_standby
from branchnet.network import standby_dir
from host_node.config import StandbyLost

#: How long a node gets to stop cleanly on SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0


class NodeProcesses:
    """Start, kill and restart ``branchnet crypto`` and ``branchnet host`` over RabbitMQ.

    With a ``standby_lost`` policy there is a ``standby`` node too (``branchnet host --role
    standby`` on ``<data_dir>/standby``) and the host replicates to it in sync mode. Each
    node's output goes to ``<data_dir>/logs/<node>.log``.
    """

    def __init__(
        self,
        amqp_url: str,
        data_dir: Path,
        branches: int,
        *,
        crypto_timeout_s: float = 1.5,
        standby_lost: StandbyLost | None = None,
        standby_timeout_s: float = 1.0,
    ) -> None:
        self.data_dir = data_dir
        self.branches = branches
        self.crypto_timeout_s = crypto_timeout_s
        #: With a policy, the host replicates in sync mode to a ``standby`` node.
        self.standby_lost = standby_lost
        self.standby_timeout_s = standby_timeout_s
        #: The primary's data directory: the standby's once it was promoted.
        self.host_dir = data_dir
        self.standby_dir = standby_dir(data_dir)
        if standby_lost is not None:
            prepare_standby(data_dir, self.standby_dir)
        self.env = {
            **os.environ,
            "BRANCHNET_AMQP_URL": amqp_url,
            "BRANCHNET_DATA_DIR": str(data_dir),
            # a crypto node that is gone must turn into prompt 91 answers
            "BRANCHNET_CRYPTO_TIMEOUT_S": str(crypto_timeout_s),
        }
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, node: str) -> list[str]:
        """The ``branchnet`` arguments that run ``node`` (``host``, ``standby`` or ``crypto``)."""
        branches = ["--branches", str(self.branches)]
        if node == "standby":
            return ["host", "--role", "standby", "--data-dir", str(self.standby_dir), *branches]
        if node != "host":
            return [node]
        command = ["host", "--data-dir", str(self.host_dir), *branches]
        if self.standby_lost is not None and self.host_dir == self.data_dir:
            command += ["--replicate", "sync", "--standby-lost", self.standby_lost]
            command += ["--standby-timeout", str(self.standby_timeout_s)]
        return command

    def start_all(self) -> None:
        """The crypto node, the standby (when there is one), then the host."""
        self.start("crypto")
        if self.standby_lost is not None:
            self.start("standby")
        self.start("host")

    def promoted(self) -> None:
        """The standby promoted itself in place: its process is the host from now on."""
        self.running["host"] = self.running.pop("standby")
        self.host_dir = self.standby_dir

    def start(self, node: str) -> None:
        """Start ``node`` unless it runs."""
        if node in self.running and self.running[node].poll() is None:
            return
        with (self.logs / f"{node}.log").open("ab") as log:  # the child keeps its own copy
            self.running[node] = subprocess.Popen(
                [sys.executable, "-m", "branchnet.cli", *self.command(node)],
                env=self.env,
                stdout=log,
                stderr=log,
            )

    def kill(self, node: str) -> None:
        """SIGKILL: no drain, no clean close, exactly like a machine losing power."""
        process = self.running.pop(node)
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, node: str) -> int:
        """SIGTERM ``node`` and wait (SIGKILL after :data:`STOP_TIMEOUT_S`); its exit status."""
        process = self.running.pop(node)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        """SIGTERM every node (they finish the batch in hand), SIGKILL stragglers."""
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()

    def __enter__(self) -> NodeProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
