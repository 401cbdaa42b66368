"""Evidence bundles: one disputed transaction, provable offline with public keys only.

A bundle (JSON, ``branchnet-evidence/1``) holds the journal entry as stored; the signed
checkpoint that covers it and the Merkle path from the entry's hash to that checkpoint's root;
the request record as kept (PIN blocks removed, identity numbers masked) with its index and
Merkle leaf in its frame, the frame's header as received (with the branch's signature where
frames are signed) and the path from the leaf to the header's Merkle root; the PIN
verification outcome; the identity documents checked (masked). The host signs the whole
bundle with its identity key, vouching for what only it saw (the link between the kept record
and the record it hashed).

:func:`verify_bundle` needs nothing but the bundle and the host's (and, for signed frames, the
branch's) public key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from common.envelope import verify_header
from common.frames import FrameHeader
from common.identity import public_pem, verify
from common.merkle import merkle_path, verify_path
from host_node.checkpoint import (
    decode_checkpoint,
    entry_link,
    link_valid,
    signature_valid,
)
from host_node.errors import StoreError
from host_node.evidence import FrameProof
from host_node.journal import JournalEntry, body_hash, decode_entry
from host_node.store import connect_read_only

FORMAT = "branchnet-evidence/1"


@dataclass(frozen=True, slots=True)
class BundleCheck:
    name: str
    ok: bool
    detail: str


def build_bundle(
    store_path: Path, request_id: str, key: Ed25519PrivateKey, *, seq: int | None = None
) -> dict[str, Any]:
    """The signed evidence bundle of ``request_id`` (its deciding entry, or entry ``seq``).

    Raises:
        StoreError: no such request, or its entry is not yet covered by a signed checkpoint.
    """
    connection = connect_read_only(store_path)
    try:
        entry = _entry(connection, request_id, seq)
        row = connection.execute(
            "SELECT body FROM checkpoints WHERE seq >= ? ORDER BY seq LIMIT 1", (entry.seq,)
        ).fetchone()
        if row is None:
            raise StoreError(
                f"entry {entry.seq} is not yet covered by a signed checkpoint "
                "(the host signs one within seconds, and at shutdown)"
            )
        checkpoint = decode_checkpoint(row[0])
        hashes = [
            h
            for (h,) in connection.execute(
                "SELECT hash FROM journal WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (checkpoint.first_seq, checkpoint.seq),
            )
        ]
        record = _record(connection, entry.seq)
    finally:
        connection.close()
    bundle: dict[str, Any] = {
        "format": FORMAT,
        "request_id": request_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "entry": {"seq": entry.seq, "hash": entry.hash, "body": entry.body.decode()},
        "checkpoint": orjson.loads(orjson.dumps(asdict(checkpoint))),
        "checkpoint_path": entry_link(hashes, entry.seq - checkpoint.first_seq),
        **record,
        "host_public_key": public_pem(key.public_key()).decode(),
    }
    bundle["signature"] = key.sign(_signed_bytes(bundle)).hex()
    return bundle


def _entry(connection: Any, request_id: str, seq: int | None) -> JournalEntry:
    rows = connection.execute(
        "SELECT seq, body, hash FROM journal WHERE request_id = ? ORDER BY seq", (request_id,)
    ).fetchall()
    entries = [decode_entry(bytes(body), hash_) for _, body, hash_ in rows]
    if seq is not None:
        entries = [e for e in entries if e.seq == seq]
    if not entries:
        raise StoreError(f"no journal entry for request {request_id[:40]!r}")
    deciding = [e for e in entries if e.result.value != "94"]
    return (deciding or entries)[-1]


def _record(connection: Any, seq: int) -> dict[str, Any]:
    row = connection.execute(
        "SELECT e.record, e.record_index, e.pin_outcome, e.documents, f.header, f.leaves "
        "FROM evidence e LEFT JOIN frames f ON f.digest = e.frame_digest WHERE e.journal_seq = ?",
        (seq,),
    ).fetchone()
    if row is None:
        raise StoreError(f"no evidence kept for entry {seq}")
    record, index, outcome, documents, header, leaves = row
    kept: dict[str, Any] = {
        "record": bytes(record).decode(),
        "record_index": index,
        "leaf_hash": None,
        "record_path": [],
        "frame_header": None,
    }
    if header is not None and index is not None:
        proof = FrameProof(bytes(header), bytes(leaves))
        kept["leaf_hash"] = proof.leaf(index).hex()
        kept["record_path"] = [
            (side, sibling.hex()) for side, sibling in merkle_path(proof.leaf_list(), index)
        ]
        kept["frame_header"] = proof.header.decode()
    return {
        "record": kept,
        "pin_verification": outcome,
        "identity_documents": [
            {"role": role, "id_type": id_type, "number": number}
            for role, id_type, number in orjson.loads(documents)
        ],
    }


def _signed_bytes(bundle: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {k: v for k, v in bundle.items() if k != "signature"}, option=orjson.OPT_SORT_KEYS
    )


def encode_bundle(bundle: Mapping[str, Any]) -> bytes:
    return orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def verify_bundle(
    raw: bytes,
    host_key: Ed25519PublicKey,
    branch_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> list[BundleCheck]:
    """Every check of a bundle, offline; the bundle holds up when all are ok."""
    try:
        bundle = orjson.loads(raw)
        if bundle.get("format") != FORMAT:
            return [BundleCheck("format", False, f"not a {FORMAT} document")]
        return _checks(bundle, host_key, branch_keys or {})
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        return [BundleCheck("format", False, f"unreadable bundle ({type(error).__name__})")]


def _checks(
    bundle: dict[str, Any],
    host_key: Ed25519PublicKey,
    branch_keys: Mapping[str, Ed25519PublicKey],
) -> list[BundleCheck]:
    checks: list[BundleCheck] = []
    signed = verify(host_key, bytes.fromhex(bundle["signature"]), _signed_bytes(bundle))
    checks.append(BundleCheck("host_signature", signed, "the host signed this bundle"))

    stored = bundle["entry"]
    body = stored["body"].encode()
    try:
        entry = decode_entry(body, stored["hash"])
    except ValidationError:
        return [*checks, BundleCheck("entry", False, "the journal entry cannot be read")]
    intact = body_hash(body) == stored["hash"] and entry.request_id == bundle["request_id"]
    checks.append(BundleCheck("entry", intact, f"journal entry {entry.seq} matches its hash"))

    checkpoint = decode_checkpoint(orjson.dumps(bundle["checkpoint"]))
    checks.append(
        BundleCheck(
            "checkpoint_signature",
            signature_valid(host_key, checkpoint),
            f"checkpoint {checkpoint.seq} (epoch {checkpoint.epoch}) signed by the host",
        )
    )
    path = [(side, sibling) for side, sibling in bundle["checkpoint_path"]]
    linked = checkpoint.first_seq <= entry.seq <= checkpoint.seq and link_valid(
        entry.hash, path, checkpoint
    )
    checks.append(
        BundleCheck(
            "entry_in_checkpoint",
            linked,
            f"entry {entry.seq} is among entries {checkpoint.first_seq}..{checkpoint.seq}",
        )
    )
    checks += _frame_checks(bundle["record"], entry, branch_keys)
    return checks


def _frame_checks(
    record: dict[str, Any], entry: JournalEntry, branch_keys: Mapping[str, Ed25519PublicKey]
) -> list[BundleCheck]:
    if record["frame_header"] is None or record["leaf_hash"] is None:
        return [BundleCheck("record_in_frame", False, "no frame kept for this record")]
    header = FrameHeader.model_validate_json(record["frame_header"])
    leaf = bytes.fromhex(record["leaf_hash"])
    steps = [(side, bytes.fromhex(sibling)) for side, sibling in record["record_path"]]
    inside = verify_path(leaf, steps, bytes.fromhex(header.merkle_root))
    from_branch = header.sender == entry.branch_id
    checks = [
        BundleCheck(
            "record_in_frame",
            inside and from_branch,
            f"record {record['record_index']} of frame {header.sequence} from {header.sender}",
        )
    ]
    if header.signature is None:
        checks.append(BundleCheck("frame_signature", True, "frame not signed by its branch"))
        return checks
    key = branch_keys.get(header.sender)
    if key is None:
        checks.append(
            BundleCheck("frame_signature", False, f"no public key given for {header.sender}")
        )
        return checks
    valid = verify_header(header, key)
    checks.append(BundleCheck("frame_signature", valid, f"frame signed by {header.sender}"))
    return checks
