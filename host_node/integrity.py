"""The host's start-up check of its store: damage at rest is refused, never silently accepted.

Three layers, cheapest first:

- the write-ahead log, read *before* SQLite opens the store (opening would recover it and
  silently drop every frame after a damaged one): :func:`scan_wal` walks its frames and
  checks SQLite's salts and cumulative checksums. A frame that fails its checksum while a
  commit follows it, or a frame cut short (more than its 24-byte header, less than a whole
  frame), means committed transactions would vanish. A lone trailing frame header is what a
  process killed between SQLite's two writes of a frame leaves: that frame was never
  committed, and SQLite rightly ignores it.
- ``PRAGMA quick_check``: the file's b-trees, pages and records are well formed.
- the journal itself (:func:`host_node.audit.audit_rows`): every entry matches its hash and
  links to the one before, every signed checkpoint verifies and covers the entries it names.

A failure raises :class:`~host_node.errors.StoreCorrupt` naming the first bad entry where
one can be named.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from host_node.audit import audit_rows
from host_node.errors import StoreCorrupt
from host_node.store import chain_head, checkpoint_rows, journal_rows

WAL_HEADER = 32
FRAME_HEADER = 24
_MAGIC = {0x377F0682: "<", 0x377F0683: ">"}  # the checksums' byte order
_MASK = 0xFFFFFFFF


def wal_path(store: Path) -> Path:
    return store.with_name(store.name + "-wal")


@dataclass(slots=True)
class WalScan:
    """What :func:`scan_wal` found: the current generation's intact frames and any damage."""

    page_size: int = 0
    frames: list[int] = field(default_factory=list)  # byte offsets of the intact frames
    commits: int = 0  # intact frames up to and including the last commit frame
    damage: str | None = None

    @property
    def frame_size(self) -> int:
        return FRAME_HEADER + self.page_size


