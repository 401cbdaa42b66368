from __future__ import annotations

import orjson
import pytest

from common.errors import FrameError
from common.frames import FrameKind, build_frame, encode_frame
from common.requests import RecordError, encode_request
from common.results import ResultCode
from host_node.intake import Unpacked, content_hash, unpack
from tests.host_node.fakes import T0, Teller, account_no

A = account_no(1)
BRANCHES = frozenset({"0001", "0002"})


def frame_bytes(
    records: list[bytes], sender: str = "0001", kind: FrameKind = FrameKind.REQUEST
) -> bytes:
    return encode_frame(build_frame(kind, sender, 1, records))


def unpacked(body: bytes, routing_key: str = "branch.0001") -> Unpacked:
    return unpack(body, routing_key, BRANCHES, received_at=T0, unpacked_at=T0)


def request_id_of(raw: bytes) -> str:
    return str(orjson.loads(raw)["request_id"])


def test_good_and_bad_records_are_sorted() -> None:
    teller = Teller()
    good = encode_request(teller.deposit(A, 100))
    other_branch = encode_request(Teller(branch_id="0002").deposit(A, 100))
    no_kind = orjson.dumps({"request_id": "0001-01-0000000009", "kind": "teleport"})
    result = unpacked(frame_bytes([good, b"not json", other_branch, no_kind]))
    assert result.branch_id == "0001" and result.size == 4
    assert [item.raw for item in result.items] == [good, no_kind]
    refused = result.items[1].record
    assert isinstance(refused, RecordError) and refused.code is ResultCode.INVALID_TRANSACTION
    assert [(i.request_id, i.kind) for i in result.items] == [
        (request_id_of(good), "deposit"),
        ("0001-01-0000000009", "unknown"),
    ]
    assert [d.raw for d in result.dead] == [b"not json", other_branch]
    assert result.dead[0].reason == "30 record is not valid JSON"
    assert result.dead[1].reason == "30 record names another branch"


@pytest.mark.parametrize(
    ("body", "routing_key", "reason"),
    [
        (b"\x00\x01garbage", "branch.0001", "bad frame header"),
        (frame_bytes([b"{}"], kind=FrameKind.REPLY), "branch.0001", "expected a request frame"),
        (frame_bytes([b"{}"], sender="0002"), "branch.0001", "does not match routing key"),
        (frame_bytes([b"{}"], sender="0009"), "branch.0009", "unregistered sender"),
        (b"x" * (4 * 1024 * 1024 + 1), "branch.0001", "exceeds"),
    ],
)
def test_frames_refused_whole(body: bytes, routing_key: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        unpacked(body, routing_key)


def test_content_hash_ignores_key_order_but_not_content() -> None:
    request = Teller().deposit(A, 100)
    raw = encode_request(request)
    shuffled = orjson.dumps(dict(reversed(list(orjson.loads(raw).items()))))
    items = unpacked(frame_bytes([raw, shuffled])).items
    assert items[0].content_hash == items[1].content_hash == content_hash(request, raw)
    changed = request.model_copy(update={"amount": 101})
    assert content_hash(changed, encode_request(changed)) != items[0].content_hash


def test_a_refused_record_keeps_what_it_claimed() -> None:
    teller = Teller(terminal_id="03")
    document = orjson.loads(encode_request(teller.withdraw(A, 100, teller.pin("1234"))))
    raw = orjson.dumps({**document, "amount": 1.5})
    (item,) = unpacked(frame_bytes([raw])).items
    assert isinstance(item.record, RecordError) and item.record.code is ResultCode.INVALID_AMOUNT
    assert item.kind == "withdraw"
    origin = item.origin()
    assert (origin.terminal_id, origin.teller_id, origin.origin_time) == ("03", None, None)
    assert origin.request_id == document["request_id"]


def test_a_refused_record_keeps_the_kind_it_claims_when_it_is_one() -> None:
    claimed = orjson.dumps({"request_id": "0001-01-7", "kind": "withdraw", "amount": "x"})
    (item,) = unpacked(frame_bytes([claimed])).items
    assert isinstance(item.record, RecordError)
    assert (item.request_id, item.kind) == ("0001-01-7", "withdraw")
