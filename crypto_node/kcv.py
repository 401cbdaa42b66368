"""Key check values and DES parity.

KCVs are 6 hex digits: TDES keys encrypt a block of zeros (the classic method); AES keys take
the AES-CMAC of a 16-byte block of zeros, as ANSI X9.24-1-2017 requires for AES (and as AWS
Payment Cryptography reports it), cut to 3 bytes.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC


def tdes_kcv(key: bytes) -> str:
    """KCV of a two- or three-key TDES key: encrypt 8 zero bytes, keep 3 bytes."""
    full = key + key[:8] if len(key) == 16 else key
    encrypted = Cipher(TripleDES(full), modes.ECB()).encryptor().update(bytes(8))
    return encrypted[:3].hex().upper()


def aes_kcv(key: bytes) -> str:
    """KCV of an AES key: AES-CMAC of 16 zero bytes, keep 3 bytes (X9.24-1-2017)."""
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def kcv(key: bytes, algorithm: str) -> str:
    """The KCV of ``key`` for a TR-31 algorithm letter (``A`` AES, ``T`` TDES)."""
    return aes_kcv(key) if algorithm == "A" else tdes_kcv(key)


def with_odd_parity(key: bytes) -> bytes:
    """``key`` with each byte's low bit set so the byte has an odd number of one-bits."""
    return bytes((b & 0xFE) | ((b >> 1).bit_count() + 1) % 2 for b in key)


def has_odd_parity(key: bytes) -> bool:
    return all(b.bit_count() % 2 == 1 for b in key)
