from __future__ import annotations

from dataclasses import replace

import pytest

from host_node.immutable import immutable
from host_node.journal import GENESIS, ChainHead


@immutable
class Pair:
    left: int
    right: tuple[str, ...] = ()


@immutable(eq=False)
class Token:
    name: str


def test_records_compare_and_hash_by_their_fields_as_frozen_dataclasses_do() -> None:
    assert Pair(1, ("a",)) == Pair(1, ("a",)) and Pair(1) != Pair(2)
    assert len({Pair(1), Pair(1), Pair(2)}) == 2
    assert replace(Pair(1), right=("b",)) == Pair(1, ("b",))
    assert ChainHead() == GENESIS and hash(ChainHead()) == hash(GENESIS)


def test_an_eq_false_record_is_itself_only() -> None:
    token = Token("a")
    assert token != Token("a") and len({token, token, Token("a")}) == 2


def test_records_have_slots_and_no_frozen_setattr() -> None:
    pair = Pair(1)
    with pytest.raises(AttributeError):
        pair.other = 2  # type: ignore[attr-defined]
    # immutable to mypy only: no frozen __setattr__ guards (nor slows) setting a field
    assert "__setattr__" not in Pair.__dict__
