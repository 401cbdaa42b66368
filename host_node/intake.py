"""Unpacking request frames into the records a batch processes.

A frame that cannot be decoded, or whose sender disagrees with the routing key it came by, is
refused whole (:class:`~common.errors.FrameError`, to be dead-lettered with its text as the
reason). Inside a good frame each record is decoded on its own: a request, a refusal that
names its request id (answered with its code), or a refusal without one (a copy of the record
goes to ``bn.dead``). One bad record never spoils its neighbours.

Sealed frames are opened by :class:`host_node.guard.Guard` first and handed to
:func:`unpack_frame` with their :class:`~common.envelope.FrameEvidence`; each item then carries
the evidence that its branch signed it (:meth:`Item.proof`: the signed header JSON, the
record's leaf index and Merkle path), for the journal to keep beside the entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection
from dataclasses import field

import orjson

from common.envelope import FrameEvidence, RecordProof
from common.errors import FrameError
from common.frames import Frame, FrameKind, decode_frame
from common.requests import KINDS, RecordError, Request, decode_request
from common.topology import branch_key
from host_node.evidence import FrameProof, frame_proof
from host_node.immutable import immutable
from host_node.journal import Origin, record_hash


@immutable(eq=False)
class Item:
    """One request record that names a request id, as the host unpacked it.

    ``record`` is the validated request, or the refusal of a record that failed validation.
    ``content_hash`` is the idempotency fingerprint: the sha256 of the request's canonical
    JSON, or of the raw bytes for a refused record. ``frame`` and ``index`` say where the record
    stood in its frame (the evidence of who sent it).
    """

    branch_id: str
    raw: bytes
    record: Request | RecordError
    content_hash: str
    received_at: dt.datetime
    unpacked_at: dt.datetime
    frame: FrameProof | None = None
    index: int | None = None
    #: The opened sealed frame's evidence (None: a plain frame); ``index`` is the record's.
    evidence: FrameEvidence | None = None
    #: The record's request id (an item always names one).
    request_id: str = field(init=False)
    #: The request's kind; for a refused record, the kind it claimed if that is one.
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        # kept, not properties: the batch reads each several times per record
        record = self.record
        assert record.request_id is not None, "items always name a request id"
        object.__setattr__(self, "request_id", record.request_id)
        kind = record.kind if not isinstance(record, RecordError) else _claimed_kind(self.raw)
        object.__setattr__(self, "kind", kind)

    def proof(self) -> RecordProof | None:
        """Evidence that the branch signed this record: verify it with
        :func:`common.envelope.verify_record` (or :func:`host_node.evidence.prove_entry`)."""
        if self.evidence is None or self.index is None:
            return None
        return self.evidence.proof(self.index)

    def origin(self) -> Origin:
        """Who originated the record and when the host received and unpacked it."""
        request = None if isinstance(self.record, RecordError) else self.record
        return Origin(
            request_id=self.request_id,
            branch_id=self.branch_id,
            teller_id=request.teller_id if request else None,
            terminal_id=request.terminal_id if request else self.request_id.split("-")[1],
            origin_time=request.origin_time if request else None,
            received_at=self.received_at,
            unpacked_at=self.unpacked_at,
            record_hash=record_hash(self.raw),
        )


def _claimed_kind(raw: bytes) -> str:
    """The kind a refused record claims, if it is one."""
    try:
        claimed = orjson.loads(raw).get("kind")
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown"
    return claimed if claimed in KINDS else "unknown"


@immutable
class DeadRecord:
    """A record refused without a usable request id: it goes to ``bn.dead`` with ``reason``."""

    raw: bytes
    reason: str


@immutable
class Unpacked:
    """A request frame taken apart."""

    branch_id: str
    frame: Frame
    items: tuple[Item, ...]
    dead: tuple[DeadRecord, ...]

    @property
    def size(self) -> int:
        return len(self.frame.records)


def content_hash(record: Request | RecordError, raw: bytes) -> str:
    """The idempotency fingerprint of a record (see :class:`Item`)."""
    if isinstance(record, RecordError):
        return hashlib.sha256(b"raw:" + raw).hexdigest()
    # model_dump(mode="json") without its wrapper's keyword handling: once per record
    document = record.__pydantic_serializer__.to_python(record, mode="json")
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sender_branch(frame: Frame, routing_key: str, branch_ids: Collection[str]) -> str:
    """The branch a request frame is from, when its header and routing key agree on one.

    Raises:
        FrameError: the routing key is not a registered branch's, or the sender disagrees.
    """
    sender = frame.header.sender
    if sender not in branch_ids:
        raise FrameError(f"frame from unregistered sender {sender[:8]!r}")
    if routing_key != branch_key(sender):
        raise FrameError(f"sender {sender} does not match routing key {routing_key[:32]!r}")
    return sender


def unpack(
    body: bytes,
    routing_key: str,
    branch_ids: Collection[str],
    *,
    received_at: dt.datetime,
    unpacked_at: dt.datetime,
) -> Unpacked:
    """Decode a request frame and each of its records.

    Raises:
        FrameError: the frame as a whole is refused; the text is the reason.
    """
    frame = decode_frame(body, expect=FrameKind.REQUEST)
    branch_id = sender_branch(frame, routing_key, branch_ids)
    return unpack_frame(frame, branch_id, received_at=received_at, unpacked_at=unpacked_at)


def unpack_frame(
    frame: Frame,
    branch_id: str,
    *,
    received_at: dt.datetime,
    unpacked_at: dt.datetime,
    evidence: FrameEvidence | None = None,
) -> Unpacked:
    """Decode each record of a frame already known to come from ``branch_id``."""
    items: list[Item] = []
    dead: list[DeadRecord] = []
    # an opened sealed frame's evidence holds the leaf hashes the guard checked
    proof = frame_proof(frame, evidence.leaves if evidence is not None else None)
    for index, raw in enumerate(frame.records):
        record = decode_request(raw, branch_id=branch_id)
        if isinstance(record, RecordError) and record.request_id is None:
            dead.append(DeadRecord(raw, f"{record.code.value} {record.reason}"))
            continue
        hashed = content_hash(record, raw)
        items.append(
            Item(branch_id, raw, record, hashed, received_at, unpacked_at, proof, index, evidence)
        )
    return Unpacked(branch_id, frame, tuple(items), tuple(dead))
