from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.ids import card_number
from common.requests import (
    Deposit,
    EncryptedPin,
    RecordError,
    Transfer,
    decode_request,
    encode_request,
)
from common.results import ResultCode

ACCOUNT = card_number("0001", "01", 1)
OTHER = card_number("0001", "01", 2)
PIN = EncryptedPin(pin_block="0123456789ABCDEF0123456789ABCDEF", ksn="B000000100010001000000A1")


def deposit(**fields: object) -> dict[str, object]:
    document: dict[str, object] = {
        "request_id": "0001-01-0000000001",
        "branch_id": "0001",
        "teller_id": "T01",
        "terminal_id": "01",
        "origin_time": "2026-11-28T10:00:00Z",
        "kind": "deposit",
        "account": ACCOUNT,
        "amount": 10_000,
    }
    document.update(fields)
    return document


def decode(document: dict[str, object]) -> object:
    return decode_request(json.dumps(document).encode(), branch_id="0001")


def test_a_good_record_round_trips() -> None:
    request = Transfer(
        request_id="0001-01-0000000007",
        branch_id="0001",
        teller_id="T01",
        terminal_id="01",
        origin_time=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
        account=ACCOUNT,
        to_account=OTHER,
        amount=1,
        pin=PIN,
    )
    assert decode_request(encode_request(request)) == request


def test_a_deadline_round_trips_and_a_record_without_one_keeps_its_bytes() -> None:
    legacy = decode(deposit())
    assert isinstance(legacy, Deposit) and legacy.deadline is None
    assert b"deadline" not in encode_request(legacy)  # old records: same bytes, same hash
    due = decode(deposit(deadline="2026-11-28T10:00:30Z"))
    assert isinstance(due, Deposit)
    assert due.deadline == dt.datetime(2026, 11, 28, 10, 0, 30, tzinfo=dt.UTC)
    assert decode_request(encode_request(due)) == due
    naive = decode(deposit(deadline="2026-11-28T10:00:30"))  # no time zone: not comparable
    assert isinstance(naive, RecordError) and naive.code is ResultCode.FORMAT_ERROR
    assert naive.request_id == "0001-01-0000000001"


@pytest.mark.parametrize("amount", [-1, 0, 1.5, 100.0, "100", True, None, 10**30, 10**12])
def test_bad_amounts_get_13(amount: object) -> None:
    result = decode(deposit(amount=amount))
    assert isinstance(result, RecordError)
    assert result.code is ResultCode.INVALID_AMOUNT
    assert result.request_id == "0001-01-0000000001"


@pytest.mark.parametrize("account", ["6200010100000012", "62000101", "x" * 16, ""])
def test_malformed_account_numbers_get_14(account: str) -> None:
    result = decode(deposit(account=account))
    assert isinstance(result, RecordError)
    assert result.code is ResultCode.NO_SUCH_ACCOUNT


def test_unknown_kind_gets_12() -> None:
    result = decode(deposit(kind="buy_gold"))
    assert isinstance(result, RecordError) and result.code is ResultCode.INVALID_TRANSACTION


@pytest.mark.parametrize("field", ["teller_id", "terminal_id", "origin_time", "account"])
def test_missing_fields_get_30(field: str) -> None:
    document = deposit()
    del document[field]
    result = decode(document)
    assert isinstance(result, RecordError) and result.code is ResultCode.FORMAT_ERROR


def test_extra_fields_get_30() -> None:
    result = decode(deposit(note="hello"))
    assert isinstance(result, RecordError) and result.code is ResultCode.FORMAT_ERROR


@pytest.mark.parametrize("request_id", [None, "", "0002-01-1", "0001-01-", 42, "0001-01-1" * 9])
def test_records_without_a_usable_request_id_cannot_be_answered(request_id: object) -> None:
    result = decode(deposit(request_id=request_id))
    assert isinstance(result, RecordError) and result.request_id is None


def test_a_record_naming_another_branch_is_refused() -> None:
    result = decode(deposit(branch_id="0002"))
    assert isinstance(result, RecordError) and result.code is ResultCode.FORMAT_ERROR


def test_oversized_records_are_refused() -> None:
    result = decode(deposit(teller_id="T" * 10_000))
    assert isinstance(result, RecordError) and result.code is ResultCode.FORMAT_ERROR


@given(st.binary(max_size=500))
def test_garbage_never_raises(raw: bytes) -> None:
    assert isinstance(decode_request(raw, branch_id="0001"), RecordError)


def test_reprs_and_errors_never_show_pin_material() -> None:
    assert PIN.pin_block not in repr(PIN) and PIN.ksn not in repr(PIN)
    bad = deposit(kind="withdraw", pin={"pin_block": "ZZ" * 16, "ksn": "0" * 24})
    result = decode(bad)
    assert isinstance(result, RecordError) and "ZZ" not in result.reason


def test_deposit_model_refuses_float_amount_when_built_in_code() -> None:
    with pytest.raises(ValueError):
        Deposit.model_validate(deposit(amount=1.0))
