from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_node import ibm3624
from crypto_node.errors import InputFormatError
from crypto_node.pvk import Pvk
from tests.crypto_node.kat_vectors import kat_cases

PVK = Pvk(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
TABLE = "0123456789012345"

pins = st.text("0123456789", min_size=4, max_size=12)
pans = st.text("0123456789", min_size=12, max_size=19)


@pytest.mark.parametrize("case", kat_cases("ibm3624-offset"))
def test_offset_matches_vector(case: dict[str, Any]) -> None:
    pvk = Pvk(bytes.fromhex(case["pvk"]))
    table, data, pin = case["decimalization_table"], case["validation_data"], case["pin"]
    offset = ibm3624.generate_offset(pvk, table, data, pin)
    assert offset == case["expect"]["offset"]
    assert ibm3624.verify_offset(pvk, table, data, pin, offset)


@settings(max_examples=200, deadline=None)
@given(pins, pans)
def test_offset_verifies_its_pin_and_no_other(pin: str, pan: str) -> None:
    data = ibm3624.validation_data(pan)
    offset = ibm3624.generate_offset(PVK, TABLE, data, pin)
    assert len(offset) == len(pin) and offset.isdigit()
    assert ibm3624.verify_offset(PVK, TABLE, data, pin, offset)
    wrong = str((int(pin[-1]) + 1) % 10)
    assert not ibm3624.verify_offset(PVK, TABLE, data, pin[:-1] + wrong, offset)
    assert not ibm3624.verify_offset(PVK, TABLE, data, pin + "0", offset)


def test_natural_pin_plus_offset_is_the_pin() -> None:
    data = ibm3624.validation_data("6200010100000018")
    natural = ibm3624.natural_pin(PVK, TABLE, data, 6)
    offset = ibm3624.generate_offset(PVK, TABLE, data, "987654")
    summed = "".join(str((int(n) + int(o)) % 10) for n, o in zip(natural, offset, strict=True))
    assert summed == "987654"
    assert ibm3624.generate_offset(PVK, TABLE, data, natural) == "000000"


def test_validation_data_is_the_account_digits_padded_with_f() -> None:
    assert ibm3624.validation_data("6200010100000018") == "001010000001FFFF"
    assert ibm3624.validation_data("123456789012") == "012345678901FFFF"
    assert ibm3624.validation_data("1234567890123456789") == "789012345678FFFF"


def test_each_card_has_its_own_offset() -> None:
    offsets = {
        ibm3624.generate_offset(PVK, TABLE, ibm3624.validation_data(f"62000101{n:07d}0"), "1234")
        for n in range(50)
    }
    assert len(offsets) > 40


@pytest.mark.parametrize(
    ("table", "data", "pin"),
    [
        ("012345678901234", "1122334455667788", "1234"),
        ("0123456789ABCDEF", "1122334455667788", "1234"),
        (TABLE, "11223344556677", "1234"),
        (TABLE, "112233445566778G", "1234"),
        (TABLE, "1122334455667788", "123"),
        (TABLE, "1122334455667788", "12a4"),
    ],
)
def test_bad_inputs_raise_format_errors(table: str, data: str, pin: str) -> None:
    with pytest.raises(InputFormatError):
        ibm3624.generate_offset(PVK, table, data, pin)


def test_bad_pan_for_validation_data() -> None:
    with pytest.raises(InputFormatError):
        ibm3624.validation_data("12345678901")
