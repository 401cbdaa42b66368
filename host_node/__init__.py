"""The central host: the ledger store, the rules, PIN routing, the journal, reconciliation.

Run :class:`HostService` on a bus; after a run, :func:`check_store` and :func:`journal_index`
read the store it left behind.
"""

from __future__ import annotations

from host_node.config import HostConfig
from host_node.errors import HostError, StoreError
from host_node.journal import ChainHead, JournalEntry, verify_chain
from host_node.ledger import AccountState, Posting
from host_node.reconcile import (
    CheckResult,
    JournalSummary,
    check_store,
    journal_index,
    journal_length,
)
from host_node.service import HostService, HostStatistics
from host_node.store import ledger_path

__all__ = [
    "AccountState",
    "ChainHead",
    "CheckResult",
    "HostConfig",
    "HostError",
    "HostService",
    "HostStatistics",
    "JournalEntry",
    "JournalSummary",
    "Posting",
    "StoreError",
    "check_store",
    "journal_index",
    "journal_length",
    "ledger_path",
    "verify_chain",
]
