"""Exceptions of the host node.

    BranchnetError (common.errors)
    ├── HostError          the host cannot go on as configured
    │   └── StoreError     the ledger store cannot be opened or written
    │       └── StoreCorrupt   it is damaged at rest (host_node.integrity)
    └── FrameError (common.errors)
        └── FrameRefused   a request frame failed a security check (host_node.guard)

Bad input is not an exception here: it becomes a result code or a dead-lettered message.
Messages never carry PINs, PIN blocks, verification values or identity numbers.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from common.errors import BranchnetError, FrameError

if TYPE_CHECKING:
    from host_node.guard import Refusal


class HostError(BranchnetError):
    """The host cannot go on as configured."""


class StoreError(HostError):
    """The ledger store cannot be opened or written."""


class FrameRefused(FrameError):
    """A frame failed a security check; the text is a reason safe to log and dead-letter.

    ``sender`` is the branch the header claims (None when unreadable), ``sequence`` its frame
    sequence when known.
    """

    def __init__(
        self,
        refusal: Refusal,
        reason: str,
        *,
        sender: str | None = None,
        sequence: int | None = None,
    ) -> None:
        super().__init__(f"{refusal.value}: {reason}")
        self.refusal = refusal
        self.sender = sender
        self.sequence = sequence


class StoreCorrupt(StoreError):
    """The store is damaged at rest; ``first_bad`` names the first bad journal entry if known."""

    def __init__(self, message: str, *, first_bad: int | None = None) -> None:
        super().__init__(message)
        self.first_bad = first_bad


def defect_reason(error: BaseException) -> str:
    """The reason a record or frame is declined or dead-lettered with when handling it raised
    unexpectedly (a defect): the exception's type only, as its text may carry request data."""
    return f"unexpected: {type(error).__name__}"


def defect_site(error: BaseException) -> str:
    """Where a defect was raised (``file:line in function``), to log in place of its text."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
