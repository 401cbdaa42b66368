from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.money import MAX_AMOUNT, format_fen, parse_yuan, yuan


def test_yuan_builds_fen() -> None:
    assert yuan(600_000) == 60_000_000
    assert yuan(12, 5) == 1205


@given(st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT))
def test_format_then_parse_is_exact(fen: int) -> None:
    assert parse_yuan(format_fen(fen)) == fen


@pytest.mark.parametrize(
    ("text", "fen"), [("0.01", 1), ("1234.5", 123450), ("1,000", 100000), ("-3.07", -307)]
)
def test_parse_yuan(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize("text", ["", "1.234", "abc", "1e5", "--1", "0x10"])
def test_parse_yuan_refuses_non_amounts(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yuan(text)


def test_format_fen_groups_thousands() -> None:
    assert format_fen(59_900_000) == "599,000.00"
    assert format_fen(-5) == "-0.05"
