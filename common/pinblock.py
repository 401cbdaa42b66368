"""ISO 9564-1 PIN blocks: format 4 (AES, 16 bytes) and formats 0, 1 and 3 (TDES, 8 bytes).

Format 4 (ISO 9564-1:2017 §9.4.2) encrypts twice::

    PIN field  4 | N | PIN (4-12 digits) | A... up to nibble 16 | 16 random fill nibbles
    PAN field  M | PAN, right-justified in 12 or more digits | 0... to 32 nibbles
               (M = PAN length - 12; a PAN shorter than 12 digits is left-padded with 0, M = 0)
    block      = E(K, E(K, PIN field) XOR PAN field)

Formats 0 and 3 XOR the PIN field with ``0000`` + the 12 rightmost PAN digits (the check
digit excluded) and encrypt once; format 0 fills with ``F``, format 3 with random ``A``-``F``.
Format 1 is not bound to a PAN: its PIN field (control ``1``) is filled with random hex.

Every failure is a :class:`PinBlockError` whose message names the problem, never the PIN,
PAN, block or key.
"""

from __future__ import annotations

import re
import secrets

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common.errors import BranchnetError

FORMAT4_BLOCK_BYTES = 16
TDES_BLOCK_BYTES = 8
FILL_BYTES = 8
MIN_PIN_DIGITS = 4
MAX_PIN_DIGITS = 12
MAX_PAN_DIGITS = 19

_ECB = modes.ECB()
_PIN = re.compile(r"[0-9]{4,12}")
_PAN = re.compile(r"[0-9]{1,19}")
_FORMAT3_FILL = "ABCDEF"


class PinBlockError(BranchnetError):
    """A PIN, PAN, key or PIN block that cannot be used; the message holds none of them."""


def _check_pin(pin: str) -> None:
    if not isinstance(pin, str) or _PIN.fullmatch(pin) is None:
        raise PinBlockError(f"a PIN is {MIN_PIN_DIGITS} to {MAX_PIN_DIGITS} decimal digits")


def _check_pan(pan: str) -> None:
    if not isinstance(pan, str) or _PAN.fullmatch(pan) is None:
        raise PinBlockError(f"a PAN is 1 to {MAX_PAN_DIGITS} decimal digits")


def _aes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) != 16:
        raise PinBlockError("a format 4 PIN block key is AES-128 (16 bytes)")
    return Cipher(algorithms.AES(key), _ECB)


def _tdes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) == 16:
        key += key[:8]  # two-key TDES as K1 K2 K1
    if len(key) != 24:
        raise PinBlockError("a format 0/3 PIN block key is two- or three-key TDES")
    return Cipher(TripleDES(key), _ECB)


# ---- format 4 ---------------------------------------------------------------------------


def format4_pan_field(pan: str) -> int:
    """The 16-byte PAN field of format 4, as an integer (for the XOR between the passes)."""
    _check_pan(pan)
    digits = pan.rjust(12, "0")
    return int(f"{len(digits) - 12}{digits}".ljust(32, "0"), 16)


def encipher_format4(key: bytes, pin: str, pan: str, fill: bytes | None = None) -> bytes:
    """Encrypt ``pin`` for ``pan`` as an ISO 9564 format 4 PIN block.

    Args:
        key: the AES-128 PIN-encryption key.
        pin: 4 to 12 decimal digits.
        pan: the card number (1 to 19 digits).
        fill: the 8 random bytes of the PIN field's second half; fresh from ``secrets``
            when omitted (given only by known-answer tests).
    """
    _check_pin(pin)
    if fill is None:
        fill = secrets.token_bytes(FILL_BYTES)
    elif len(fill) != FILL_BYTES:
        raise PinBlockError(f"the format 4 fill is {FILL_BYTES} bytes")
    pin_field = bytes.fromhex(f"4{len(pin):X}{pin}".ljust(16, "A")) + fill
    encryptor = _aes(key).encryptor()
    first = int.from_bytes(encryptor.update(pin_field), "big") ^ format4_pan_field(pan)
    return encryptor.update(first.to_bytes(16, "big"))


def decipher_format4(key: bytes, pin_block: bytes, pan: str) -> str:
    """The PIN inside a format 4 PIN block.

    Raises:
        PinBlockError: the block does not decipher to a format 4 PIN field under this key
            and PAN (wrong key, wrong PAN, corrupted or not format 4).
    """
    if len(pin_block) != FORMAT4_BLOCK_BYTES:
        raise PinBlockError(f"a format 4 PIN block is {FORMAT4_BLOCK_BYTES} bytes")
    pan_field = format4_pan_field(pan)
    decryptor = _aes(key).decryptor()
    first = int.from_bytes(decryptor.update(pin_block), "big") ^ pan_field
    field = decryptor.update(first.to_bytes(16, "big")).hex()
    return _pin_from_field(field[:16], "4", "a")


