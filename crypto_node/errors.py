"""Exceptions of the crypto node; each names the HSM error code it is answered with.

    CryptoNodeError          (common.errors.BranchnetError)
    ├── InputFormatError     a malformed PIN, PAN, table or value  -> 15 FORMAT_ERROR
    ├── UnknownKeyError      a key the HSM does not hold           -> 10 KEY_ERROR
    ├── KeyBlockError        a TR-31 key block that does not open  -> 10 KEY_ERROR
    ├── KeyUsageError        a key used against its header         -> 16 USAGE_ERROR
    ├── ParityError          a DES key without odd parity          -> 17 PARITY_ERROR
    ├── PinFormatError       a PIN block translation refused       -> 20 PIN_FORMAT_REFUSED
    ├── ReplayError          a KSN counter already used            -> 11 REPLAY
    └── LmkError             LMK components missing or inconsistent (start-up only)

PIN block and DUKPT problems arrive as :class:`common.pinblock.PinBlockError` and
:class:`common.dukpt.DukptError` and are answered ``15``. Messages never carry PINs, PIN
blocks, card numbers or key material.
"""

from __future__ import annotations

from typing import ClassVar

from common.errors import BranchnetError
from common.pin_commands import HsmError


class CryptoNodeError(BranchnetError):
    """Root of the crypto node's exceptions."""

    code: ClassVar[HsmError] = HsmError.INTERNAL_ERROR


class InputFormatError(CryptoNodeError):
    """An input an algorithm cannot use (wrong length, not digits, not hex)."""

    code = HsmError.FORMAT_ERROR


class UnknownKeyError(CryptoNodeError):
    """The command names a key the HSM does not hold (another BDK, another PVK version)."""

    code = HsmError.KEY_ERROR


class ReplayError(CryptoNodeError):
    """The PIN block's KSN counter was already used by that PIN pad."""

    code = HsmError.REPLAY


class KeyBlockError(CryptoNodeError):
    """A TR-31 key block that is malformed, altered or wrapped under another key."""

    code = HsmError.KEY_ERROR


class KeyUsageError(CryptoNodeError):
    """A key asked to do something its key block header does not allow."""

    code = HsmError.USAGE_ERROR


class ParityError(CryptoNodeError):
    """A DES or TDES key whose bytes do not all have odd parity."""

    code = HsmError.PARITY_ERROR


class PinFormatError(CryptoNodeError):
    """A PIN block format, or translation between formats, the rules do not allow."""

    code = HsmError.PIN_FORMAT_REFUSED


class LmkError(CryptoNodeError):
    """The master key cannot be formed: a component missing, malformed or not matching its KCV."""

    code = HsmError.KEY_ERROR
