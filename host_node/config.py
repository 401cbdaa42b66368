"""The host's tunables: a small immutable value (httpx ``_config.py`` style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from host_node.policy import Policy

#: SQLite ``PRAGMA synchronous`` modes the store accepts.
Synchronous = Literal["FULL", "NORMAL", "OFF"]


@dataclass(frozen=True, slots=True)
class HostConfig:
    """How the host batches, waits and commits.

    Attributes:
        max_batch_records: stop adding frames to a batch once it holds this many records (a
            single larger frame still makes one batch).
        prefetch: unacknowledged request frames the bus may hand the host at once.
        crypto_timeout_s: how long a batch waits for the crypto node before answering ``91``.
        synchronous: SQLite's ``synchronous`` mode; ``FULL`` survives power loss.
        queue_bound: request frames waiting in the host's inbox before the consumer pushes back.
        policy: the rules' thresholds and daily limits.
    """

    max_batch_records: int = 1024
    prefetch: int = 256
    crypto_timeout_s: float = 5.0
    synchronous: Synchronous = "FULL"
    queue_bound: int = 512
    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        if self.max_batch_records < 1:
            raise ValueError("max_batch_records must be at least 1")
        if self.prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if self.queue_bound < self.prefetch:
            raise ValueError("queue_bound must hold at least prefetch frames")
        if self.crypto_timeout_s <= 0:
            raise ValueError("crypto_timeout_s must be positive")
        if self.synchronous not in ("FULL", "NORMAL", "OFF"):
            raise ValueError(f"unknown synchronous mode {self.synchronous!r}")
