"""The audit trail of personal-information queries (DOMAIN.md "Deposit principles and
confidentiality": querying must be permissioned and leave a trace).

Every ``customer_query`` the host answers leaves one :class:`AuditRecord` — who (staff id and
role, branch, terminal), when, which customer (account), the stated purpose and the result —
written before the reply leaves the host, so no answered query is without its trace. A
request the host sees again (a retry) is recorded once (by request id). Reading the trail is
itself recorded, and only auditors may read it (:func:`read_trail`).

The trail lives in ``host/audit.sqlite`` beside the ledger, written off the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.replies import Reply
from common.requests import CustomerQuery
from host_node.errors import HostError
from host_node.intake import Item

#: The role that may read the trail.
AUDITOR = "auditor"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    request_id  TEXT PRIMARY KEY,
    at          TEXT NOT NULL,
    staff_id    TEXT NOT NULL,
    role        TEXT NOT NULL,
    branch_id   TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    customer    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    result      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_reads (
    at       TEXT NOT NULL,
    staff_id TEXT NOT NULL,
    role     TEXT NOT NULL,
    granted  INTEGER NOT NULL
);
"""


class AuditDenied(HostError):
    """Someone without the auditor role asked to read the audit trail."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One personal-information query: who asked, when, about whom, why, and the answer."""

    request_id: str
    at: dt.datetime
    staff_id: str
    role: str
    branch_id: str
    terminal_id: str
    customer: str
    purpose: str
    result: str


def audit_path(data_dir: Path) -> Path:
    return data_dir / "host" / "audit.sqlite"


def records_of(
    items: Sequence[Item], replies: Sequence[Reply | None], at: dt.datetime
) -> list[AuditRecord]:
    """The audit records of a batch's answered customer queries (pure)."""
    records = []
    for item, reply in zip(items, replies, strict=True):
        request = item.record
        if reply is None or not isinstance(request, CustomerQuery):
            continue
        records.append(
            AuditRecord(
                request.request_id,
                at,
                request.teller_id,
                request.role,
                request.branch_id,
                request.terminal_id,
                request.account,
                request.purpose,
                reply.result.value,
            )
        )
    return records


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as error:
        raise HostError(f"cannot open the audit trail at {path}: {error}") from None
    return connection


class AuditTrail:
    """The host's writer of audit records (one thread, off the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        """Open (or create) the trail's file.

        Raises:
            HostError: it cannot be opened.
        """
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="host-audit")
        loop = asyncio.get_running_loop()
        self._connection = await loop.run_in_executor(self._writer, _connect, self.path)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        writer, self._writer = self._writer, None
        if writer is not None:
            if connection is not None:
                await asyncio.get_running_loop().run_in_executor(writer, connection.close)
            writer.shutdown(wait=True)

    async def record(self, records: Sequence[AuditRecord]) -> None:
        """Write ``records`` durably (a record already there is kept as it was)."""
        if not records:
            return
        if self._connection is None or self._writer is None:
            raise HostError("the audit trail is not open")
        connection, writer = self._connection, self._writer
        rows = [
            (
                r.request_id,
                r.at.isoformat(),
                r.staff_id,
                r.role,
                r.branch_id,
                r.terminal_id,
                r.customer,
                r.purpose,
                r.result,
            )
            for r in records
        ]

        def write() -> None:
            with connection:
                connection.execute("BEGIN")
                connection.executemany(
                    "INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )

        await asyncio.get_running_loop().run_in_executor(writer, write)


def read_trail(
    data_dir: Path, *, staff_id: str, role: str, customer: str | None = None
) -> list[AuditRecord]:
    """The audit trail, oldest first, for an auditor; the read itself is recorded.

    Raises:
        AuditDenied: ``role`` is not ``auditor`` (the refused attempt is recorded too).
    """
    connection = _connect(audit_path(data_dir))
    try:
        granted = role == AUDITOR
        with connection:
            connection.execute(
                "INSERT INTO audit_reads VALUES (?, ?, ?, ?)",
                (dt.datetime.now(dt.UTC).isoformat(), staff_id, role, int(granted)),
            )
        if not granted:
            raise AuditDenied(f"only auditors may read the audit trail, not a {role}")
        query = "SELECT * FROM audit"
        arguments: tuple[str, ...] = ()
        if customer is not None:
            query, arguments = query + " WHERE customer = ?", (customer,)
        rows = connection.execute(query + " ORDER BY at, request_id", arguments).fetchall()
    finally:
        connection.close()
    return [AuditRecord(r[0], dt.datetime.fromisoformat(r[1]), *r[2:]) for r in rows]
