"""The host's SQLite store: customers, accounts, postings, the journal, the idempotency table.

WAL mode, ``synchronous=FULL`` unless configured otherwise. One writer thread (a
single-thread executor) does every read and write, so nothing blocks the event loop and no
two transactions interleave; a batch is one transaction (group commit). PINs and PIN blocks
never reach this file: accounts hold the PIN's verification value (the "变码") only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from common.replies import decode_reply
from host_node.batch import Settlement, Snapshot, Stored
from host_node.checkpoint import Checkpoint, encode_checkpoint
from host_node.config import Synchronous
from host_node.errors import StoreCorrupt, StoreError
from host_node.interest import close_days
from host_node.journal import ChainHead, JournalEntry, decode_entry, entry_body, head_of
from host_node.ledger import (
    NO_USAGE,
    AccountKind,
    AccountState,
    AccountStatus,
    Appointment,
    Customer,
    DailyUsage,
    PinMethod,
    PinRecord,
)
from host_node.staff import StaffMember
from host_node.tiers import SCHEMA as TIER_SCHEMA
from host_node.tiers import TierChange, update_tiers

SCHEMA_VERSION = 2
#: Host parameters per ``IN (...)`` query, well under SQLite's limit.
_CHUNK = 500
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    id_type     TEXT NOT NULL,
    id_number   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (id_type, id_number)
);
CREATE TABLE IF NOT EXISTS accounts (
    number          TEXT PRIMARY KEY,
    customer_id     INTEGER REFERENCES customers (id),
    branch_id       TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('customer', 'cash', 'expense')),
    balance         INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    has_pin         INTEGER NOT NULL,
    pin_value       TEXT,
    pin_method      TEXT,
    pin_key_version INTEGER,
    pin_tries       INTEGER NOT NULL,
    opened_at       TEXT NOT NULL,
    frozen          INTEGER NOT NULL DEFAULT 0,
    held            INTEGER NOT NULL DEFAULT 0,
    usage_day       TEXT,
    cash_out_today  INTEGER NOT NULL DEFAULT 0,
    transferred_today INTEGER NOT NULL DEFAULT 0,
    appointments    TEXT NOT NULL DEFAULT '[]',
    interest_units  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS host_state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS staff (
    staff_id    TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('teller', 'supervisor', 'auditor')),
    branch_id   TEXT NOT NULL,
    public_key  BLOB
);
CREATE TABLE IF NOT EXISTS journal (
    seq         INTEGER PRIMARY KEY,
    request_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    result      TEXT NOT NULL,
    body        BLOB NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_request ON journal (request_id);
CREATE TABLE IF NOT EXISTS postings (
    journal_seq INTEGER NOT NULL REFERENCES journal (seq),
    account     TEXT NOT NULL REFERENCES accounts (number),
    amount      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS postings_account ON postings (account);
CREATE TABLE IF NOT EXISTS frames (
    digest      TEXT PRIMARY KEY,
    header      BLOB NOT NULL,
    leaves      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    journal_seq   INTEGER PRIMARY KEY REFERENCES journal (seq),
    frame_digest  TEXT REFERENCES frames (digest),
    record_index  INTEGER,
    record        BLOB NOT NULL,
    pin_outcome   TEXT,
    documents     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq         INTEGER PRIMARY KEY,
    body        BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    request_id   TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    reply        TEXT NOT NULL,
    journal_seq  INTEGER NOT NULL REFERENCES journal (seq)
);
"""

