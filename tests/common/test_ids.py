from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.ids import (
    branch_ids,
    card_number,
    is_valid_account_no,
    luhn_check_digit,
    mask_pan,
    request_id,
)


def test_known_luhn_numbers() -> None:
    assert luhn_check_digit("411111111111111") == "1"
    assert luhn_check_digit("7992739871") == "3"


@given(
    st.sampled_from(branch_ids(20)),
    st.integers(min_value=1, max_value=99),
    st.integers(min_value=0, max_value=9_999_999),
)
def test_card_numbers_are_valid_and_unique_per_input(
    branch: str, terminal: int, serial: int
) -> None:
    number = card_number(branch, f"{terminal:02d}", serial)
    assert len(number) == 16 and is_valid_account_no(number)
    assert number.startswith("62" + branch)


@given(st.integers(min_value=0, max_value=9_999_999), st.integers(min_value=0, max_value=15))
def test_a_single_changed_digit_breaks_the_check(serial: int, position: int) -> None:
    number = card_number("0001", "01", serial)
    digit = (int(number[position]) + 1) % 10
    assert not is_valid_account_no(number[:position] + str(digit) + number[position + 1 :])


def test_request_ids_name_branch_and_terminal() -> None:
    assert request_id("0003", "02", 42) == "0003-02-0000000042"


def test_mask_pan_keeps_six_and_four() -> None:
    assert mask_pan("6200010100000011") == "620001******0011"
