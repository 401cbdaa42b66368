from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import pinblock
from common.dukpt import HostDerivation, Ksn
from common.pinblock import PinBlockError
from tests.crypto_node.kat_vectors import kat_cases

pins = st.text("0123456789", min_size=4, max_size=12)
pans = st.text("0123456789", min_size=12, max_size=19)
aes_keys = st.binary(min_size=16, max_size=16)
tdes_keys = st.binary(min_size=16, max_size=16).filter(lambda k: k[:8] != k[8:])

AES_KEY = bytes.fromhex("AF8CB133A78F8DC2D1359F18527593FB")
TDES_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4111111111111111"


@pytest.mark.parametrize("case", kat_cases("iso9564-4-encipher"))
def test_format4_encipher_matches_vector(case: dict[str, Any]) -> None:
    block = pinblock.encipher_format4(
        bytes.fromhex(case["key"]), case["pin"], case["pan"], bytes.fromhex(case["fill"])
    )
    assert block.hex().upper() == case["expect"]["pin_block"]


@pytest.mark.parametrize("case", kat_cases("iso9564-4-decipher"))
def test_format4_decipher_matches_vector(case: dict[str, Any]) -> None:
    pin = pinblock.decipher_format4(
        bytes.fromhex(case["key"]), bytes.fromhex(case["pin_block"]), case["pan"]
    )
    assert pin == case["expect"]["pin"]


@pytest.mark.parametrize("case", kat_cases("dukpt-iso4-pin-block"))
def test_pin_pad_block_matches_vector(case: dict[str, Any]) -> None:
    key = HostDerivation(bytes.fromhex(case["bdk"])).pin_key(Ksn.parse(case["ksn"]))
    block = pinblock.encipher_format4(key, case["pin"], case["pan"], bytes.fromhex(case["fill"]))
    assert block.hex().upper() == case["expect"]["pin_block"]
    assert pinblock.decipher_format4(key, block, case["pan"]) == case["pin"]


@pytest.mark.parametrize("case", kat_cases("iso9564-0-encipher"))
def test_format0_encipher_matches_vector(case: dict[str, Any]) -> None:
    block = pinblock.encipher_format0(bytes.fromhex(case["key"]), case["pin"], case["pan"])
    assert block.hex().upper() == case["expect"]["pin_block"]
    assert pinblock.decipher_format0(bytes.fromhex(case["key"]), block, case["pan"]) == case["pin"]


@settings(max_examples=200, deadline=None)
@given(aes_keys, pins, pans)
def test_format4_round_trip(key: bytes, pin: str, pan: str) -> None:
    block = pinblock.encipher_format4(key, pin, pan)
    assert len(block) == 16
    assert pinblock.decipher_format4(key, block, pan) == pin


@settings(max_examples=100, deadline=None)
@given(tdes_keys, pins, pans)
def test_format0_and_3_round_trip(key: bytes, pin: str, pan: str) -> None:
    assert pinblock.decipher_format0(key, pinblock.encipher_format0(key, pin, pan), pan) == pin
    assert pinblock.decipher_format3(key, pinblock.encipher_format3(key, pin, pan), pan) == pin


def test_format4_pan_field_layout() -> None:
    # M = length - 12, then the PAN, zero-padded; a short PAN is left-padded to 12 digits.
    assert f"{pinblock.format4_pan_field(PAN):032X}" == "44111111111111111000000000000000"
    assert f"{pinblock.format4_pan_field('1234567890123456789'):032X}" == (
        "71234567890123456789000000000000"
    )
    assert f"{pinblock.format4_pan_field('12345'):032X}" == "00000000123450000000000000000000"


def test_random_fill_makes_every_block_different() -> None:
    blocks = {pinblock.encipher_format4(AES_KEY, "1234", PAN) for _ in range(50)}
    assert len(blocks) == 50
    blocks3 = {pinblock.encipher_format3(TDES_KEY, "1234", PAN) for _ in range(50)}
    assert len(blocks3) > 1


def test_a_block_for_another_pan_or_key_does_not_decipher() -> None:
    block = pinblock.encipher_format4(AES_KEY, "1234", PAN)
    with pytest.raises(PinBlockError):
        pinblock.decipher_format4(AES_KEY, block, "4111111111111112")
    with pytest.raises(PinBlockError):
        pinblock.decipher_format4(bytes(16), block, PAN)


def test_a_format3_block_is_not_read_as_format0() -> None:
    block = pinblock.encipher_format3(TDES_KEY, "1234", PAN)
    with pytest.raises(PinBlockError):
        pinblock.decipher_format0(TDES_KEY, block, PAN)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_garbage_blocks_fail_with_pin_block_error_only(block: bytes) -> None:
    try:
        pin = pinblock.decipher_format4(AES_KEY, block, PAN)
    except PinBlockError as error:
        assert block.hex() not in str(error).lower()
    else:  # astronomically unlikely, but then it must be a well-formed PIN
        assert pin.isdigit() and 4 <= len(pin) <= 12


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "\u0661\u0662\u0663\u0664", ""])
def test_bad_pins_are_refused_without_echoing_them(pin: str) -> None:
    encipherments: list[Callable[[], bytes]] = [
        lambda: pinblock.encipher_format4(AES_KEY, pin, PAN),
        lambda: pinblock.encipher_format0(TDES_KEY, pin, PAN),
        lambda: pinblock.encipher_format3(TDES_KEY, pin, PAN),
    ]
    for encipher in encipherments:
        with pytest.raises(PinBlockError) as caught:
            encipher()
        if pin:
            assert pin not in str(caught.value)


@pytest.mark.parametrize("pan", ["", "41111111111111111111", "4111-1111"])
def test_bad_pans_are_refused_without_echoing_them(pan: str) -> None:
    with pytest.raises(PinBlockError) as caught:
        pinblock.encipher_format4(AES_KEY, "1234", pan)
    if pan:
        assert pan not in str(caught.value)


def test_bad_keys_and_sizes_are_refused() -> None:
    with pytest.raises(PinBlockError) as caught:
        pinblock.encipher_format4(AES_KEY[:15], "1234", PAN)
    assert AES_KEY[:15].hex() not in str(caught.value).lower()
    with pytest.raises(PinBlockError):
        pinblock.encipher_format0(TDES_KEY[:8], "1234", PAN)
    with pytest.raises(PinBlockError):
        pinblock.encipher_format4(AES_KEY, "1234", PAN, fill=b"\x00" * 7)
    with pytest.raises(PinBlockError):
        pinblock.decipher_format4(AES_KEY, b"\x00" * 8, PAN)
    with pytest.raises(PinBlockError):
        pinblock.decipher_format0(TDES_KEY, b"\x00" * 16, PAN)
    with pytest.raises(PinBlockError):
        pinblock.encipher_format3(TDES_KEY, "1234", PAN, fill="ABCDEF0123")
