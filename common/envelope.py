"""Secure envelopes: request and reply frames encrypted and signed (DESIGN.md "Frames").

Wire form of a sealed frame::

    <signed header JSON>\\n<12-byte nonce><AES-GCM ciphertext of the record lines>

The header stays clear: sender, kind, key ``epoch``, ``sequence``, ``count`` and the Merkle
root of the *clear* records' leaf hashes; ``signature`` is the sender's Ed25519 signature
(hex) over :func:`signing_bytes` (the header without its signature). The record block (the
records joined by newlines, as in a plain frame) is encrypted once with AES-GCM under the
session key, with the same signing bytes as associated data, so header and records cannot
be separated or re-paired. One GCM over the block rather than one per record: it costs one
nonce and tag per frame instead of per record, and the Merkle root still lets any single
record be proven later (:func:`prove_record`, :func:`verify_record`) without the others.

Plain frames that are only signed (sign-on) use :func:`sign_header` on an ordinary frame.
Everything here is pure: no I/O, no clocks beyond the header's ``created_at``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from common.errors import FrameError
from common.frames import FrameHeader, FrameKind, build_frame, read_header
from common.identity import verify
from common.merkle import leaf_hash, merkle_paths, merkle_root, verify_path

#: Domain separation for header signatures: a frame signature is never valid elsewhere.
SIGNATURE_CONTEXT = b"branchnet/frame-header/v1\x00"
NONCE_BYTES = 12
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A session's AES-256-GCM key under its key epoch."""

    epoch: int
    key: bytes = field(repr=False)
    _cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError("a session key is 32 bytes")
        object.__setattr__(self, "_cipher", AESGCM(self.key))

    def cipher(self) -> AESGCM:
        """The key's AES-GCM cipher (made once; it keeps no state between messages)."""
        return self._cipher


_SIGNATURE = {"signature"}
#: The last header whose signing bytes were computed, and those bytes: opening a frame needs
#: them twice (signature, then associated data) for the same immutable header object.
_last_signed: tuple[FrameHeader, bytes] | None = None


def signing_bytes(header: FrameHeader) -> bytes:
    """What a header's signature covers: the header without its signature, as JSON."""
    global _last_signed
    last = _last_signed
    if last is not None and last[0] is header:
        return last[1]
    signed = header.__pydantic_serializer__.to_json(header, exclude=_SIGNATURE, exclude_none=True)
    _last_signed = (header, signed)
    return signed


def sign_header(header: FrameHeader, identity: Ed25519PrivateKey) -> FrameHeader:
    """``header`` with the signature of ``identity``."""
    signature = identity.sign(SIGNATURE_CONTEXT + signing_bytes(header)).hex()
    return header.model_copy(update={"signature": signature})


def verify_header(header: FrameHeader, public_key: Ed25519PublicKey) -> bool:
    """True when the header carries ``public_key``'s valid signature."""
    if header.signature is None or len(header.signature) != 128:
        return False
    try:
        signature = bytes.fromhex(header.signature)
    except ValueError:
        return False
    return verify(public_key, signature, SIGNATURE_CONTEXT + signing_bytes(header))


def header_json(header: FrameHeader) -> bytes:
    """The header's JSON as a frame carries it (signature included where it has one).

    For the header whose :func:`signing_bytes` were the last computed (a frame being opened:
    the guard's checks, then its evidence), those bytes with the signature added, as
    :func:`seal` writes them, instead of serialising the header again.
    """
    signature = header.signature
    last = _last_signed
    if (
        last is not None
        and last[0] is header
        and signature is not None
        and signature.isascii()
        and signature.isalnum()  # JSON-escapes to itself
    ):
        return b'%s,"signature":"%s"}' % (last[1][:-1], signature.encode())
    return header.__pydantic_serializer__.to_json(header, exclude_none=True)


