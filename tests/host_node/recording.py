"""A recorded host data directory for journal tests: a short simulation's store and keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from branchnet.simulate import SimulationConfig, simulate


async def record_network(data_dir: Path, requests: int = 200) -> Path:
    """Run a short simulation into ``data_dir``; it must reconcile."""
    config = SimulationConfig(
        branches=2, terminals=2, duration_s=60, max_requests=requests, data_dir=data_dir
    )
    report = await simulate(config)
    assert report["reconciliation"]["ok"], report["reconciliation"]
    return data_dir


def private_copy(recorded: Path, target: Path) -> Path:
    """A copy of a recorded data directory, free to tamper with."""
    shutil.copytree(recorded, target)
    return target


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``branchnet`` in a process of its own (its logging setup stays out of the tests)."""
    command = [sys.executable, "-m", "branchnet.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
