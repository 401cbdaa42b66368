"""Verifying the journal as evidence: the chain, the signed checkpoints and the books.

:func:`audit_rows` is the pure core: it walks stored entries ``(seq, body, hash)`` and stored
checkpoints and reports every problem, naming the first broken entry. :func:`audit_store`
adds the store's book checks (every balance is the sum of its postings, every entry's postings
net to zero, the postings table says what the journal says). Entries after the last checkpoint
are reported as an unsigned tail: the chain holds them, no signature does yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from host_node.checkpoint import Checkpoint, decode_checkpoint, entries_root, signature_valid
from host_node.journal import ChainHead, body_hash, decode_entry, entry_body
from host_node.reconcile import check_store
from host_node.store import checkpoint_rows, connect_read_only, journal_rows

GENESIS = ChainHead()


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem; ``seq`` names the entry (or checkpoint) concerned, when there is one."""

    problem: str
    seq: int | None = None


@dataclass(slots=True)
class Audit:
    """What a verification found."""

    entries: int = 0
    checkpoints: int = 0
    signed_to: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_broken(self) -> int | None:
        """The lowest entry sequence number any finding names."""
        named = [f.seq for f in self.findings if f.seq is not None]
        return min(named) if named else None

    @property
    def unsigned_tail(self) -> int:
        return max(0, self.entries - self.signed_to)


def audit_rows(
    rows: Iterable[tuple[int, bytes, str]],
    checkpoints: Iterable[tuple[int, bytes]],
    key: Ed25519PublicKey,
    *,
    start: ChainHead = GENESIS,
) -> Audit:
    """Check that ``rows`` form one chain from ``start`` and that ``checkpoints`` sign it.

    Args:
        rows: ``(seq, body, hash)`` per stored entry, in stored sequence order.
        checkpoints: ``(seq, encoded checkpoint)`` per stored checkpoint, in order.
        key: the host's public identity key.
        start: the head the first row continues (an archive may start mid-chain).
    """
    audit = Audit()
    hashes: dict[int, str] = {}
    head = start
    broken = False
    for seq, body, hash_ in rows:
        audit.entries += 1
        hashes[seq] = hash_
        if broken:
            continue
        problem = _entry_problem(seq, bytes(body), hash_, head)
        if problem is not None:
            # A gap names the first missing entry; anything else the entry found wanting.
            audit.findings.append(Finding(problem, min(seq, head.seq + 1)))
            broken = True
            continue
        head = ChainHead(seq, hash_)
    _audit_checkpoints(audit, checkpoints, hashes, key, start.seq)
    return audit


def _entry_problem(seq: int, body: bytes, hash_: str, head: ChainHead) -> str | None:
    if body_hash(body) != hash_:
        return f"entry {seq} does not match its hash"
    try:
        entry = decode_entry(body, hash_)
    except (ValidationError, ValueError):
        return f"entry {seq} cannot be read"
    if entry.seq != seq:
        return f"entry stored at {seq} says it is entry {entry.seq}"
    if seq != head.seq + 1:
        return f"entry {seq} follows entry {head.seq}: {head.seq + 1} is missing"
    if entry.prev_hash != head.hash:
        return f"entry {seq} does not link to entry {head.seq}"
    if body_hash(entry_body(entry)) != hash_:
        return f"entry {seq} is not in canonical form"
    return None


def _audit_checkpoints(
    audit: Audit,
    checkpoints: Iterable[tuple[int, bytes]],
    hashes: dict[int, str],
    key: Ed25519PublicKey,
    start_seq: int,
) -> None:
    previous = start_seq
    for stored_seq, raw in checkpoints:
        audit.checkpoints += 1
        try:
            checkpoint = decode_checkpoint(bytes(raw))
        except ValidationError:
            audit.findings.append(Finding(f"checkpoint {stored_seq} cannot be read", stored_seq))
            continue
        finding = _checkpoint_problem(checkpoint, stored_seq, previous, hashes, key)
        if finding is not None:
            audit.findings.append(finding)
        else:
            audit.signed_to = checkpoint.seq
        previous = checkpoint.seq


def _checkpoint_problem(
    checkpoint: Checkpoint,
    stored_seq: int,
    previous: int,
    hashes: dict[int, str],
    key: Ed25519PublicKey,
) -> Finding | None:
    """What is wrong with one checkpoint, naming an entry where one can be named."""
    seq, first = checkpoint.seq, checkpoint.first_seq
    if not signature_valid(key, checkpoint) or stored_seq != seq:
        return Finding(f"checkpoint {seq}: the host's signature does not verify")
    if first != previous + 1:
        return Finding(f"checkpoint {seq} starts at {first}, not {previous + 1}")
    covered = [hashes.get(n) for n in range(first, seq + 1)]
    missing = [n for n, h in zip(range(first, seq + 1), covered, strict=True) if h is None]
    if missing:
        return Finding(f"checkpoint {seq} signs entry {missing[0]}, which is missing", missing[0])
    if hashes[seq] != checkpoint.head_hash:
        return Finding(f"checkpoint {seq} signs another head than entry {seq}", seq)
    if entries_root([h for h in covered if h is not None]) != checkpoint.entries_root:
        return Finding(f"checkpoint {seq} signs other entries than {first}..{seq}")
    return None


#: Book checks of host_node.reconcile that speak for the journal and balances.
_BOOK_CHECKS: Sequence[str] = (
    "postings_balanced",
    "balances_match_postings",
    "postings_match_journal",
    "customers_match_cash",
)


def audit_store(path: Path, key: Ed25519PublicKey) -> Audit:
    """Verify the store at ``path``: chain, checkpoints and books.

    Raises:
        StoreError: there is no readable store at ``path``.
    """
    connection = connect_read_only(path)
    try:
        audit = audit_rows(journal_rows(connection), checkpoint_rows(connection), key)
    finally:
        connection.close()
    books = check_store(path)
    for name in _BOOK_CHECKS:
        result = books[name]
        if not result.ok:
            audit.findings.append(Finding(f"{name}: {result.detail}", _first_seq(result.detail)))
    return audit


def _first_seq(detail: str) -> int | None:
    """The entry a book check's detail names first ("entry 12 ..."), if any."""
    _, found, rest = detail.partition("entry ")
    number = rest.split(" ", 1)[0].rstrip(":,")
    return int(number) if found and number.isdigit() else None