def _pin_from_field(field: str, control: str, fill: str) -> str:
    """Check a deciphered PIN field (lower-case hex) and return its PIN."""
    length = int(field[1], 16)
    if field[0] != control or not MIN_PIN_DIGITS <= length <= MAX_PIN_DIGITS:
        raise PinBlockError(f"not a valid format {control} PIN field")
    pin = field[2 : 2 + length]
    if not pin.isdigit() or field[2 + length :].strip(fill) != "":
        raise PinBlockError(f"not a valid format {control} PIN field")
    return pin


# ---- formats 0 and 3 --------------------------------------------------------------------


def _iso0_pan_field(pan: str) -> int:
    """``0000`` and the 12 rightmost PAN digits without the check digit (formats 0 and 3)."""
    _check_pan(pan)
    return int(pan[:-1][-12:].rjust(16, "0"), 16)


def _encipher_tdes(control: str, key: bytes, pin: str, pan: str, fill: str) -> bytes:
    field = int(f"{control}{len(pin):X}{pin}{fill}", 16) ^ _iso0_pan_field(pan)
    return _tdes(key).encryptor().update(field.to_bytes(8, "big"))


def _decipher_tdes(control: str, fill: str, key: bytes, pin_block: bytes, pan: str) -> str:
    if len(pin_block) != TDES_BLOCK_BYTES:
        raise PinBlockError(f"a format {control} PIN block is {TDES_BLOCK_BYTES} bytes")
    clear = int.from_bytes(_tdes(key).decryptor().update(pin_block), "big")
    return _pin_from_field(f"{clear ^ _iso0_pan_field(pan):016x}", control, fill)


def encipher_format0(key: bytes, pin: str, pan: str) -> bytes:
    """Encrypt ``pin`` for ``pan`` as an ISO 9564 format 0 PIN block under a TDES key."""
    _check_pin(pin)
    return _encipher_tdes("0", key, pin, pan, "F" * (14 - len(pin)))


def decipher_format0(key: bytes, pin_block: bytes, pan: str) -> str:
    """The PIN inside a format 0 PIN block (raises :class:`PinBlockError` if not one)."""
    return _decipher_tdes("0", "f", key, pin_block, pan)


def encipher_format1(key: bytes, pin: str, fill: str | None = None) -> bytes:
    """Encrypt ``pin`` as an ISO 9564 format 1 PIN block (no PAN; random hex fill)."""
    _check_pin(pin)
    size = 14 - len(pin)
    if fill is None:
        fill = secrets.token_hex(8)[:size].upper()
    elif len(fill) != size or re.fullmatch(r"[0-9A-Fa-f]*", fill) is None:
        raise PinBlockError(f"format 1 fill is {size} hex nibbles")
    field = int(f"1{len(pin):X}{pin}{fill}", 16)
    return _tdes(key).encryptor().update(field.to_bytes(8, "big"))


def decipher_format1(key: bytes, pin_block: bytes) -> str:
    """The PIN inside a format 1 PIN block (raises :class:`PinBlockError` if not one)."""
    if len(pin_block) != TDES_BLOCK_BYTES:
        raise PinBlockError(f"a format 1 PIN block is {TDES_BLOCK_BYTES} bytes")
    clear = _tdes(key).decryptor().update(pin_block).hex()
    return _pin_from_field(clear, "1", "0123456789abcdef")


def encipher_format3(key: bytes, pin: str, pan: str, fill: str | None = None) -> bytes:
    """Encrypt ``pin`` for ``pan`` as an ISO 9564 format 3 PIN block under a TDES key.

    ``fill`` is the ``14 - len(pin)`` fill nibbles (``A``-``F``); random when omitted.
    """
    _check_pin(pin)
    size = 14 - len(pin)
    if fill is None:
        fill = "".join(secrets.choice(_FORMAT3_FILL) for _ in range(size))
    elif len(fill) != size or fill.strip(_FORMAT3_FILL) != "":
        raise PinBlockError(f"format 3 fill is {size} nibbles from A to F")
    return _encipher_tdes("3", key, pin, pan, fill)


def decipher_format3(key: bytes, pin_block: bytes, pan: str) -> str:
    """The PIN inside a format 3 PIN block (raises :class:`PinBlockError` if not one)."""
    return _decipher_tdes("3", "abcdef", key, pin_block, pan)
