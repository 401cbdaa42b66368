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
    """Copy the store and its log (the host stopped) to the directory ``to``."""
    to.mkdir(parents=True, exist_ok=True)
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
    """Flip one bit inside one journal entry's body in the store file (no log: stopped
    cleanly)."""
    connection = connect_read_only(store)
    try:
        head = chain_head(connection).seq
        if head == 0:
            return Damage("bit-flip", False, "the journal is empty")
        seq = rng.randint(1, head)
        (body,) = connection.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()
    finally:
        connection.close()
    data = bytearray(store.read_bytes())
    at = data.find(bytes(body))
    if at < 0:
        return Damage("bit-flip", False, f"entry {seq} is not stored in one piece in the file")
    offset = at + rng.randrange(len(body))
    bit = rng.randrange(8)
    data[offset] ^= 1 << bit
    store.write_bytes(bytes(data))
    return Damage("bit-flip", True, f"bit {bit} of byte {offset} (entry {seq}) flipped", seq)


def truncate_store(store: Path, rng: random.Random) -> Damage:
    """Cut the store file (stopped cleanly) inside the page holding an entry of the journal's
    second half: that entry and everything stored after it is gone."""
    connection = connect_read_only(store)
    try:
        head = chain_head(connection).seq
        if head < 2:
            return Damage("torn-store-tail", False, "the journal is too short")
        seq = rng.randint(head // 2 + 1, head)
        (body,) = connection.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    finally:
        connection.close()
    data = store.read_bytes()
    at = data.find(bytes(body))
    if at < 0:
        return Damage("torn-store-tail", False, f"entry {seq} is not stored in one piece")
    page = at // page_size
    cut = page * page_size + rng.randrange(1, page_size)
    with store.open("r+b") as file:
        file.truncate(cut)
    return Damage(
        "torn-store-tail",
        True,
        f"store cut at byte {cut} of {len(data)}, inside page {page + 1}, which holds entry {seq}",
    )


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
