"""Frames: the unit on the wire, a header plus a batch of 1..N records.

Wire form: the header as one line of JSON, then each record's bytes on a line of its own
(records are compact JSON, which never holds a raw newline). Records are hashed exactly as
transmitted, and the header carries the Merkle root of those hashes; the secure-envelope
layer encrypts the record lines and signs the header (``signature``, ``epoch``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import FrameError
from common.merkle import leaf_hash, merkle_root

FRAME_VERSION = 1
#: Largest frame accepted, in bytes.
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: Most records in one frame.
MAX_RECORDS = 4096


class FrameKind(StrEnum):
    REQUEST = "request"
    REPLY = "reply"
    PIN_COMMAND = "pin_command"
    PIN_RESPONSE = "pin_response"
    JOURNAL = "journal"
    ACK = "ack"
    #: Session set-up between a branch and the host (common.signon); signed, never encrypted.
    SIGN_ON = "sign_on"


class FrameHeader(BaseModel):
    """The clear part of a frame: who sent what, when, and a digest of the records."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = FRAME_VERSION
    kind: FrameKind
    sender: str = Field(min_length=1, max_length=32)
    epoch: int = Field(default=0, ge=0)
    sequence: int = Field(ge=0)
    created_at: dt.datetime
    count: int = Field(ge=1, le=MAX_RECORDS)
    merkle_root: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: its header and its records' bytes in order."""

    header: FrameHeader
    records: tuple[bytes, ...]


def build_frame(
    kind: FrameKind, sender: str, sequence: int, records: Sequence[bytes], *, epoch: int = 0
) -> Frame:
    """Make a frame over ``records`` with a fresh header."""
    if not 1 <= len(records) <= MAX_RECORDS:
        raise ValueError(f"a frame holds 1..{MAX_RECORDS} records, not {len(records)}")
    header = FrameHeader(
        kind=kind,
        sender=sender,
        epoch=epoch,
        sequence=sequence,
        created_at=dt.datetime.now(dt.UTC),
        count=len(records),
        merkle_root=merkle_root([leaf_hash(r) for r in records]).hex(),
    )
    return Frame(header, tuple(records))


def encode_frame(frame: Frame) -> bytes:
    """The frame's wire bytes."""
    head = frame.header.__pydantic_serializer__.to_json(frame.header, exclude_none=True)
    return b"\n".join((head, *frame.records))


def read_header(body: bytes) -> tuple[FrameHeader, bytes, bytes]:
    """Split a frame into its checked header, the header's bytes and the rest after the newline.

    Raises:
        FrameError: too large, a header that is not a frame header, or another version.
    """
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    head, _, rest = body.partition(b"\n")
    try:
        header = FrameHeader.model_validate_json(head)
    except ValidationError as error:
        problem = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise FrameError(f"bad frame header: {where or 'header'}: {problem['type']}") from None
    if header.version != FRAME_VERSION:
        raise FrameError(f"unsupported frame version {header.version}")
    return header, head, rest


def decode_frame(body: bytes, *, expect: FrameKind | None = None) -> Frame:
    """Parse and check a frame's structure.

    Raises:
        FrameError: too large, a bad header, a record count or Merkle root that disagrees
            with the records, or a kind other than ``expect``.
    """
    header, _, rest = read_header(body)
    if expect is not None and header.kind is not expect:
        raise FrameError(f"expected a {expect} frame, got {header.kind}")
    records = tuple(rest.split(b"\n")) if rest else ()
    if len(records) != header.count:
        raise FrameError(f"header counts {header.count} records, frame holds {len(records)}")
    if merkle_root([leaf_hash(r) for r in records]).hex() != header.merkle_root:
        raise FrameError("records do not match the header's Merkle root")
    return Frame(header, records)
