"""Exceptions the branch node raises.

    BranchnetError                 (common.errors)
    └── BranchError                anything the branch node raises on purpose
        ├── RequestTimeout         no reply after every retry
        ├── ClientClosed           the request client is stopped (or was never started)
        ├── BranchNotRegistered    the host has no binding for this branch's routing key
        └── StateError             the durable branch state file cannot be used

Messages name request ids and terminals, never PINs, PIN blocks or full card numbers.
"""

from __future__ import annotations

from common.errors import BranchnetError


class BranchError(BranchnetError):
    """Root of the branch node's exceptions."""


class RequestTimeout(BranchError):
    """The host did not answer a request, however often it was sent."""

    def __init__(self, request_id: str, attempts: int) -> None:
        super().__init__(f"no reply to {request_id} after {attempts} attempts")
        self.request_id = request_id
        self.attempts = attempts


class ClientClosed(BranchError):
    """The request client is not running."""


class BranchNotRegistered(BranchError):
    """Publishing found no queue bound to this branch: the host does not know it."""

    def __init__(self, branch_id: str) -> None:
        super().__init__(
            f"branch {branch_id} is not registered with the host: "
            f"no queue is bound to its routing key on the requests exchange"
        )
        self.branch_id = branch_id


class StateError(BranchError):
    """The branch state file is corrupt or belongs to another branch."""
