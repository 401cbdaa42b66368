"""Software PIN mode (``pin_mode = host``): the host verifies PINs itself.

The weaker of DOMAIN.md's two ways to protect the PIN, for a setup without a crypto node.
:class:`PinLocal` has :class:`~host_node.pin_client.PinClient`'s interface but runs the
commands on an in-process :class:`crypto_node.Hsm` — the same library code — with the host's
own key file: the key store and LMK components under ``keys_home/keys`` (the training setup's
files; a host in this mode must be given a copy). What is weaker: clear PINs and keys exist in
the host's memory, next to the ledger, and the master key's components sit on the host's disk;
a compromise of the host is a compromise of every PIN. The crypto node keeps them apart.

KSN replay marks are the host's own (``data_dir/host-pin/ksn-marks.json``).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.logs import get_logger
from common.pin_commands import HsmError, PinCommand, PinResponse
from crypto_node import Hsm, load_crypto_keys

_log = get_logger(__name__)


def local_marks_path(data_dir: Path) -> Path:
    """Where the host keeps the KSN marks of its software PIN mode."""
    return data_dir / "host-pin" / "ksn-marks.json"


class PinLocal:
    """Runs PIN commands in the host process (off the event loop, one batch at a time).

    Args:
        data_dir: the host's data directory (replay marks).
        keys_home: where the key files are (default ``data_dir``).
    """

    def __init__(self, data_dir: Path, *, keys_home: Path | None = None) -> None:
        self._data_dir = data_dir
        self._keys_home = keys_home or data_dir
        self._hsm: Hsm | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0

    def __repr__(self) -> str:
        return f"PinLocal(keys_home={str(self._keys_home)!r})"

    @property
    def pending(self) -> int:
        """Commands being run now."""
        return self._pending

    def command_ids(self) -> Iterator[str]:
        nonce = secrets.token_hex(4)
        return (f"{nonce}-{n}" for n in itertools.count(1))

    async def start(self) -> None:
        """Open the key file (raises ConfigError when there is none or it does not open)."""
        keys = load_crypto_keys(self._keys_home)
        self._hsm = Hsm(keys, replay_file=local_marks_path(self._data_dir))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-pin")

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def execute(self, commands: Sequence[PinCommand]) -> dict[str, PinResponse | None]:
        """Run ``commands``; each command id mapped to its response (None if it failed)."""
        if not commands:
            return {}
        if self._hsm is None or self._executor is None:
            return {command.command_id: None for command in commands}
        self._pending += len(commands)
        try:
            loop = asyncio.get_running_loop()
            responses = await loop.run_in_executor(
                self._executor, self._hsm.execute_batch, list(commands)
            )
        except Exception as error:
            _log.error("local pin batch failed", error=type(error).__name__)
            return {command.command_id: None for command in commands}
        finally:
            self._pending -= len(commands)
        return {r.command_id: None if r.error is HsmError.INTERNAL_ERROR else r for r in responses}