_ACCOUNT_COLUMNS = (
    "a.number, a.branch_id, a.kind, a.balance, a.status, a.pin_value, a.pin_method, "
    "a.pin_key_version, a.pin_tries, a.opened_at, a.frozen, a.held, a.usage_day, "
    "a.cash_out_today, a.transferred_today, a.appointments, c.name, c.id_type, c.id_number"
)
_SELECT_ACCOUNTS = (
    f"SELECT {_ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN customers c ON c.id = a.customer_id "
    "WHERE a.number IN"
)
_UPSERT_ACCOUNT = """
INSERT INTO accounts (number, customer_id, branch_id, kind, balance, status, has_pin,
                      pin_value, pin_method, pin_key_version, pin_tries, opened_at,
                      frozen, held, usage_day, cash_out_today, transferred_today, appointments)
VALUES (?, (SELECT id FROM customers WHERE id_type = ? AND id_number = ?), ?, ?, ?, ?, ?,
        ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (number) DO UPDATE SET
    balance = excluded.balance, status = excluded.status, has_pin = excluded.has_pin,
    pin_value = excluded.pin_value, pin_method = excluded.pin_method,
    pin_key_version = excluded.pin_key_version, pin_tries = excluded.pin_tries,
    frozen = excluded.frozen, held = excluded.held, usage_day = excluded.usage_day,
    cash_out_today = excluded.cash_out_today, transferred_today = excluded.transferred_today,
    appointments = excluded.appointments
"""


#: The columns of :data:`_UPSERT_ACCOUNT`'s update, for an account known to be stored.
_UPDATE_ACCOUNT = """
UPDATE accounts SET balance = ?, status = ?, has_pin = ?, pin_value = ?, pin_method = ?,
    pin_key_version = ?, pin_tries = ?, frozen = ?, held = ?, usage_day = ?,
    cash_out_today = ?, transferred_today = ?, appointments = ?
WHERE number = ?
"""


def ledger_path(data_dir: Path) -> Path:
    """Where the host keeps its store under a data directory."""
    return data_dir / "host" / "ledger.sqlite"


def connect(path: Path, synchronous: Synchronous = "FULL") -> sqlite3.Connection:
    """Open (creating if needed) the store at ``path`` for writing.

    Raises:
        StoreCorrupt: SQLite finds the file damaged.
        StoreError: the file cannot be opened or is not a host store.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute("PRAGMA foreign_keys = ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(f"store schema version {version}, expected {SCHEMA_VERSION}")
        connection.executescript(_SCHEMA + TIER_SCHEMA)
        staff_columns = {row[1] for row in connection.execute("PRAGMA table_info(staff)")}
        if "public_key" not in staff_columns:  # a store made before staff keys
            connection.execute("ALTER TABLE staff ADD COLUMN public_key BLOB")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as error:
        if error.sqlite_errorcode in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise StoreCorrupt(f"the ledger store at {path} is damaged: {error}") from None
        raise StoreError(f"cannot open the store at {path}: {error}") from None
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"cannot open the store at {path}: {error}") from None
    return connection


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing store without the right to change it.

    Raises:
        StoreError: there is no readable store at ``path``.
    """
    if not path.is_file():
        raise StoreError(f"no store at {path}")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"cannot read the store at {path}: {error}") from None


def chain_head(connection: sqlite3.Connection) -> ChainHead:
    row = connection.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    return ChainHead(row[0], row[1]) if row else ChainHead()


def journal_entries(connection: sqlite3.Connection) -> Iterator[JournalEntry]:
    """Every journal entry in sequence order, decoded but not verified."""
    for body, hash_ in connection.execute("SELECT body, hash FROM journal ORDER BY seq"):
        yield decode_entry(body, hash_)


def journal_rows(
    connection: sqlite3.Connection, after: int = 0
) -> Iterator[tuple[int, bytes, str]]:
    """``(seq, body, hash)`` of every stored entry after ``after``, as stored (unchecked)."""
    yield from connection.execute(
        "SELECT seq, body, hash FROM journal WHERE seq > ? ORDER BY seq", (after,)
    )


def checkpoint_rows(connection: sqlite3.Connection) -> Iterator[tuple[int, bytes]]:
    """``(seq, encoded checkpoint)`` of every stored checkpoint in sequence order."""
    yield from connection.execute("SELECT seq, body FROM checkpoints ORDER BY seq")


