"""The PIN verification key: two-key TDES, shared by the IBM 3624 and Visa PVV methods."""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from crypto_node.errors import InputFormatError

PVK_BYTES = 16


class Pvk:
    """A PIN verification key ready to encrypt 8-byte blocks (its cipher context is reused).

    The key bytes never appear in the repr.
    """

    __slots__ = ("_encryptor",)

    def __init__(self, key: bytes) -> None:
        if len(key) not in (PVK_BYTES, 24):
            raise InputFormatError("a PVK is two- or three-key TDES (16 or 24 bytes)")
        # K1 K2 K1: cryptography takes two-key TDES as a 24-byte key.
        full = key + key[:8] if len(key) == PVK_BYTES else key
        self._encryptor = Cipher(TripleDES(full), modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return "Pvk(...)"

    def encrypt(self, block: bytes) -> bytes:
        """TDES-encrypt one 8-byte block."""
        if len(block) != 8:
            raise InputFormatError("the PVK encrypts 8-byte blocks")
        return self._encryptor.update(block)
