"""Visa PIN verification values (PVV): generate and verify.

The transformed security parameter (TSP) is the 11 rightmost PAN digits excluding the check
digit, the PVK index (one digit) and the PIN's 4 leftmost digits. The PVK's TDES encryption
of the TSP is scanned left to right for decimal digits; if fewer than 4 are found, its hex
letters ``A``-``F`` follow, each minus 10. The first 4 are the PVV.
"""

from __future__ import annotations

import hmac
import re

from crypto_node.errors import InputFormatError
from crypto_node.pvk import Pvk

PVV_DIGITS = 4
_PIN = re.compile(r"[0-9]{4,12}")
_PAN = re.compile(r"[0-9]{12,19}")
_PVKI = re.compile(r"[0-9]")
_LETTERS = str.maketrans("ABCDEF", "012345")


def transformed_security_parameter(pvki: str, pin: str, pan: str) -> str:
    """The 16 digits the PVK encrypts."""
    if _PVKI.fullmatch(pvki) is None:
        raise InputFormatError("a PVK index is one decimal digit")
    if _PIN.fullmatch(pin) is None:
        raise InputFormatError("a PIN is 4 to 12 decimal digits")
    if _PAN.fullmatch(pan) is None:
        raise InputFormatError("a PAN is 12 to 19 decimal digits")
    return pan[:-1][-11:] + pvki + pin[:4]


def generate_pvv(pvk: Pvk, pvki: str, pin: str, pan: str) -> str:
    """The 4-digit PVV of ``pin`` on the card ``pan``."""
    tsp = transformed_security_parameter(pvki, pin, pan)
    encrypted = pvk.encrypt(bytes.fromhex(tsp)).hex().upper()
    digits = [c for c in encrypted if c.isdigit()]
    if len(digits) < PVV_DIGITS:
        digits += [c.translate(_LETTERS) for c in encrypted if not c.isdigit()]
    return "".join(digits[:PVV_DIGITS])


def verify_pvv(pvk: Pvk, pvki: str, pin: str, pan: str, pvv: str) -> bool:
    """True when ``pvv`` is the PVV of ``pin`` (constant-time comparison)."""
    expected = generate_pvv(pvk, pvki, pin, pan)
    return len(pvv) == PVV_DIGITS and hmac.compare_digest(expected.encode(), pvv.encode())