def checkpoint_tail(connection: sqlite3.Connection) -> tuple[int, list[str]]:
    """The last checkpoint's sequence number and the hashes of the entries after it."""
    row = connection.execute("SELECT MAX(seq) FROM checkpoints").fetchone()
    last = row[0] or 0
    hashes = [
        h
        for (h,) in connection.execute(
            "SELECT hash FROM journal WHERE seq > ? ORDER BY seq", (last,)
        )
    ]
    return last, hashes


def read_meta(connection: sqlite3.Connection, key: str) -> str | None:
    """A value of the store's own (``epoch``: the host epoch; ``missed``: a replica's gap)."""
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None


def write_meta(connection: sqlite3.Connection, key: str, value: str) -> None:
    connection.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def copy_store(source: Path, target: Path) -> None:
    """A consistent snapshot of the store at ``source`` written to ``target`` (replaced).

    Raises:
        StoreError: either file cannot be used.
    """
    origin = connect_read_only(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            leftover = target.with_name(target.name + suffix)
            leftover.unlink(missing_ok=True)
        copy = sqlite3.connect(target)
        try:
            origin.backup(copy)
        finally:
            copy.close()
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"snapshot not copied: {error}") from None
    finally:
        origin.close()


def write_checkpoint(connection: sqlite3.Connection, checkpoint: Checkpoint) -> None:
    connection.execute(
        "INSERT INTO checkpoints (seq, body) VALUES (?, ?)",
        (checkpoint.seq, encode_checkpoint(checkpoint)),
    )


def read_snapshot(
    connection: sqlite3.Connection, request_ids: Collection[str], accounts: Collection[str]
) -> Snapshot:
    """The stored replies of ``request_ids`` and the stored states of ``accounts``."""
    known = {
        request_id: Stored(content_hash, decode_reply(reply.encode()))
        for request_id, content_hash, reply in _select_in(
            connection,
            "SELECT request_id, content_hash, reply FROM idempotency WHERE request_id IN",
            request_ids,
        )
    }
    states = {
        row[0]: _account_from_row(row) for row in _select_in(connection, _SELECT_ACCOUNTS, accounts)
    }
    return Snapshot(known, states)


def read_staff(connection: sqlite3.Connection) -> dict[str, StaffMember]:
    """The staff table, by staff id."""
    return {
        staff_id: StaffMember(staff_id, role, branch_id, public_key)
        for staff_id, role, branch_id, public_key in connection.execute(
            "SELECT staff_id, role, branch_id, public_key FROM staff"
        )
    }


def write_staff(connection: sqlite3.Connection, members: Iterable[StaffMember]) -> None:
    """Add staff members, or update their role, branch and registered public key."""
    with connection:
        connection.executemany(
            "INSERT INTO staff (staff_id, role, branch_id, public_key) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (staff_id) DO UPDATE SET role = excluded.role, "
            "branch_id = excluded.branch_id, public_key = excluded.public_key",
            [(m.staff_id, m.role, m.branch_id, m.public_key) for m in members],
        )


