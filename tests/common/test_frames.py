from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import FrameError
from common.frames import (
    MAX_FRAME_BYTES,
    FrameKind,
    build_frame,
    decode_frame,
    encode_frame,
)

# Compact JSON never holds a raw newline; records are any bytes without one.
records_strategy = st.lists(
    st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" not in b), min_size=1, max_size=50
)


@given(records_strategy, st.integers(min_value=0, max_value=2**40))
def test_round_trip(records: list[bytes], sequence: int) -> None:
    frame = build_frame(FrameKind.REQUEST, "0001", sequence, records)
    decoded = decode_frame(encode_frame(frame), expect=FrameKind.REQUEST)
    assert decoded == frame


@given(st.binary(max_size=2000))
def test_garbage_raises_frame_error_only(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(body)


def test_a_tampered_record_is_caught_by_the_merkle_root() -> None:
    body = encode_frame(build_frame(FrameKind.REQUEST, "0001", 1, [b'{"a":1}', b'{"a":2}']))
    with pytest.raises(FrameError, match="Merkle root"):
        decode_frame(body.replace(b'{"a":2}', b'{"a":3}'))


def test_a_dropped_record_is_caught_by_the_count() -> None:
    body = encode_frame(build_frame(FrameKind.REQUEST, "0001", 1, [b"x", b"y"]))
    with pytest.raises(FrameError, match="counts 2"):
        decode_frame(body[: -len(b"\ny")])


def test_oversize_frames_are_refused_before_parsing() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        decode_frame(b"x" * (MAX_FRAME_BYTES + 1))


def test_the_wrong_kind_is_refused() -> None:
    body = encode_frame(build_frame(FrameKind.REPLY, "host", 1, [b"x"]))
    with pytest.raises(FrameError, match="expected a request"):
        decode_frame(body, expect=FrameKind.REQUEST)


def test_empty_frames_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        build_frame(FrameKind.REQUEST, "0001", 1, [])
