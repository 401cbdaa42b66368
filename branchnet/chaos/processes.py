"""Nodes as operating-system processes, so faults can be real: SIGKILL, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

#: How long a node gets to stop cleanly on SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0


class NodeProcesses:
    """Start, kill and restart ``branchnet crypto`` and ``branchnet host`` over RabbitMQ.

    Each node's output goes to ``<data_dir>/logs/<node>.log``.
    """

    def __init__(
        self, amqp_url: str, data_dir: Path, branches: int, *, crypto_timeout_s: float = 1.5
    ) -> None:
        self.data_dir = data_dir
        self.branches = branches
        self.crypto_timeout_s = crypto_timeout_s
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

    def _command(self, node: str) -> list[str]:
        if node == "host":
            return ["host", "--branches", str(self.branches)]
        return [node]

    def start(self, node: str) -> None:
        """Start ``node`` (``host`` or ``crypto``) unless it runs."""
        if node in self.running and self.running[node].poll() is None:
            return
        with (self.logs / f"{node}.log").open("ab") as log:  # the child keeps its own copy
            self.running[node] = subprocess.Popen(
                [sys.executable, "-m", "branchnet.cli", *self._command(node)],
                env=self.env,
                stdout=log,
                stderr=log,
            )

    def kill(self, node: str) -> None:
        """SIGKILL: no drain, no clean close, exactly like a machine losing power."""
        process = self.running.pop(node)
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)

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
