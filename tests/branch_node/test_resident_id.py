"""GB 11643 resident ID numbers."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given
from hypothesis import strategies as st

from branch_node.resident_id import check_character, is_valid_resident_id, resident_id


def test_the_standard_examples_check() -> None:
    # The worked examples of GB 11643-1999.
    assert check_character("11010519491231002") == "X"
    assert check_character("44052418800101001") == "4"
    assert is_valid_resident_id("11010519491231002X")
    assert is_valid_resident_id("440524188001010014")


def test_a_wrong_check_character_or_date_is_refused() -> None:
    assert not is_valid_resident_id("110105194912310021")
    assert not is_valid_resident_id("11010519491331002X")  # month 13
    assert not is_valid_resident_id("11010519491231002x")
    assert not is_valid_resident_id("1101051949123100")


@given(st.integers(min_value=0, max_value=2**32))
def test_generated_numbers_are_valid_and_born_in_range(seed: int) -> None:
    after, before = dt.date(1945, 1, 1), dt.date(2006, 1, 1)
    number = resident_id(random.Random(seed), born_after=after, born_before=before)
    assert is_valid_resident_id(number)
    born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    assert after <= born < before
