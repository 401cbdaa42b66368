"""Damage at rest to a stopped host's store, as disks and power cuts do it.

Each function damages the store in place (the host must not run) and says what it did and,
where it is known, the first journal entry the damage reaches.

- :func:`tear_wal`: the write-ahead log loses its tail in the middle of a committed frame
  (a torn write, or a log that lost its last blocks), as after a crash with unsynced blocks.
- :func:`flip_bit`: one bit of one journal entry's stored body flips (bit rot).
- :func:`truncate_store`: the store file itself loses its tail in the middle of a page.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from host_node.audit import audit_rows
from host_node.integrity import FRAME_HEADER, recovered_head, scan_wal, wal_path
from host_node.store import chain_head, checkpoint_rows, connect_read_only, journal_rows


@dataclass(frozen=True, slots=True)
class Damage:
    """What a damaging function did; ``first_bad`` when the first entry it reaches is known."""

    kind: str
    applied: bool
    detail: str
    first_bad: int | None = None


def backup(store: Path, to: Path) -> None:
    """Copy the store and its log (the host stopped) to the directory ``to``, made afresh."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for path in (store, wal_path(store)):
        if path.is_file():
            shutil.copyfile(path, to / path.name)


def restore(store: Path, source: Path) -> None:
    """Put back what :func:`backup` copied; SQLite rebuilds its shared-memory index."""
    for suffix in ("", "-wal", "-shm"):
        store.with_name(store.name + suffix).unlink(missing_ok=True)
    for name in (store.name, wal_path(store).name):
        if (source / name).is_file():
            shutil.copyfile(source / name, store.with_name(name))


def tear_wal(store: Path, rng: random.Random) -> Damage:
    """Cut the log inside a committed frame of its second half (after a kill: there is one)."""
    wal = wal_path(store)
    data = wal.read_bytes() if wal.is_file() else b""
    scan = scan_wal(data)
    if scan.commits == 0:
        return Damage("torn-wal-tail", False, "no committed frame in the log to tear")
    before = recovered_head(store)
    frame = rng.randrange(scan.commits // 2, scan.commits)
    cut = scan.frames[frame] + FRAME_HEADER + rng.randrange(1, scan.page_size)
    with wal.open("r+b") as file:
        file.truncate(cut)
    after = recovered_head(store)
    detail = (
        f"log cut at byte {cut} of {len(data)}, inside frame {frame + 1} of {scan.commits} "
        f"committed; SQLite alone would end the journal at entry {after}, not {before}"
    )
    return Damage("torn-wal-tail", True, detail, after + 1 if after < before else None)


def flip_bit(store: Path, rng: random.Random) -> Damage:
    """Flip one bit inside one journal entry's stored body (the store stopped cleanly)."""
    found = _locate(store, rng, 1)
    if isinstance(found, str):
        return Damage("bit-flip", False, found)
    seq, at, length, _ = found
    offset = at + rng.randrange(length)
    bit = rng.randrange(8)
    with store.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0] ^ (1 << bit)
        file.seek(offset)
        file.write(bytes([byte]))
    return Damage("bit-flip", True, f"bit {bit} of byte {offset} (entry {seq}) flipped", seq)


def truncate_store(store: Path, rng: random.Random) -> Damage:
    """Cut the store file (stopped cleanly) inside the page holding an entry of the journal's
    second half: that entry and everything stored after it is gone."""
    found = _locate(store, rng, 2)
    if isinstance(found, str):
        return Damage("torn-store-tail", False, found)
    seq, at, _, page_size = found
    size = store.stat().st_size
    page = at // page_size
    cut = page * page_size + rng.randrange(1, page_size)
    with store.open("r+b") as file:
        file.truncate(cut)
    detail = f"store cut at byte {cut} of {size}, inside page {page + 1}, which holds entry {seq}"
    return Damage("torn-store-tail", True, detail)


def _locate(store: Path, rng: random.Random, part: int) -> tuple[int, int, int, int] | str:
    """A random entry of the journal's last ``1/part``: its number, the file offset of its
    live stored body (freed space may hold stale copies), the body's length, the page size."""
    connection = connect_read_only(store)
    try:
        head = chain_head(connection).seq
        if head < part:
            return "the journal is too short"
        seq = rng.randint(head - head // part + 1, head)
        (body,) = connection.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        leaves = {
            number
            for (number,) in connection.execute(
                "SELECT pageno FROM dbstat WHERE name = 'journal' AND pagetype = 'leaf'"
            )
        }
    finally:
        connection.close()
    data = store.read_bytes()
    at = data.find(bytes(body))
    while at >= 0:
        if at // page_size + 1 in leaves and _in_live_cell(data, at, len(body), page_size):
            return seq, at, len(body), page_size
        at = data.find(bytes(body), at + 1)
    return f"entry {seq} is not stored in one piece in the file"


def _in_live_cell(data: bytes, at: int, length: int, page_size: int) -> bool:
    """Whether bytes ``at..at+length`` lie in the payload of a cell of their b-tree leaf page
    (SQLite file format: page header, cell pointer array, cells of varint size and rowid)."""
    start = at - at % page_size
    header = start + (100 if start == 0 else 0)
    cells = int.from_bytes(data[header + 3 : header + 5], "big")
    for index in range(cells):
        pointer = header + 8 + 2 * index
        cell = start + int.from_bytes(data[pointer : pointer + 2], "big")
        payload, used = _varint(data, cell)
        _, rowid_used = _varint(data, cell + used)
        first = cell + used + rowid_used
        if first <= at and at + length <= first + payload:
            return True
    return False


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """SQLite's variable-length integer at ``offset``: its value and its length in bytes."""
    value = 0
    for index in range(9):
        byte = data[offset + index]
        if index == 8:
            return (value << 8) | byte, 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, index + 1
    raise AssertionError("unreachable")


def settle(store: Path) -> None:
    """Merge the write-ahead log into the store file and remove it, as a clean stop does."""
    connection = sqlite3.connect(store)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def store_verdict(store: Path, public_key: Ed25519PublicKey) -> dict[str, object]:
    """What SQLite and the journal audit say of a (damaged) store, read on a scratch copy."""
    with tempfile.TemporaryDirectory(prefix="branchnet-damage-") as scratch:
        backup(store, Path(scratch))
        connection = sqlite3.connect(Path(scratch) / store.name)
        try:
            quick = [row[0] for row in connection.execute("PRAGMA quick_check")]
            audit = audit_rows(journal_rows(connection), checkpoint_rows(connection), public_key)
            return {
                "quick_check": quick[0] if len(quick) == 1 else f"{len(quick)} problems",
                "chain_verifies": audit.ok,
                "journal_entries": audit.entries,
            }
        except sqlite3.DatabaseError as error:
            return {"quick_check": str(error), "chain_verifies": False, "journal_entries": None}
        finally:
            connection.close()