def _checksum(data: bytes, order: str, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for index in range(0, len(words), 2):
        s0 = (s0 + words[index] + s1) & _MASK
        s1 = (s1 + words[index + 1] + s0) & _MASK
    return s0, s1


def scan_wal(data: bytes) -> WalScan:
    """Walk a write-ahead log's frames (SQLite's WAL format) and say what is damaged."""
    scan = WalScan()
    if not data:
        return scan
    if len(data) < WAL_HEADER:
        scan.damage = f"the WAL header is cut short ({len(data)} of {WAL_HEADER} bytes)"
        return scan
    magic, _, page_size, _, salt1, salt2, sum1, sum2 = struct.unpack(">8I", data[:WAL_HEADER])
    order = _MAGIC.get(magic)
    if order is None or _checksum(data[:24], order, 0, 0) != (sum1, sum2):
        scan.damage = "the WAL header does not verify (every frame in it would be dropped)"
        return scan
    scan.page_size = page_size
    size = scan.frame_size
    s0, s1 = sum1, sum2
    offset = WAL_HEADER
    while offset < len(data):
        number = len(scan.frames) + 1
        remaining = len(data) - offset
        header = data[offset : offset + FRAME_HEADER]
        same_generation = remaining >= 16 and struct.unpack(">2I", header[8:16]) == (salt1, salt2)
        if remaining < size:
            if remaining != FRAME_HEADER and (same_generation or remaining < 16):
                scan.damage = f"WAL frame {number} is cut short ({remaining} of {size} bytes)"
            return scan  # a lone header: a write the process did not finish; never committed
        if not same_generation:
            return scan  # frames of an earlier generation: SQLite ignores them, rightly
        _, commit, _, _, want0, want1 = struct.unpack(">6I", header)
        s0, s1 = _checksum(header[:8], order, s0, s1)
        s0, s1 = _checksum(data[offset + FRAME_HEADER : offset + size], order, s0, s1)
        if (s0, s1) != (want0, want1):
            if commit or _commit_follows(data, offset + size, size, salt1, salt2):
                scan.damage = f"WAL frame {number} does not verify and committed frames follow it"
            return scan  # else: an uncommitted transaction's frames, rightly ignored
        scan.frames.append(offset)
        if commit:
            scan.commits = len(scan.frames)
        offset += size
    return scan


def _commit_follows(data: bytes, offset: int, size: int, salt1: int, salt2: int) -> bool:
    while offset + FRAME_HEADER <= len(data):
        _, commit, s1, s2 = struct.unpack(">4I", data[offset : offset + 16])
        if (s1, s2) != (salt1, salt2):
            return False
        if commit:
            return True
        offset += size
    return False


def cut_short(header: bytes, size: int) -> str | None:
    """A store file of ``size`` bytes that is shorter than its own header says it is."""
    if len(header) < 100 or header[:16] != b"SQLite format 3\x00":
        return None
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    changed, pages = struct.unpack(">2I", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    if changed != valid_for or size >= pages * page_size:
        return None
    return f"the store file is cut short: {size} bytes, its header says {pages} pages"


def check_wal(store: Path) -> None:
    """Refuse a store whose write-ahead log is damaged, or that was stopped cleanly and is
    shorter than its header says (run it before SQLite opens the store).

    Raises:
        StoreCorrupt: committed data would be dropped; names the first entry at risk if known.
    """
    wal = wal_path(store)
    if not store.is_file():
        return
    if not wal.is_file() or wal.stat().st_size == 0:  # stopped cleanly: all in the file
        with store.open("rb") as file:
            problem = cut_short(file.read(100), store.stat().st_size)
        if problem is not None:
            first = first_unreadable(store)
            naming = f"; the first bad entry is {first}" if first is not None else ""
            raise StoreCorrupt(
                f"the ledger store at {store} is damaged: {problem}{naming}", first_bad=first
            )
        return
    scan = scan_wal(wal.read_bytes())
    if scan.damage is None:
        return
    head = recovered_head(store)
    raise StoreCorrupt(
        f"the ledger store at {store} is damaged: {scan.damage}; SQLite would silently end "
        f"the journal at entry {head}, so the first bad entry is {head + 1}",
        first_bad=head + 1,
    )


def first_unreadable(store: Path) -> int | None:
    """The first journal entry SQLite cannot read from the store, read on a scratch copy."""
    unreadable: list[int] = []
    with _scratch(store) as connection:
        try:
            for _ in _readable(journal_rows(connection), unreadable, []):
                pass
        except sqlite3.DatabaseError:
            return 1
    return unreadable[0] if unreadable else None


def recovered_head(store: Path) -> int:
    """The journal head SQLite recovers from the store and its log, found on a scratch copy."""
    with _scratch(store) as connection:
        try:
            return chain_head(connection).seq
        except sqlite3.Error:
            return 0


@contextlib.contextmanager
def _scratch(store: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a copy of the store and its log (SQLite may change what it opens)."""
    with tempfile.TemporaryDirectory(prefix="branchnet-store-") as scratch:
        copy = Path(scratch) / store.name
        shutil.copyfile(store, copy)
        if wal_path(store).is_file():
            shutil.copyfile(wal_path(store), wal_path(copy))
        connection = sqlite3.connect(copy)
        try:
            yield connection
        finally:
            connection.close()


def check_store(connection: sqlite3.Connection, key: Ed25519PublicKey) -> None:
    """Refuse a store that is not well formed or whose journal does not verify.

    Raises:
        StoreCorrupt: names the first bad entry where one can be named.
    """
    problems = [" ".join(str(row[0]).split())[:200] for row in _quick_check(connection)]
    unreadable: list[int] = []
    audit = audit_rows(
        _readable(journal_rows(connection), unreadable, problems),
        _readable_checkpoints(checkpoint_rows(connection), problems),
        key,
    )
    named = [n for n in (audit.first_broken, *unreadable) if n is not None]
    first = min(named) if named else None
    problems += [finding.problem for finding in audit.findings]
    if problems:
        naming = f"; the first bad entry is {first}" if first is not None else ""
        raise StoreCorrupt(
            f"the ledger store is damaged: {'; '.join(problems[:3])}{naming}", first_bad=first
        )


def _quick_check(connection: sqlite3.Connection) -> list[tuple[str]]:
    try:
        rows = connection.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as error:
        return [(f"quick_check: {error}",)]
    return [row for row in rows if row[0] != "ok"]


def _readable(
    rows: Iterable[tuple[int, bytes, str]], unreadable: list[int], problems: list[str]
) -> Iterator[tuple[int, bytes, str]]:
    """The rows up to the first one SQLite cannot read; that one's number goes in ``unreadable``."""
    last = 0
    try:
        for seq, body, hash_ in rows:
            if not isinstance(body, bytes) or not isinstance(hash_, str):
                raise sqlite3.DatabaseError(f"entry {seq} has lost its content")
            last = seq
            yield seq, body, hash_
    except sqlite3.DatabaseError as error:
        unreadable.append(last + 1)
        problems.append(f"journal unreadable after entry {last}: {error}")


def _readable_checkpoints(
    rows: Iterable[tuple[int, bytes]], problems: list[str]
) -> Iterator[tuple[int, bytes]]:
    try:
        yield from rows
    except sqlite3.DatabaseError as error:
        problems.append(f"checkpoints unreadable: {error}")