def write_settlement(connection: sqlite3.Connection, settlement: Settlement) -> list[TierChange]:
    """Commit everything ``settlement`` changes in one transaction, or nothing; the tier
    changes of the customers whose accounts it touched."""
    now = dt.datetime.now(dt.UTC).isoformat()
    customers = settlement.customers
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(
            "INSERT INTO customers (name, id_type, id_number, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id_type, id_number) DO NOTHING",
            [(c.name, c.id_type, c.id_number, now) for c in customers.values()],
        )
        _write_accounts(connection, settlement.accounts, settlement.new_accounts)
        _write_entries(connection, settlement.entries)
        connection.executemany(
            "INSERT INTO frames (digest, header, leaves) VALUES (?, ?, ?) "
            "ON CONFLICT (digest) DO NOTHING",
            [(digest, f.header, f.leaves) for digest, f in settlement.frames.items()],
        )
        connection.executemany(
            "INSERT INTO evidence (journal_seq, frame_digest, record_index, record, pin_outcome,"
            " documents) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    e.seq,
                    e.frame_digest,
                    e.record_index,
                    e.record,
                    e.pin_outcome,
                    orjson.dumps(e.documents).decode(),
                )
                for e in settlement.evidence
            ],
        )
        at = settlement.entries[-1].processed_at if settlement.entries else dt.datetime.now(dt.UTC)
        touched = [a.number for a in settlement.accounts if a.kind == "customer"]
        tier_changes = update_tiers(connection, touched, at)
        connection.executemany(
            "INSERT INTO idempotency (request_id, content_hash, reply, journal_seq) "
            "VALUES (?, ?, ?, ?)",
            [
                (r.request_id, r.content_hash, r.json(), r.reply.journal_seq)
                for r in settlement.remembered
            ],
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return tier_changes


_CLOSED_THROUGH = "interest_closed_through"


@dataclass(frozen=True, slots=True)
class ClosedBooks:
    """A closing of the books (:func:`close_books`): the days up to ``through`` closed at
    ``rate_bp`` at ``now`` on the journal at ``after``, the entries it wrote after it and
    the tier changes they caused. A standby closes its books alike (see :class:`ReplicaRows`)."""

    through: dt.date
    rate_bp: int
    now: dt.datetime
    after: ChainHead
    entries: Sequence[JournalEntry]
    tier_changes: Sequence[TierChange] = ()


def close_books(
    connection: sqlite3.Connection,
    head: ChainHead,
    through: dt.date,
    rate_bp: int,
    now: dt.datetime,
) -> tuple[list[JournalEntry], list[TierChange]]:
    """Close the bank days up to ``through``: accrue interest, post it on posting days, and
    journal the postings, in one transaction. The first call only marks where to start.
    Returns the entries and the tier changes the postings caused."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        entries, tier_changes = _close_books(connection, head, through, rate_bp, now)
        _write_entries(connection, entries)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return entries, tier_changes


def _close_books(
    connection: sqlite3.Connection,
    head: ChainHead,
    through: dt.date,
    rate_bp: int,
    now: dt.datetime,
) -> tuple[list[JournalEntry], list[TierChange]]:
    """:func:`close_books` inside the caller's transaction, its entries not written (the
    primary writes those it made, a standby those it was shipped)."""
    row = connection.execute(
        "SELECT value FROM host_state WHERE key = ?", (_CLOSED_THROUGH,)
    ).fetchone()
    entries: list[JournalEntry] = []
    tier_changes: list[TierChange] = []
    if row is not None and dt.date.fromisoformat(row[0]) < through:
        closed = dt.date.fromisoformat(row[0])
        entries = close_days(connection, head, closed, through, rate_bp, now)
        if entries:
            tier_changes += update_tiers(connection, None, now)
    if row is None or dt.date.fromisoformat(row[0]) < through:
        connection.execute(
            "INSERT INTO host_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_CLOSED_THROUGH, through.isoformat()),
        )
    return entries, tier_changes


def _write_accounts(
    connection: sqlite3.Connection,
    accounts: Sequence[AccountState],
    new: Collection[str] | None,
) -> None:
    """Insert the ``new`` accounts and update the others (None: upsert every one)."""
    if new is None:
        connection.executemany(_UPSERT_ACCOUNT, [_account_row(a) for a in accounts])
        return
    # an update of a known account skips the upsert's insert attempt and customer lookup
    connection.executemany(
        _UPDATE_ACCOUNT, [_account_update(a) for a in accounts if a.number not in new]
    )
    connection.executemany(_UPSERT_ACCOUNT, [_account_row(a) for a in accounts if a.number in new])


def _write_entries(connection: sqlite3.Connection, entries: Sequence[JournalEntry]) -> None:
    connection.executemany(
        "INSERT INTO journal (seq, request_id, kind, result, body, hash) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (e.seq, e.request_id, e.kind, e.result.value, e.body or entry_body(e), e.hash)
            for e in entries
        ],
    )
    connection.executemany(
        "INSERT INTO postings (journal_seq, account, amount) VALUES (?, ?, ?)",
        [(e.seq, p.account, p.amount) for e in entries for p in e.postings],
    )


def _select_in(
    connection: sqlite3.Connection, query: str, keys: Iterable[str]
) -> Iterator[tuple[Any, ...]]:
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        yield from connection.execute(f"{query} ({', '.join('?' * len(chunk))})", chunk)


def _account_from_row(row: Sequence[Any]) -> AccountState:
    (
        number, branch_id, kind, balance, status, value, method, key_version, tries, opened,
        frozen, held, usage_day, cash_out_today, transferred, appointments,
        name, id_type, id_number,
    ) = row  # fmt: skip
    return AccountState(
        number,
        branch_id,
        kind,
        dt.datetime.fromisoformat(opened),
        balance,
        status,
        PinRecord(value, method, key_version) if value is not None else None,
        tries,
        Customer(name, id_type, id_number) if id_type is not None else None,
        bool(frozen),
        held,
        DailyUsage(dt.date.fromisoformat(usage_day), cash_out_today, transferred)
        if usage_day
        else NO_USAGE,
        _appointments_from_json(appointments),
    )


def _appointments_from_json(text: str) -> tuple[Appointment, ...]:
    if text == "[]":  # most accounts: no appointment booked
        return ()
    return tuple(
        Appointment(dt.date.fromisoformat(day), amount, dt.date.fromisoformat(made_on))
        for day, amount, made_on in json.loads(text)
    )


def _appointments_json(appointments: Sequence[Appointment]) -> str:
    if not appointments:  # most accounts: what json.dumps([]) gives, without the call
        return "[]"
    return json.dumps([[a.date.isoformat(), a.amount, a.made_on.isoformat()] for a in appointments])


def _account_row(account: AccountState) -> tuple[Any, ...]:
    """The parameters of :data:`_UPSERT_ACCOUNT` for ``account``."""
    customer = account.holder
    state = _account_state(account)
    return (
        account.number,
        customer.id_type if customer else None,
        customer.id_number if customer else None,
        account.branch_id,
        account.kind,
        *state[:7],
        account.opened_at.isoformat(),
        *state[7:],
    )


def _account_update(account: AccountState) -> tuple[Any, ...]:
    """The parameters of :data:`_UPDATE_ACCOUNT` for ``account``."""
    return (*_account_state(account), account.number)


def _account_state(account: AccountState) -> tuple[Any, ...]:
    """The columns a batch may change, in :data:`_UPDATE_ACCOUNT`'s order."""
    pin = account.pin
    usage = account.usage
    return (
        account.balance,
        account.status,
        int(pin is not None),
        pin.value if pin else None,
        pin.method if pin else None,
        pin.key_version if pin else None,
        account.pin_tries,
        int(account.frozen),
        account.held,
        usage.day.isoformat() if usage.day else None,
        usage.cash_out,
        usage.transferred,
        _appointments_json(account.appointments),
    )


