"""A branch: terminals, PIN pads, the workload model and the request client.

Public API: :class:`Branch` (run a branch's workload against the host), :class:`RequestClient`
(batched, correlated, retried requests), :class:`BranchState` (durable counters), the workload
model, and the branch node's exceptions.
"""

from __future__ import annotations

from branch_node.branch import Branch, BranchReport, BranchStatistics, PinPadLoader
from branch_node.client import ClientConfig, ClientStatistics, RequestClient
from branch_node.desk import Desk
from branch_node.errors import (
    BranchError,
    BranchNotRegistered,
    ClientClosed,
    RequestTimeout,
    StateError,
)
from branch_node.resident_id import is_valid_resident_id
from branch_node.state import BranchState, Counter
from branch_node.terminal import TIMEOUT, Outcome, PinEncryptor, Terminal
from branch_node.workload import Intent, Mix, WorkloadConfig, WorkloadModel

__all__ = [
    "TIMEOUT",
    "Branch",
    "BranchError",
    "BranchNotRegistered",
    "BranchReport",
    "BranchState",
    "BranchStatistics",
    "ClientClosed",
    "ClientConfig",
    "ClientStatistics",
    "Counter",
    "Desk",
    "Intent",
    "Mix",
    "Outcome",
    "PinEncryptor",
    "PinPadLoader",
    "RequestClient",
    "RequestTimeout",
    "StateError",
    "Terminal",
    "WorkloadConfig",
    "WorkloadModel",
    "is_valid_resident_id",
]
