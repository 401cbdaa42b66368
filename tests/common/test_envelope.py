from __future__ import annotations

import os
import string

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from common.envelope import (
    FrameEvidence,
    RecordProof,
    SessionKey,
    header_json,
    open_records,
    prove_record,
    read_sealed,
    seal,
    signing_bytes,
    verify_header,
    verify_record,
)
from common.errors import FrameError
from common.frames import FrameKind

BRANCH_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
SESSION = SessionKey(7, bytes(range(32)))

records_strategy = st.lists(
    st.binary(min_size=1, max_size=120).filter(lambda b: b"\n" not in b), min_size=1, max_size=40
)


def _sealed(records: list[bytes], sequence: int = 1) -> bytes:
    return seal(FrameKind.REQUEST, "0001", sequence, records, SESSION, BRANCH_KEY)


@settings(max_examples=50, deadline=None)
@given(records_strategy, st.integers(min_value=0, max_value=2**40))
def test_sealed_frames_open_to_the_same_records(records: list[bytes], sequence: int) -> None:
    sealed = read_sealed(_sealed(records, sequence))
    assert sealed.header.epoch == 7 and sealed.header.sequence == sequence
    assert verify_header(sealed.header, BRANCH_KEY.public_key())
    assert not verify_header(sealed.header, OTHER_KEY.public_key())
    assert open_records(sealed, SESSION) == tuple(records)


@settings(max_examples=30, deadline=None)
@given(records_strategy, st.integers(min_value=0, max_value=2**40))
def test_a_sealed_header_is_the_canonical_json_and_signs_the_unsigned_json(
    records: list[bytes], sequence: int
) -> None:
    # seal splices the signature into the signed bytes instead of serialising a signed copy
    sealed = read_sealed(_sealed(records, sequence))
    assert sealed.header_bytes == header_json(sealed.header)
    unsigned = sealed.header.model_copy(update={"signature": None})
    assert signing_bytes(sealed.header) == header_json(unsigned) == signing_bytes(unsigned)


def test_records_are_not_readable_on_the_wire() -> None:
    secret = b'{"customer_name":"Zhang San","id":"110101199003070000"}'
    body = _sealed([secret])
    assert b"Zhang" not in body and b"1101011990" not in body


@pytest.mark.parametrize(
    "field, value", [("sequence", 2), ("epoch", 8), ("sender", "0002"), ("count", 3)]
)
def test_a_changed_header_fails_signature_and_decryption(field: str, value: object) -> None:
    sealed = read_sealed(_sealed([b"a", b"b"]))
    changed = sealed.header.model_copy(update={field: value})
    assert not verify_header(changed, BRANCH_KEY.public_key())
    forged = type(sealed)(changed, sealed.header_bytes, sealed.payload)
    with pytest.raises(FrameError, match="does not decrypt"):
        open_records(forged, SESSION)


def test_a_flipped_ciphertext_byte_or_wrong_key_does_not_decrypt() -> None:
    body = bytearray(_sealed([b"record"]))
    body[-1] ^= 1
    with pytest.raises(FrameError, match="does not decrypt"):
        open_records(read_sealed(bytes(body)), SESSION)
    with pytest.raises(FrameError, match="does not decrypt"):
        open_records(read_sealed(_sealed([b"record"])), SessionKey(7, os.urandom(32)))


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_garbage_raises_frame_error_only(body: bytes) -> None:
    try:
        sealed = read_sealed(body)
    except FrameError:
        return
    with pytest.raises(FrameError):
        open_records(sealed, SESSION)


@settings(max_examples=50, deadline=None)
@given(records_strategy, st.data())
def test_one_record_is_proven_signed_without_the_others(
    records: list[bytes], data: st.DataObject
) -> None:
    sealed = read_sealed(_sealed(records))
    index = data.draw(st.integers(min_value=0, max_value=len(records) - 1))
    proof = prove_record(sealed.header_bytes, records, index)
    again = RecordProof.from_json(proof.to_json())
    assert again == proof
    assert verify_record(records[index], again, BRANCH_KEY.public_key())
    assert not verify_record(records[index] + b"x", again, BRANCH_KEY.public_key())
    assert not verify_record(records[index], again, OTHER_KEY.public_key())
    assert FrameEvidence.of(sealed.header_bytes, records).proofs()[index] == proof


def test_a_proof_cannot_claim_another_position() -> None:
    records = [b"a", b"b", b"c"]
    sealed = read_sealed(_sealed(records))
    proof = prove_record(sealed.header_bytes, records, 0)
    moved = RecordProof(proof.header, 1, proof.path)
    assert not verify_record(b"a", moved, BRANCH_KEY.public_key())


def test_a_proof_with_a_forged_header_fails() -> None:
    records = [b"a", b"b"]
    sealed = read_sealed(_sealed(records))
    proof = prove_record(sealed.header_bytes, records, 1)
    forged = proof.header.replace('"sequence":1', '"sequence":9')
    assert forged != proof.header
    assert not verify_record(b"b", RecordProof(forged, 1, proof.path), BRANCH_KEY.public_key())


@settings(max_examples=60, deadline=None)
@given(
    st.text(string.printable, max_size=140) | st.from_regex(r"\A[0-9a-fA-F]{128}\Z"), st.booleans()
)
def test_a_headers_json_is_its_serialisation_whatever_its_signature(
    signature: str, signed_first: bool
) -> None:
    # header_json reuses the signing bytes just computed; any signature must come out as the
    # header's own serialisation (the evidence kept per frame is these bytes)
    header = read_sealed(_sealed([b'{"r":1}'], 5)).header.model_copy(
        update={"signature": signature}
    )
    if signed_first:
        signing_bytes(header)
    assert header_json(header) == header.__pydantic_serializer__.to_json(header, exclude_none=True)
