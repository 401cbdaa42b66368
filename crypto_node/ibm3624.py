"""IBM 3624 PIN offsets: generate and verify.

The *natural PIN* is the PVK's TDES encryption of the validation data, decimalized through
the 16-digit decimalization table and cut to the PIN's length; the *offset* is the customer
PIN minus the natural PIN, digit by digit, modulo 10. The offset has as many digits as the PIN.
"""

from __future__ import annotations

import functools
import hmac
import re

from crypto_node.errors import InputFormatError
from crypto_node.pvk import Pvk

_PIN = re.compile(r"[0-9]{4,12}")
_TABLE = re.compile(r"[0-9]{16}")
_VALIDATION_DATA = re.compile(r"[0-9A-Fa-f]{16}")
_PAN = re.compile(r"[0-9]{12,19}")
#: natural digit -> PIN digit -> offset digit, i.e. (p - n) mod 10.
_DIFFERENCE = {str(n): {str(p): str((p - n) % 10) for p in range(10)} for n in range(10)}


def validation_data(pan: str) -> str:
    """The validation data branchnet uses for a card: 16 hex digits from its PAN.

    The 12 rightmost PAN digits excluding the check digit (left-padded with ``0`` for a
    12-digit PAN), then ``FFFF``: the account-number part of the PAN, so every card has its
    own natural PIN.
    """
    if _PAN.fullmatch(pan) is None:
        raise InputFormatError("a PAN is 12 to 19 decimal digits")
    return pan[:-1][-12:].rjust(12, "0") + "FFFF"


@functools.lru_cache(maxsize=16)
def _decimalization(table: str) -> dict[int, int]:
    if _TABLE.fullmatch(table) is None:
        raise InputFormatError("a decimalization table is 16 decimal digits")
    return str.maketrans("0123456789ABCDEF", table)


def natural_pin(pvk: Pvk, decimalization_table: str, validation_data: str, length: int) -> str:
    """The first ``length`` digits of the decimalized encryption of the validation data."""
    if _VALIDATION_DATA.fullmatch(validation_data) is None:
        raise InputFormatError("validation data is 16 hex digits")
    if not 4 <= length <= 12:
        raise InputFormatError("a PIN is 4 to 12 digits")
    encrypted = pvk.encrypt(bytes.fromhex(validation_data)).hex().upper()
    return encrypted.translate(_decimalization(decimalization_table))[:length]


def generate_offset(pvk: Pvk, decimalization_table: str, validation_data: str, pin: str) -> str:
    """The IBM 3624 offset of ``pin`` (as many digits as the PIN)."""
    if _PIN.fullmatch(pin) is None:
        raise InputFormatError("a PIN is 4 to 12 decimal digits")
    natural = natural_pin(pvk, decimalization_table, validation_data, len(pin))
    return "".join([_DIFFERENCE[n][p] for p, n in zip(pin, natural, strict=True)])


def verify_offset(
    pvk: Pvk, decimalization_table: str, validation_data: str, pin: str, offset: str
) -> bool:
    """True when ``offset`` is the IBM 3624 offset of ``pin`` (constant-time comparison)."""
    if len(offset) != len(pin):
        return False
    expected = generate_offset(pvk, decimalization_table, validation_data, pin)
    return hmac.compare_digest(expected.encode(), offset.encode())
