"""Exceptions shared by every node.

    BranchnetError
    ├── FrameError            a frame that cannot be decoded (bad header, size, count)
    ├── BusError              the message bus failed
    │   ├── UnroutableError   the broker had nowhere to deliver a published message
    │   └── BusClosedError    the bus was used after it was closed
    └── ConfigError           settings or key files that cannot be used

Messages never carry PINs, PIN blocks or key material.
"""

from __future__ import annotations


class BranchnetError(Exception):
    """Root of every exception branchnet raises on purpose."""


class FrameError(BranchnetError):
    """A frame could not be decoded; the text is a reason safe to log and dead-letter."""


class BusError(BranchnetError):
    """The message bus failed."""


class UnroutableError(BusError):
    """A published message matched no queue."""


class BusClosedError(BusError):
    """The bus was used after close()."""


class ConfigError(BranchnetError):
    """Settings or key files that cannot be used."""
