"""Exceptions of the host node.

    BranchnetError (common.errors)
    └── HostError          the host cannot go on as configured
        └── StoreError     the ledger store cannot be opened or written

Bad input is not an exception here: it becomes a result code or a dead-lettered message.
Messages never carry PINs, PIN blocks, verification values or identity numbers.
"""

from __future__ import annotations

from common.errors import BranchnetError


class HostError(BranchnetError):
    """The host cannot go on as configured."""


class StoreError(HostError):
    """The ledger store cannot be opened or written."""
