"""Checkpoints: signatures, entry links and when one is due."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from host_node.checkpoint import (
    Segment,
    decode_checkpoint,
    encode_checkpoint,
    entry_link,
    link_valid,
    sign_checkpoint,
    signature_valid,
)
from tests.host_node.fakes import T0

KEY = Ed25519PrivateKey.generate()


def hashes(count: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{n}".encode()).hexdigest() for n in range(count)]


def test_a_signed_checkpoint_verifies_round_trips_and_names_its_head() -> None:
    covered = hashes(5)
    checkpoint = sign_checkpoint(KEY, covered, first_seq=11, epoch=2, signed_at=T0)
    assert (checkpoint.first_seq, checkpoint.seq, checkpoint.head_hash) == (11, 15, covered[-1])
    assert signature_valid(KEY.public_key(), checkpoint)
    decoded = decode_checkpoint(encode_checkpoint(checkpoint))
    assert decoded == checkpoint and decoded.signature == checkpoint.signature
    assert signature_valid(KEY.public_key(), decoded)


def test_any_change_or_another_key_fails_the_signature() -> None:
    checkpoint = sign_checkpoint(KEY, hashes(3), first_seq=1, epoch=0, signed_at=T0)
    other = Ed25519PrivateKey.generate().public_key()
    assert not signature_valid(other, checkpoint)
    assert not signature_valid(KEY.public_key(), replace(checkpoint, seq=4))
    assert not signature_valid(KEY.public_key(), replace(checkpoint, epoch=1))
    assert not signature_valid(KEY.public_key(), replace(checkpoint, signature="zz"))


@given(st.integers(1, 40), st.data())
def test_every_entry_links_to_its_checkpoint_and_no_other_hash_does(
    count: int, data: st.DataObject
) -> None:
    covered = hashes(count)
    checkpoint = sign_checkpoint(KEY, covered, first_seq=1, epoch=0, signed_at=T0)
    index = data.draw(st.integers(0, count - 1))
    path = entry_link(covered, index)
    assert link_valid(covered[index], path, checkpoint)
    assert not link_valid(hashes(1, "other")[0], path, checkpoint)


def test_a_segment_is_due_by_size_or_age_and_can_be_put_back() -> None:
    segment = Segment(1, every=3, interval_s=3600)
    assert not segment.due()
    segment.extend(hashes(2))
    assert not segment.due()
    segment.extend(hashes(1, "x"))
    assert segment.due()
    first, taken = segment.take()
    assert (first, len(taken), segment.first_seq, segment.due()) == (1, 3, 4, False)
    segment.extend(hashes(1, "y"))
    segment.put_back(first, taken)
    assert (segment.first_seq, len(segment.hashes)) == (1, 4)
    aged = Segment(1, every=1000, interval_s=0.0)
    aged.extend(hashes(1))
    assert aged.due()
