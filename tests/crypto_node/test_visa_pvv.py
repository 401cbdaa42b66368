from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_node import visa_pvv
from crypto_node.errors import InputFormatError
from crypto_node.pvk import Pvk
from tests.crypto_node.kat_vectors import kat_cases

PVK = Pvk(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))

pins = st.text("0123456789", min_size=4, max_size=12)
pans = st.text("0123456789", min_size=12, max_size=19)


@pytest.mark.parametrize("case", kat_cases("visa-pvv"))
def test_pvv_matches_vector(case: dict[str, Any]) -> None:
    pvk = Pvk(bytes.fromhex(case["pvk"]))
    pvv = visa_pvv.generate_pvv(pvk, case["pvki"], case["pin"], case["pan"])
    assert pvv == case["expect"]["pvv"]
    assert visa_pvv.verify_pvv(pvk, case["pvki"], case["pin"], case["pan"], pvv)


def test_tsp_layout() -> None:
    tsp = visa_pvv.transformed_security_parameter("3", "4524", "1122334455667788")
    assert tsp == "33445566778" + "3" + "4524"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from("0123456789"), pins, pans)
def test_pvv_verifies_its_pin(pvki: str, pin: str, pan: str) -> None:
    pvv = visa_pvv.generate_pvv(PVK, pvki, pin, pan)
    assert len(pvv) == 4 and pvv.isdigit()
    assert visa_pvv.verify_pvv(PVK, pvki, pin, pan, pvv)


def test_a_wrong_pin_does_not_verify() -> None:
    pan = "1122334455667788"
    pvv = visa_pvv.generate_pvv(PVK, "3", "4524", pan)
    wrong = [
        p for p in (f"{n:04d}" for n in range(200)) if visa_pvv.verify_pvv(PVK, "3", p, pan, pvv)
    ]
    assert len(wrong) <= 1  # a PVV is 4 digits: about 1 PIN in 10,000 shares it


def test_pvv_uses_hex_letters_when_the_cipher_has_fewer_than_four_digits() -> None:
    # Find a TSP whose encryption has fewer than 4 decimal digits (about 1 in 2,500).
    for pin_number in itertools.count():
        pin = f"{pin_number:04d}"
        encrypted = (
            PVK.encrypt(
                bytes.fromhex(visa_pvv.transformed_security_parameter("1", pin, "6200010100000018"))
            )
            .hex()
            .upper()
        )
        digits = [c for c in encrypted if c.isdigit()]
        if len(digits) < 4:
            break
    letters = [str(int(c, 16) - 10) for c in encrypted if not c.isdigit()]
    expected = "".join((digits + letters)[:4])
    assert visa_pvv.generate_pvv(PVK, "1", pin, "6200010100000018") == expected


def test_pin_beyond_four_digits_is_not_part_of_the_pvv() -> None:
    pan = "6200010100000018"
    assert visa_pvv.generate_pvv(PVK, "1", "123456", pan) == visa_pvv.generate_pvv(
        PVK, "1", "1234", pan
    )


@pytest.mark.parametrize(
    ("pvki", "pin", "pan"),
    [("12", "1234", "1122334455667788"), ("x", "1234", "1122334455667788"),
     ("1", "123", "1122334455667788"), ("1", "1234", "12345678901")],
)  # fmt: skip
def test_bad_inputs_raise_format_errors(pvki: str, pin: str, pan: str) -> None:
    with pytest.raises(InputFormatError):
        visa_pvv.generate_pvv(PVK, pvki, pin, pan)


def test_a_pvv_of_other_length_never_verifies() -> None:
    pan = "1122334455667788"
    pvv = visa_pvv.generate_pvv(PVK, "3", "4524", pan)
    assert not visa_pvv.verify_pvv(PVK, "3", "4524", pan, pvv + "0")
    assert not visa_pvv.verify_pvv(PVK, "3", "4524", pan, pvv[:3])
