from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import dukpt
from common.dukpt import (
    MAX_COUNTER,
    DukptError,
    HostDerivation,
    KeyDerivation,
    Ksn,
    is_valid_counter,
    next_counter,
)
from tests.crypto_node.kat_vectors import kat_cases

X9_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
X9_INITIAL_KEY_ID = bytes.fromhex("1234567890123456")

valid_counters = st.integers(min_value=1, max_value=MAX_COUNTER).filter(is_valid_counter)


@pytest.mark.parametrize("case", kat_cases("dukpt-aes128-initial-key"))
def test_initial_key_matches_x9_24_3_vector(case: dict[str, Any]) -> None:
    key = dukpt.initial_key(bytes.fromhex(case["bdk"]), bytes.fromhex(case["initial_key_id"]))
    assert key.hex().upper() == case["expect"]["initial_key"]


@pytest.mark.parametrize("case", kat_cases("dukpt-aes128-pin-key"))
def test_pin_key_matches_x9_24_3_vector_host_and_pad_side(case: dict[str, Any]) -> None:
    bdk, ksn = bytes.fromhex(case["bdk"]), Ksn.parse(case["ksn"])
    expected = case["expect"]["pin_key"]
    initial_key = dukpt.initial_key(bdk, ksn.initial_key_id)
    assert dukpt.pin_key(bdk, ksn).hex().upper() == expected
    assert HostDerivation(bdk).pin_key(ksn).hex().upper() == expected
    assert dukpt.pin_key_from_initial_key(initial_key, ksn).hex().upper() == expected


@settings(max_examples=50, deadline=None)
@given(valid_counters, st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8))
def test_pad_and_host_derive_the_same_key(counter: int, bdk: bytes, initial_key_id: bytes) -> None:
    ksn = Ksn(initial_key_id, counter)
    initial_key = dukpt.initial_key(bdk, initial_key_id)
    assert dukpt.pin_key_from_initial_key(initial_key, ksn) == dukpt.pin_key(bdk, ksn)


def test_cached_derivation_agrees_with_uncached_over_a_pads_life() -> None:
    host = HostDerivation(X9_BDK, pads_cached=2)
    other = bytes.fromhex("1234567890ABCDEF")
    for counter in [*range(1, 600), 0xFFFF, 0x10000, 0x8000_0001, 0xFFFF_0000]:
        for initial_key_id in (X9_INITIAL_KEY_ID, other):
            ksn = Ksn(initial_key_id, counter)
            assert host.pin_key(ksn) == dukpt.pin_key(X9_BDK, ksn)


def test_keys_differ_per_counter_and_per_pad() -> None:
    host = HostDerivation(X9_BDK)
    keys = {host.pin_key(Ksn(X9_INITIAL_KEY_ID, counter)) for counter in range(1, 200)}
    keys.add(host.pin_key(Ksn(bytes.fromhex("1234567890123457"), 1)))
    assert len(keys) == 200


@pytest.mark.parametrize(
    ("counter", "valid"),
    [
        (0, False),
        (1, True),
        (0xFFFF, True),  # 16 one-bits
        (0x1FFFF, False),  # 17 one-bits
        (0xFFFF_0000, True),
        (0xFFFF_8000, False),
        (MAX_COUNTER, False),
        (MAX_COUNTER + 1, False),
        (-1, False),
    ],
)
def test_counter_validity(counter: int, valid: bool) -> None:
    assert is_valid_counter(counter) is valid


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFE_0000).filter(lambda c: c.bit_count() <= 16))
def test_next_counter_is_the_first_valid_counter_after(counter: int) -> None:
    following = next_counter(counter)
    assert following > counter
    assert is_valid_counter(following)
    assert following - counter <= 1 << 17
    assert not any(is_valid_counter(c) for c in range(counter + 1, following))


def test_next_counter_skips_counters_with_17_one_bits() -> None:
    assert next_counter(0) == 1
    assert next_counter(0x1FFFE) == 0x20000
    assert next_counter(0xFFFF) == 0x10000


@pytest.mark.parametrize("counter", [0xFFFF_0000, MAX_COUNTER])
def test_exhausted_counters_raise(counter: int) -> None:
    with pytest.raises(DukptError, match="exhausted"):
        next_counter(counter)


def test_ksn_round_trips_through_text() -> None:
    ksn = Ksn.parse("123456789012345600000008")
    assert ksn == Ksn(X9_INITIAL_KEY_ID, 8)
    assert str(ksn) == "123456789012345600000008"
    assert bytes(ksn) == bytes.fromhex("123456789012345600000008")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1234567890123456000001",  # 22 digits
        "12345678901234560000000100",
        "123456789012345600000000",  # counter 0
        "12345678901234560001FFFF",  # 17 one-bits
        "12345678901234560000000G",
        "1234567890123456+0000001",
        "1234567890123456000\u0663\u0663\u0663\u0663\u0663",  # Arabic-Indic digits
    ],
)
def test_malformed_ksn_is_refused(text: str) -> None:
    with pytest.raises(DukptError):
        Ksn.parse(text)


def test_wrong_key_sizes_are_refused_without_showing_the_key() -> None:
    short = bytes.fromhex("00112233445566778899AABBCCDDEE")
    with pytest.raises(DukptError) as caught:
        dukpt.initial_key(short, X9_INITIAL_KEY_ID)
    assert short.hex() not in str(caught.value).lower()
    with pytest.raises(DukptError):
        dukpt.initial_key(X9_BDK, b"\x01" * 7)
    with pytest.raises(DukptError):
        KeyDerivation(X9_BDK, X9_INITIAL_KEY_ID).pin_key(0)


def test_reprs_hold_no_key_material() -> None:
    initial_key = dukpt.initial_key(X9_BDK, X9_INITIAL_KEY_ID)
    host = HostDerivation(X9_BDK)
    host.pin_key(Ksn(X9_INITIAL_KEY_ID, 1))
    pad = KeyDerivation(initial_key, X9_INITIAL_KEY_ID)
    for text in (repr(host), repr(pad), repr(Ksn(X9_INITIAL_KEY_ID, 1))):
        assert X9_BDK.hex() not in text.lower()
        assert initial_key.hex() not in text.lower()


def test_the_host_keeps_the_most_recently_used_pads() -> None:
    host = HostDerivation(bytes(16), pads_cached=2)
    first, second, third = (bytes([n]) * 8 for n in (1, 2, 3))
    kept = host.pad(first)
    host.pad(second)
    assert host.pad(first) is kept  # used again: now the most recent
    dropped = host.pad(second)
    host.pad(first)
    host.pad(third)  # drops the least recently used: the second
    assert host.pad(first) is kept and host.pad(second) is not dropped
    assert repr(host) == "HostDerivation(pads=2)"
    assert host.pin_key(Ksn(second, 1)) == dukpt.pin_key(bytes(16), Ksn(second, 1))
