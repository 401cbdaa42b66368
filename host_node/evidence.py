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
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from common.envelope import RecordProof, header_json, verify_record
from common.frames import Frame, FrameHeader, FrameKind
from common.merkle import leaf_hash
from common.pin_commands import GenerateOffset, HsmError, PinCommand, PinResponse
from common.requests import OpenAccount, RecordError, Request, Withdraw
from host_node.immutable import immutable
from host_node.journal import JournalEntry, record_hash

#: What replaces a PIN block in a kept record.
REMOVED = "[removed]"
_PIN_FIELDS = ("pin", "new_pin")
_DOCUMENT_FIELDS = ("id_document", "withdrawer", "holder")
_OUTCOMES = {
    HsmError.OK: "00 PIN verified",
    HsmError.VERIFICATION_FAILED: "01 wrong PIN",
}


@immutable
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


def frame_proof(frame: Frame, leaves: Sequence[bytes] | None = None) -> FrameProof:
    """The proof of a (decoded, and where sealed, opened) frame: its header as the sender
    encoded it, signature included, and its records' Merkle leaves (``leaves``: already
    hashed, as an opened sealed frame's evidence holds them)."""
    header = header_json(frame.header)
    if leaves is None:
        leaves = [leaf_hash(r) for r in frame.records]
    return FrameProof(header, b"".join(leaves))


@immutable
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


def prove_entry(
    entry: JournalEntry, record: bytes, proof: RecordProof, branch_key: Ed25519PublicKey
) -> str | None:
    """Check that ``entry``'s request was signed by its branch.

    Args:
        entry: the journal entry (its ``record_hash`` names the request's bytes).
        record: the request record's bytes as received.
        proof: the record's proof from the frame it came in.
        branch_key: the public identity key of ``entry.branch_id``.

    Returns:
        None when the proof holds, else what fails.
    """
    if record_hash(record) != entry.record_hash:
        return "the record is not the one the entry journals"
    try:
        header = FrameHeader.model_validate_json(proof.header)
    except ValidationError:
        return "the proof's header is not a frame header"
    if header.kind is not FrameKind.REQUEST or header.sender != entry.branch_id:
        return f"the proof's frame is not a request of branch {entry.branch_id}"
    if not verify_record(record, proof, branch_key):
        return "the record's path or the header's signature does not verify"
    return None