# --- the standby's apply: a replicated batch as rows ------------------------------------------

#: An ``accounts`` row as :data:`_UPSERT_ACCOUNT` takes it (the holder's id type and number
#: stand in for its customer id).
AccountRow = tuple[
    str,  # number
    str | None,  # holder's id type
    str | None,  # holder's id number
    str,  # branch id
    AccountKind,
    int,  # balance
    AccountStatus,
    int,  # has a PIN
    str | None,  # PIN verification value
    PinMethod | None,
    int | None,  # PIN key version
    int,  # PIN tries
    str,  # opened at
    int,  # frozen
    int,  # held
    str | None,  # usage day
    int,  # cash out today
    int,  # transferred today
    str,  # appointments (JSON)
]


@dataclass(frozen=True, slots=True)
class ReplicaRows:
    """A replicated batch as the rows :func:`write_replicas` writes: what the primary's commit
    wrote, row for row (journal bodies as hashed, replies and documents as stored).

    ``at`` is when the batch was processed (the time of its tier changes); ``after`` is the
    head it continues and ``head`` its last entry; ``new_accounts`` are the accounts the
    primary did not hold before (None: not known). ``close`` is a closing of the books
    (through, rate, now; its entries are ``journal``): the accrual every account row took
    is not shipped but made here as there, and must make the shipped entries.
    """

    customers: Sequence[tuple[str, str, str]]
    accounts: Sequence[AccountRow]
    journal: Sequence[tuple[int, str, str, str, bytes, str]]
    postings: Sequence[tuple[int, str, int]]
    frames: Sequence[tuple[str, bytes, bytes]]
    evidence: Sequence[tuple[int, str | None, int | None, bytes, str | None, str]]
    idempotency: Sequence[tuple[str, str, str, int]]
    at: dt.datetime
    after: ChainHead
    head: ChainHead
    new_accounts: frozenset[str] | None = None
    close: tuple[dt.date, int, dt.datetime] | None = None


