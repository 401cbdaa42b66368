"""The journal: one hash-chained entry for every processed request, approved or declined.

An entry records who originated the request and when, when the host received, unpacked and
processed it, the kind, the masked subject, the postings, the result, and the sha256 of the
request record's bytes as received. Its hash is the sha256 of its canonical encoding (sorted
keys, compact JSON, every field but the hash itself), which includes the previous entry's
hash; changing or dropping any entry breaks every hash after it.

The canonical encoding is orjson's: keys sorted, no spaces, datetimes in RFC 3339 as given
(``+00:00`` for UTC, no offset for a naive origin time), postings as ``[account, amount]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import field, fields
from typing import Any

import orjson
from pydantic import ConfigDict, TypeAdapter

from common.ids import mask_pan
from common.results import ResultCode
from host_node.immutable import immutable
from host_node.ledger import Posting

#: The previous hash of the first entry.
GENESIS_HASH = "0" * 64


@immutable
class JournalEntry:
    """One processed request, as evidence.

    ``rule`` names the rule that decided it (for a decline, the one that stopped it) and
    ``identities`` the identity documents the host checked, masked.

    ``body`` is the canonical encoding the hash covers, as made at sealing or as stored; it is
    derived data, so it takes no part in comparisons, and :func:`verify_chain` recomputes it.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    seq: int
    prev_hash: str
    request_id: str
    branch_id: str
    teller_id: str | None
    terminal_id: str | None
    origin_time: dt.datetime | None
    received_at: dt.datetime
    unpacked_at: dt.datetime
    processed_at: dt.datetime
    kind: str
    subject: str
    postings: tuple[Posting, ...]
    result: ResultCode
    reason: str
    record_hash: str
    hash: str
    rule: str = ""
    identities: tuple[str, ...] = ()
    body: bytes = field(default=b"", compare=False, repr=False)


@immutable
class ChainHead:
    """Where the chain ends: the last entry's sequence number and hash."""

    seq: int = 0
    hash: str = GENESIS_HASH


#: The head of an empty journal.
GENESIS = ChainHead()


@immutable
class Origin:
    """Who sent a request, when, and how the host handled it in time."""

    request_id: str
    branch_id: str
    teller_id: str | None
    terminal_id: str | None
    origin_time: dt.datetime | None
    received_at: dt.datetime
    unpacked_at: dt.datetime
    record_hash: str


def record_hash(raw: bytes) -> str:
    """The sha256 of a request record's bytes as received."""
    return hashlib.sha256(raw).hexdigest()


def subject_of(account: str | None) -> str:
    """The masked account a request is about."""
    return mask_pan(account) if account else ""


_BODY_FIELDS = tuple(f.name for f in fields(JournalEntry) if f.name not in ("hash", "body"))
_ENTRY_ADAPTER: TypeAdapter[JournalEntry] = TypeAdapter(JournalEntry)


def entry_body(entry: JournalEntry) -> bytes:
    """The canonical encoding of ``entry`` without its own hash: what the hash covers."""
    return _canonical({name: getattr(entry, name) for name in _BODY_FIELDS})


def _canonical(document: dict[str, Any]) -> bytes:
    document["postings"] = [[account, amount] for account, amount in document["postings"]]
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(
    head: ChainHead,
    origin: Origin,
    *,
    kind: str,
    subject: str,
    processed_at: dt.datetime,
    postings: Iterable[Posting],
    result: ResultCode,
    reason: str,
    rule: str = "",
    identities: tuple[str, ...] = (),
) -> JournalEntry:
    """The entry after ``head`` for one processed request, hash included."""
    seq = head.seq + 1
    postings = tuple(postings)
    # the canonical body of entry_body(), made directly: every entry is sealed on the hot path
    body = orjson.dumps(
        {
            "seq": seq,
            "prev_hash": head.hash,
            "request_id": origin.request_id,
            "branch_id": origin.branch_id,
            "teller_id": origin.teller_id,
            "terminal_id": origin.terminal_id,
            "origin_time": origin.origin_time,
            "received_at": origin.received_at,
            "unpacked_at": origin.unpacked_at,
            "processed_at": processed_at,
            "kind": kind,
            "subject": subject,
            "postings": [[account, amount] for account, amount in postings],
            "result": result,
            "reason": reason,
            "record_hash": origin.record_hash,
            "rule": rule,
            "identities": identities,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return JournalEntry(
        seq,
        head.hash,
        origin.request_id,
        origin.branch_id,
        origin.teller_id,
        origin.terminal_id,
        origin.origin_time,
        origin.received_at,
        origin.unpacked_at,
        processed_at,
        kind,
        subject,
        postings,
        result,
        reason,
        origin.record_hash,
        body_hash(body),
        rule,
        identities,
        body,
    )


def decode_entry(body: bytes, hash_: str) -> JournalEntry:
    """An entry from its stored canonical body and hash (not yet verified).

    Raises:
        pydantic.ValidationError: the body is not an entry.
    """
    return _ENTRY_ADAPTER.validate_python({**orjson.loads(body), "hash": hash_, "body": body})


def head_of(entry: JournalEntry) -> ChainHead:
    return ChainHead(entry.seq, entry.hash)


def verify_chain(entries: Iterable[JournalEntry], start: ChainHead = GENESIS) -> str | None:
    """Check that ``entries`` continue the chain at ``start``.

    Returns:
        None when every entry's hash covers its content and links to its predecessor, or a
        description of the first break.
    """
    head = start
    for entry in entries:
        if entry.seq != head.seq + 1:
            return f"entry {entry.seq} follows entry {head.seq}"
        if entry.prev_hash != head.hash:
            return f"entry {entry.seq} does not link to entry {head.seq}"
        if body_hash(entry_body(entry)) != entry.hash:
            return f"entry {entry.seq} does not match its hash"
        head = head_of(entry)
    return None
