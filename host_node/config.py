"""The host's tunables: a small immutable value (httpx ``_config.py`` style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.settings import Settings, load_settings
from host_node.policy import Policy

#: SQLite ``PRAGMA synchronous`` modes the store accepts.
Synchronous = Literal["FULL", "NORMAL", "OFF"]
#: Who verifies PINs: the crypto node (default) or the host itself (the weaker option).
PinMode = Literal["crypto", "host"]
#: How a new PIN is recorded.
PinMethod = Literal["ibm3624", "visa_pvv"]
#: Replication to the standby: none, answer after the standby holds a batch, or at once.
ReplicationMode = Literal["off", "sync", "async"]
#: What a sync primary does when the standby stops confirming: stop answering, or go async.
StandbyLost = Literal["stop", "async"]


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
        pin_method: how new PINs are recorded: IBM 3624 offset (default) or Visa PVV.
        pin_mode: ``crypto`` asks the crypto node; ``host`` verifies in the host process with
            its own key file (see :mod:`host_node.pin_local`; weaker, for a setup without one).
        checkpoint_every: sign a journal checkpoint once this many entries wait for one.
        checkpoint_interval_s: ... or once the oldest waiting entry is this many seconds old.
        replication: ship batches to the standby (``sync``: answer once it holds them).
        standby_lost: in sync mode, when the standby is silent: ``stop`` or ``async``.
        standby_timeout_s: how long a sync batch waits for the standby's confirmation.
        policy: the rules' thresholds and daily limits.
    """

    max_batch_records: int = 1024
    prefetch: int = 256
    crypto_timeout_s: float = 5.0
    synchronous: Synchronous = "FULL"
    queue_bound: int = 512
    pin_method: PinMethod = "ibm3624"
    pin_mode: PinMode = "crypto"
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 2.0
    replication: ReplicationMode = "off"
    standby_lost: StandbyLost = "async"
    standby_timeout_s: float = 5.0
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
        if self.checkpoint_every < 1 or self.checkpoint_interval_s <= 0:
            raise ValueError("checkpoints need a positive size and interval")
        if self.synchronous not in ("FULL", "NORMAL", "OFF"):
            raise ValueError(f"unknown synchronous mode {self.synchronous!r}")
        if self.pin_method not in ("ibm3624", "visa_pvv"):
            raise ValueError(f"unknown PIN method {self.pin_method!r}")
        if self.pin_mode not in ("crypto", "host"):
            raise ValueError(f"unknown PIN mode {self.pin_mode!r}")


def pin_config(settings: Settings | None = None) -> HostConfig:
    """The default config with the PIN settings of the environment (``BRANCHNET_PIN_MODE``,
    ``BRANCHNET_PIN_METHOD``, ``BRANCHNET_CRYPTO_TIMEOUT_S``)."""
    settings = settings or load_settings()
    return HostConfig(
        pin_method=settings.pin_method,
        pin_mode=settings.pin_mode,
        crypto_timeout_s=settings.crypto_timeout_s,
    )
