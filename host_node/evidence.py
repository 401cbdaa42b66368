"""Proving that a branch signed the request behind a journal entry.

For each request the host opened from a sealed frame, :meth:`host_node.intake.Item.proof`
gives a :class:`~common.envelope.RecordProof`: the signed frame header as received, the
record's index in the frame and its Merkle path. Kept with the request record's bytes beside
the journal entry, it lets anyone holding the branch's public identity key check, long after,
that this branch signed exactly this request, without seeing any other record of the frame.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from common.envelope import RecordProof, verify_record
from common.frames import FrameHeader, FrameKind
from host_node.journal import JournalEntry, record_hash


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
