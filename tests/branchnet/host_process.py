"""``branchnet host`` as a real process for crash tests: start it, kill -9 it, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class HostProcess:
    """One host process over RabbitMQ; its output goes to ``log``."""

    def __init__(self, amqp_url: str, data_dir: Path, log: Path, *extra: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "branchnet.cli",
            "host",
            "--amqp-url",
            amqp_url,
            "--data-dir",
            str(data_dir),
            "--branches",
            "1",
            *extra,
        ]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=out)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no shutdown checkpoint, whatever it was doing."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
            self.kills += 1

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown. Returns the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.process = None
        return status

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
