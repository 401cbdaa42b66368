"""Reply records: wire bytes encoded once, and the same bytes as the model's own encoding."""

from __future__ import annotations

import datetime as dt
import pickle

from hypothesis import given
from hypothesis import strategies as st

from common.replies import Reply, decode_reply, encode_reply
from common.results import ResultCode

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
_maybe_int = st.none() | st.integers(min_value=-(2**53), max_value=2**53)
_maybe_text = st.none() | st.text(max_size=40)

replies = st.builds(
    Reply,
    request_id=st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{1,9}\Z"),
    result=st.sampled_from(ResultCode),
    reason=st.text(max_size=80),
    balance=_maybe_int,
    amount=_maybe_int,
    available=_maybe_int,
    account=_maybe_text,
    received_at=st.datetimes(timezones=st.just(dt.UTC)),
    processed_at=st.datetimes(timezones=st.just(dt.UTC)),
    journal_seq=st.none() | st.integers(min_value=0, max_value=2**40),
    rule=_maybe_text,
)


@given(replies)
def test_a_reply_encodes_to_the_models_json_every_time(reply: Reply) -> None:
    expected = reply.model_dump_json().encode()
    assert encode_reply(reply) == expected
    assert encode_reply(reply) is encode_reply(reply)  # encoded once, then kept
    assert decode_reply(encode_reply(reply)) == reply


def test_the_kept_bytes_stay_out_of_equality_and_serialisation() -> None:
    reply = Reply(
        request_id="0001-01-7", result=ResultCode.APPROVED, reason="approved", balance=5,
        received_at=T0, processed_at=T0,
    )  # fmt: skip
    fresh = reply.model_copy()
    encode_reply(reply)
    assert reply == fresh and hash(reply) == hash(fresh)
    assert reply.model_dump() == fresh.model_dump() and repr(reply) == repr(fresh)
    assert reply.model_dump_json() == fresh.model_dump_json()
    assert pickle.loads(pickle.dumps(reply)) == fresh


def test_a_changed_copy_is_encoded_afresh() -> None:
    reply = Reply(
        request_id="0001-01-7", result=ResultCode.APPROVED, reason="approved", balance=5,
        received_at=T0, processed_at=T0,
    )  # fmt: skip
    encode_reply(reply)
    changed = reply.model_copy(update={"balance": 6})
    assert b'"balance":6' in encode_reply(changed)
    assert b'"balance":5' in encode_reply(reply)