def seal(
    kind: FrameKind,
    sender: str,
    sequence: int,
    records: Sequence[bytes],
    session: SessionKey,
    identity: Ed25519PrivateKey,
) -> bytes:
    """A sealed frame's wire bytes: records encrypted under ``session``, header signed."""
    frame = build_frame(kind, sender, sequence, records, epoch=session.epoch)
    signed = signing_bytes(frame.header)  # a fresh header has no signature yet
    signature = identity.sign(SIGNATURE_CONTEXT + signed).hex()
    # The signed header's JSON is the unsigned one with the signature, its last field, added:
    # what header_json gives for the header with that signature, without a model copy.
    head = b'%s,"signature":"%s"}' % (signed[:-1], signature.encode())
    nonce = os.urandom(NONCE_BYTES)
    block = session.cipher().encrypt(nonce, b"\n".join(records), signed)
    return head + b"\n" + nonce + block


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed frame read as far as its clear header; the records still encrypted."""

    header: FrameHeader
    header_bytes: bytes
    payload: bytes = field(repr=False)


def read_sealed(body: bytes) -> Sealed:
    """Split a sealed frame into its header and encrypted payload (nothing verified yet).

    Raises:
        FrameError: too large, or a header that is not a frame header.
    """
    header, head, payload = read_header(body)
    if len(payload) < NONCE_BYTES + 16:
        raise FrameError("sealed frame has no record block")
    return Sealed(header, head, payload)


def open_records(sealed: Sealed, session: SessionKey) -> tuple[bytes, ...]:
    """Decrypt and check a sealed frame's records (its signature checked by the caller).

    Raises:
        FrameError: the block does not decrypt under ``session`` with this header, or the
            records disagree with the header's count or Merkle root.
    """
    return open_records_and_leaves(sealed, session)[0]


def open_records_and_leaves(
    sealed: Sealed, session: SessionKey
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """:func:`open_records`, with the records' Merkle leaf hashes it checked (for
    :class:`FrameEvidence`, so they are not hashed twice).

    Raises:
        FrameError: as :func:`open_records`.
    """
    nonce, block = sealed.payload[:NONCE_BYTES], sealed.payload[NONCE_BYTES:]
    try:
        clear = session.cipher().decrypt(nonce, block, signing_bytes(sealed.header))
    except InvalidTag:
        raise FrameError(f"record block does not decrypt under epoch {session.epoch}") from None
    records = tuple(clear.split(b"\n")) if clear else ()
    if len(records) != sealed.header.count:
        raise FrameError(f"header counts {sealed.header.count} records, frame holds {len(records)}")
    leaves = tuple([leaf_hash(r) for r in records])
    if merkle_root(leaves).hex() != sealed.header.merkle_root:
        raise FrameError("records do not match the header's Merkle root")
    return records, leaves


# -- evidence: one record proven signed without the others --------------------------------------


@dataclass(frozen=True, slots=True)
class RecordProof:
    """Evidence that a record was in a frame its sender signed.

    ``header`` is the signed header JSON as received; ``index`` the record's place in the
    frame; ``path`` the Merkle siblings (``"L"``/``"R"``, hex hash) from its leaf to the root.
    """

    header: str
    index: int
    path: tuple[tuple[str, str], ...]

    def to_json(self) -> bytes:
        return orjson.dumps({"header": self.header, "index": self.index, "path": self.path})

    @classmethod
    def from_json(cls, text: bytes | str) -> RecordProof:
        document = orjson.loads(text)
        path = tuple((str(side), str(sibling)) for side, sibling in document["path"])
        return cls(str(document["header"]), int(document["index"]), path)


@dataclass(slots=True, eq=False)
class FrameEvidence:
    """What a host keeps of one opened frame so any of its records can be proven later:
    the signed header as received and the records' leaf hashes (not the records). Proofs
    are computed for the whole frame at the first request, O(n log n)."""

    header: bytes
    leaves: tuple[bytes, ...] = field(repr=False)
    _proofs: list[RecordProof] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, header: bytes, records: Sequence[bytes]) -> FrameEvidence:
        return cls(header, tuple(leaf_hash(r) for r in records))

    def proof(self, index: int) -> RecordProof:
        """The proof of record ``index`` of the frame."""
        return self.proofs()[index]

    def proofs(self) -> list[RecordProof]:
        """Every record's proof, in frame order."""
        if self._proofs is None:
            header = self.header.decode()
            self._proofs = [
                RecordProof(header, index, tuple((side, h.hex()) for side, h in path))
                for index, path in enumerate(merkle_paths(self.leaves))
            ]
        return self._proofs


def prove_record(header: bytes, records: Sequence[bytes], index: int) -> RecordProof:
    """The proof for ``records[index]`` of a frame whose signed header is ``header``."""
    return FrameEvidence.of(header, records).proofs()[index]


def verify_record(record: bytes, proof: RecordProof, public_key: Ed25519PublicKey) -> bool:
    """True when ``record`` was record ``proof.index`` of a frame ``public_key`` signed."""
    try:
        header = FrameHeader.model_validate_json(proof.header)
        path = [(side, bytes.fromhex(sibling)) for side, sibling in proof.path]
    except (ValidationError, ValueError):
        return False
    if not 0 <= proof.index < header.count or any(side not in "LR" for side, _ in path):
        return False
    if not _path_fits(proof.index, header.count, [side for side, _ in path]):
        return False
    root = bytes.fromhex(header.merkle_root)
    return verify_path(leaf_hash(record), path, root) and verify_header(header, public_key)


def _path_fits(index: int, count: int, sides: list[str]) -> bool:
    """The path's shape is the one leaf ``index`` of ``count`` has (so a proof cannot claim
    another position in the frame)."""
    expected: list[str] = []
    size = count
    while size > 1:
        sibling = index ^ 1
        if sibling < size:
            expected.append("L" if sibling < index else "R")
        index //= 2
        size = (size + 1) // 2
    return expected == sides
