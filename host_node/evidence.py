"""What the host keeps beside each journal entry so a disputed transaction can be proven later.

Per entry (:class:`EntryEvidence`): the frame the record came in (by the digest of its header,
kept once per frame as a :class:`FrameProof`: the header as received, signature included where
frames are signed, and the Merkle leaf hashes of its records), the record's index in it, the
record with its PIN blocks removed and identity numbers masked, the crypto node's PIN
verification outcome, and the identity documents the rules checked (masked). Nothing here
holds a PIN, a PIN block or a full identity number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from common.merkle import leaf_hash
from common.pin_commands import GenerateOffset, HsmError, PinCommand, PinResponse
from common.requests import OpenAccount, RecordError, Request, Withdraw

#: What replaces a PIN block in a kept record.
REMOVED = "[removed]"
_PIN_FIELDS = ("pin", "new_pin")
_DOCUMENT_FIELDS = ("id_document", "withdrawer", "holder")
_OUTCOMES = {
    HsmError.OK: "00 PIN verified",
    HsmError.VERIFICATION_FAILED: "01 wrong PIN",
}


@dataclass(frozen=True, slots=True)
class FrameProof:
    """A request frame's header as received and the Merkle leaves of its records, in order."""

    header: bytes
    leaves: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.header).hexdigest()

    def leaf(self, index: int) -> bytes:
        return self.leaves[32 * index : 32 * (index + 1)]

    def leaf_list(self) -> list[bytes]:
        return [self.leaf(n) for n in range(len(self.leaves) // 32)]


def frame_proof(body: bytes, records: tuple[bytes, ...]) -> FrameProof:
    """The proof of a frame whose wire bytes are ``body`` and whose records are ``records``."""
    header = body.partition(b"\n")[0]
    return FrameProof(header, b"".join(leaf_hash(r) for r in records))


@dataclass(frozen=True, slots=True)
class EntryEvidence:
    """What the store keeps beside journal entry ``seq``."""

    seq: int
    frame_digest: str | None
    record_index: int | None
    record: bytes
    pin_outcome: str | None
    documents: tuple[tuple[str, str, str], ...]


def mask_id_number(number: str) -> str:
    """An identity number with all but its last four characters masked."""
    return "*" * max(0, len(number) - 4) + number[-4:]


def redact_record(raw: bytes) -> bytes:
    """The record as kept: PIN blocks removed, identity numbers masked; canonical JSON.

    A record that is not a JSON object is kept as nothing (its hash is in the entry).
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(document, dict):
        return b""
    for name in _PIN_FIELDS:
        if name in document:
            document[name] = REMOVED
    for name in _DOCUMENT_FIELDS:
        shown = document.get(name)
        if isinstance(shown, dict) and isinstance(shown.get("number"), str):
            document[name] = {**shown, "number": mask_id_number(shown["number"])}
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def documents_checked(record: Request | RecordError) -> tuple[tuple[str, str, str], ...]:
    """The identity documents a request showed: ``(role, id type, masked number)``."""
    shown: list[tuple[str, Any]] = []
    if isinstance(record, OpenAccount):
        shown.append(("holder", record.id_document))
    elif isinstance(record, Withdraw):
        shown += [("withdrawer", record.withdrawer), ("holder", record.holder)]
    return tuple(
        (role, document.id_type, mask_id_number(document.number))
        for role, document in shown
        if document is not None
    )


def pin_outcome(command: PinCommand | None, response: PinResponse | None) -> str | None:
    """The crypto node's verdict on a request's PIN, or None when no PIN was checked."""
    if command is None:
        return None
    if response is None:
        return "no answer from the crypto node"
    if isinstance(command, GenerateOffset) and response.error is HsmError.OK:
        return "00 PIN offset generated"
    return _OUTCOMES.get(response.error, f"{response.error.value} crypto node error")
