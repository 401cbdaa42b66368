"""The event schema: bands, masking, round trips, and refusal of unmasked numbers."""

from __future__ import annotations

import datetime as dt

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.events import (
    EVENT_MODELS,
    AmountBand,
    EventType,
    LargeCash,
    NodeStatus,
    SecurityAlert,
    SecurityAlertKind,
    StatsSummary,
    amount_band,
    decode_events,
    decode_stats,
    encode_event,
    encode_events,
    mask_account,
    scrub,
)
from common.ids import card_number
from common.money import yuan
from common.results import ResultCode

AT = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def test_amount_bands() -> None:
    assert amount_band(None) is AmountBand.NONE
    assert amount_band(0) is AmountBand.NONE
    assert amount_band(yuan(999, 99)) is AmountBand.UNDER_1K
    assert amount_band(yuan(1_000)) is AmountBand.UNDER_10K
    assert amount_band(yuan(49_999)) is AmountBand.UNDER_50K
    assert amount_band(yuan(50_000)) is AmountBand.UNDER_200K
    assert amount_band(yuan(200_000)) is AmountBand.LARGE


@given(st.text(max_size=300))
def test_scrub_leaves_no_long_digit_run(text: str) -> None:
    cleaned = scrub(text)
    assert len(cleaned) <= 200
    run = 0
    for char in cleaned:
        run = run + 1 if char.isdigit() and char.isascii() else 0
        assert run < 8


def test_scrub_masks_identity_numbers_and_cards() -> None:
    card = card_number("0001", "01", 42)
    text = scrub(f"holder 11010119900307123X card {card} passport E12345678 ok")
    assert "11010119900307123X" not in text and card not in text and "E12345678" not in text
    assert text.startswith("holder ") and text.endswith(" ok")


def test_a_large_cash_event_refuses_a_full_card_number() -> None:
    card = card_number("0001", "01", 42)
    fields = {
        "node": "host",
        "branch": "0001",
        "at": AT,
        "request_id": "0001-01-0000000001",
        "request_kind": "withdraw",
        "amount_fen": yuan(60_000),
        "result": ResultCode.APPROVED,
        "identity_shown": True,
        "third_party": False,
    }
    with pytest.raises(pydantic.ValidationError):
        LargeCash(**fields, account=card)
    event = LargeCash(**fields, account=mask_account(card))
    assert event.account == card[:6] + "******" + card[-4:]
    assert decode_events(encode_events([event])) == [event]


def test_every_event_type_has_a_model_and_round_trips() -> None:
    assert set(EVENT_MODELS) == set(EventType)
    up = NodeStatus(node="host", at=AT, status="up", role="primary")
    assert up.type is EventType.NODE_STATUS and up.branch == "network"
    assert decode_events(encode_events([up])) == [up]
    summary = StatsSummary(node="host", at=AT, interval_s=1.0, tps=10.0, requests=10)
    assert decode_stats(encode_event(summary)) == summary


def test_a_message_carries_an_array_of_events_each_with_its_version() -> None:
    up = NodeStatus(node="host", at=AT, status="up", role="primary")
    alert = SecurityAlert(node="host", at=AT, alert=SecurityAlertKind.REPLAY, detail="seq 7")
    body = encode_events([up, alert])
    assert body.startswith(b'[{"v":1,') and body.count(b'"v":1') == 2
    assert decode_events(body) == [up, alert]


@pytest.mark.parametrize(
    "body",
    [
        encode_event(NodeStatus(node="host", at=AT, status="up")),  # one document, not an array
        b"[]",
        b"not json",
        # one element of another schema version refuses the whole message
        encode_events(
            [NodeStatus(node="host", at=AT, status="up"), NodeStatus(node="b", at=AT, status="up")]
        ).replace(b'"v":1', b'"v":2', 1),
    ],
)
def test_what_is_not_an_array_of_events_of_this_version_is_refused(body: bytes) -> None:
    with pytest.raises(pydantic.ValidationError):
        decode_events(body)