def write_replicas(connection: sqlite3.Connection, batches: Sequence[ReplicaRows]) -> None:
    """Write replicated batches in one transaction, or nothing, each as the primary wrote it
    (its tiers recomputed here as there, batch by batch)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    connection.execute("BEGIN IMMEDIATE")
    try:
        for rows in batches:
            _insert_replica(connection, rows, now)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _insert_replica(connection: sqlite3.Connection, rows: ReplicaRows, now: str) -> None:
    if rows.close is not None:
        entries, _ = _close_books(connection, rows.after, *rows.close)
        if [(e.seq, e.hash) for e in entries] != [(j[0], j[5]) for j in rows.journal]:
            raise StoreError(
                f"the books closed through {rows.close[0]} do not make the primary's entries"
            )
    connection.executemany(
        "INSERT INTO customers (name, id_type, id_number, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id_type, id_number) DO NOTHING",
        [(*customer, now) for customer in rows.customers],
    )
    _write_replica_accounts(connection, rows.accounts, rows.new_accounts)
    connection.executemany(
        "INSERT INTO journal (seq, request_id, kind, result, body, hash) VALUES (?, ?, ?, ?, ?, ?)",
        rows.journal,
    )
    connection.executemany(
        "INSERT INTO postings (journal_seq, account, amount) VALUES (?, ?, ?)", rows.postings
    )
    connection.executemany(
        "INSERT INTO frames (digest, header, leaves) VALUES (?, ?, ?) "
        "ON CONFLICT (digest) DO NOTHING",
        rows.frames,
    )
    connection.executemany(
        "INSERT INTO evidence (journal_seq, frame_digest, record_index, record, pin_outcome,"
        " documents) VALUES (?, ?, ?, ?, ?, ?)",
        rows.evidence,
    )
    update_tiers(connection, [a[0] for a in rows.accounts if a[4] == "customer"], rows.at)
    connection.executemany(
        "INSERT INTO idempotency (request_id, content_hash, reply, journal_seq) "
        "VALUES (?, ?, ?, ?)",
        rows.idempotency,
    )


def _write_replica_accounts(
    connection: sqlite3.Connection, accounts: Sequence[AccountRow], new: frozenset[str] | None
) -> None:
    """Update the accounts the primary held before in place and upsert the ``new`` ones (None:
    upsert every one); should this store lack one the primary held, they are upserted too."""
    known = accounts if new is None else [a for a in accounts if a[0] not in new]
    if new is not None and known:
        updated = connection.executemany(
            _UPDATE_ACCOUNT, [(*a[5:12], *a[13:19], a[0]) for a in known]
        ).rowcount
        if updated == len(known):
            known = []
    connection.executemany(_UPSERT_ACCOUNT, [*known, *(a for a in accounts if a[0] in (new or ()))])


class Store:
    """The store behind one writer thread; every method runs there, off the event loop."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = path
        self.synchronous: Synchronous = synchronous
        self.head = ChainHead()
        self._connection: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        self.staff: dict[str, StaffMember] = {}

    async def open(self) -> None:
        """Open (or create) the file and read the journal's head.

        Raises:
            StoreError: the file cannot be opened.
        """
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-store")
        self._connection = await self._run(connect, self.path, self.synchronous)
        self.head = await self._run(chain_head, self._connection)
        self.staff = await self._run(read_staff, self._connection)

    async def read(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function(connection, *args)`` on the writer thread (a check, a query)."""
        return await self._run(function, self._open(), *args)

    async def enrol_staff(self, members: Iterable[StaffMember]) -> None:
        """Add (or update) staff members on the staff table."""
        await self._run(write_staff, self._open(), list(members))
        self.staff = await self._run(read_staff, self._open())

    async def close(self) -> None:
        if self._connection is not None:
            await self._run(self._connection.close)
            self._connection = None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    async def snapshot(self, request_ids: Collection[str], accounts: Collection[str]) -> Snapshot:
        """What the store holds now for a batch's request ids and accounts, and the staff."""
        snapshot = await self._run(read_snapshot, self._open(), request_ids, accounts)
        return replace(snapshot, staff=self.staff)

    async def close_books(self, through: dt.date, rate_bp: int, now: dt.datetime) -> ClosedBooks:
        """Close the bank days up to ``through`` (interest accrued and posted, journaled).

        Raises:
            StoreError: the transaction failed; nothing of it was written.
        """
        after = self.head
        try:
            entries, tier_changes = await self._run(
                close_books, self._open(), after, through, rate_bp, now
            )
        except sqlite3.Error as error:
            raise StoreError(f"books not closed: {error}") from None
        if entries:
            self.head = head_of(entries[-1])
        return ClosedBooks(through, rate_bp, now, after, entries, tier_changes)

    async def commit(self, settlement: Settlement) -> list[TierChange]:
        """Write a batch in one transaction and move the journal head.

        Raises:
            StoreError: the transaction failed; nothing of it was written.
        """
        first = settlement.entries[0] if settlement.entries else None
        if first and (first.seq, first.prev_hash) != (self.head.seq + 1, self.head.hash):
            raise StoreError("the settlement does not continue the journal")
        try:
            tier_changes = await self._run(write_settlement, self._open(), settlement)
        except sqlite3.Error as error:
            raise StoreError(f"batch not committed: {error}") from None
        self.head = settlement.head
        return tier_changes

    async def apply_replicas(self, batches: Sequence[ReplicaRows]) -> None:
        """Write replicated batches (a standby's store) in one transaction; move the head.

        Raises:
            StoreError: they do not continue the journal one after the other, or the
                transaction failed; nothing of them was written.
        """
        head = self.head
        for rows in batches:
            if rows.after != head:
                raise StoreError("the replicated batch does not continue the journal")
            head = rows.head
        try:
            await self._run(write_replicas, self._open(), batches)
        except sqlite3.Error as error:
            raise StoreError(f"replicated batches not written: {error}") from None
        self.head = head

    async def checkpoint_tail(self) -> tuple[int, list[str]]:
        """The last checkpoint's sequence number and the entry hashes after it."""
        return await self._run(checkpoint_tail, self._open())

    async def epoch(self) -> int:
        """The host epoch this store was last primary (or promoted) in; 0 when never set."""
        return int(await self.meta("epoch") or 0)

    async def set_epoch(self, epoch: int) -> None:
        await self.set_meta("epoch", str(epoch))

    async def meta(self, key: str) -> str | None:
        return await self._run(read_meta, self._open(), key)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(write_meta, self._open(), key, value)

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a signed checkpoint.

        Raises:
            StoreError: it was not written.
        """
        try:
            await self._run(write_checkpoint, self._open(), checkpoint)
        except sqlite3.Error as error:
            raise StoreError(f"checkpoint not stored: {error}") from None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError("the store is not open")
        return self._connection

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._writer is None:
            raise StoreError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._writer, function, *args)
