"""ANSI X9.143 / TR-31 key blocks, version ``D`` (AES key block protection key).

A key block is ASCII: a 16-character header, the encrypted key data in hex, and a 16-byte
CMAC in hex::

    D | length (4 digits) | key usage (2) | algorithm (1) | mode of use (1)
      | key version (2) | exportability (1) | optional blocks (2) | reserved (2)

Version D (X9.143-2022 §7.3, TR-31:2018 §5.3.2.3): the key block protection key (KBPK, AES)
yields a key block encryption key (KBEK) and a key block MAC key (KBMK) through the CMAC
counter-mode KDF of NIST SP 800-108, one CMAC per 16 bytes of derived key over::

    counter (1) | key usage 0000 (KBEK) or 0001 (KBMK) | 00 | algorithm 0002/0003/0004
      | length in bits 0080/00C0/0100

The key data (key length in bits, 2 bytes; the key; random padding to a multiple of 16
bytes) is MACed together with the header (CMAC under the KBMK, all 16 bytes kept), then
encrypted with AES-CBC under the KBEK with the MAC as the IV.

Every failure is a :class:`~crypto_node.errors.KeyBlockError` whose text never holds a key.
Optional blocks are not produced and a block carrying them is refused.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from crypto_node.errors import KeyBlockError

VERSION = "D"
HEADER_CHARS = 16
MAC_BYTES = 16
_AES_KDF = {16: b"\x00\x02\x00\x80", 24: b"\x00\x03\x00\xc0", 32: b"\x00\x04\x01\x00"}
_KBEK, _KBMK = b"\x00\x00", b"\x00\x01"
_HEADER = re.compile(r"D(\d{4})([0-9A-Z]{2})([A-Z])([A-Z0-9])([0-9A-Z]{2})([A-Z])(\d{2})(\d{2})")
_HEX = re.compile(r"(?:[0-9A-F]{2})+")

#: Key usages branchnet holds (X9.143 table 6).
USAGES = {
    "B0": "BDK (base derivation key)",
    "D0": "symmetric data encryption key",
    "K0": "key encryption / wrapping key",
    "P0": "PIN encryption key",
    "V1": "PIN verification key, IBM 3624",
    "V2": "PIN verification key, Visa PVV",
}
#: Algorithms (X9.143 table 7).
ALGORITHMS = {"A": "AES", "T": "TDES"}
#: Modes of use (X9.143 table 8).
MODES = {
    "B": "encrypt and decrypt / wrap and unwrap",
    "C": "generate and verify",
    "D": "decrypt / unwrap only",
    "E": "encrypt / wrap only",
    "G": "generate only",
    "N": "no special restrictions",
    "V": "verify only",
    "X": "derive keys",
}
#: Exportability (X9.143 table 10).
EXPORTABILITY = {"E": "exportable under a trusted key", "N": "not exportable", "S": "sensitive"}


@dataclass(frozen=True, slots=True)
class KeyBlockHeader:
    """What a key block says its key may be used for."""

    usage: str
    algorithm: str
    mode_of_use: str
    version: str = "00"
    exportability: str = "N"

    def __post_init__(self) -> None:
        if self.usage not in USAGES:
            raise KeyBlockError(f"key usage {self.usage!r} is not supported")
        if self.algorithm not in ALGORITHMS:
            raise KeyBlockError(f"algorithm {self.algorithm!r} is not supported")
        if self.mode_of_use not in MODES:
            raise KeyBlockError(f"mode of use {self.mode_of_use!r} is not supported")
        if re.fullmatch(r"[0-9A-Z]{2}", self.version) is None:
            raise KeyBlockError("a key version is two characters")
        if self.exportability not in EXPORTABILITY:
            raise KeyBlockError(f"exportability {self.exportability!r} is not supported")

    def encode(self, length: int) -> str:
        """The 16 header characters of a block of ``length`` characters."""
        return (
            f"{VERSION}{length:04d}{self.usage}{self.algorithm}{self.mode_of_use}"
            f"{self.version}{self.exportability}0000"
        )

    @classmethod
    def parse(cls, block: str) -> KeyBlockHeader:
        """The header of ``block`` (checked for shape only; not authenticated).

        Raises:
            KeyBlockError: not a version D header branchnet can use.
        """
        match = _HEADER.match(block)
        if match is None:
            raise KeyBlockError("not a TR-31 version D key block header")
        length, usage, algorithm, mode, version, export, optional, _reserved = match.groups()
        if int(length) != len(block):
            raise KeyBlockError("the key block length does not match its header")
        if optional != "00":
            raise KeyBlockError("key blocks with optional blocks are not supported")
        return cls(usage, algorithm, mode, version, export)


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def derive_keys(kbpk: bytes) -> tuple[bytes, bytes]:
    """The KBEK and KBMK of an AES KBPK (SP 800-108 counter mode with AES-CMAC)."""
    suffix = _AES_KDF.get(len(kbpk))
    if suffix is None:
        raise KeyBlockError("a version D KBPK is an AES key (16, 24 or 32 bytes)")

    def derive(usage: bytes) -> bytes:
        blocks = b"".join(
            _cmac(kbpk, bytes([counter]) + usage + b"\x00" + suffix)
            for counter in range(1, (len(kbpk) + 15) // 16 + 1)
        )
        return blocks[: len(kbpk)]

    return derive(_KBEK), derive(_KBMK)


def wrap(kbpk: bytes, header: KeyBlockHeader, key: bytes, padding: bytes | None = None) -> str:
    """``key`` as a version D key block under ``kbpk``.

    Args:
        padding: the padding bytes (known-answer tests only); random by default.
    """
    if not 1 <= len(key) <= 64:
        raise KeyBlockError("a wrapped key is 1 to 64 bytes")
    size = -(-(2 + len(key)) // 16) * 16
    if padding is None:
        padding = secrets.token_bytes(size - 2 - len(key))
    elif len(padding) != size - 2 - len(key):
        raise KeyBlockError("wrong padding length")
    payload = (8 * len(key)).to_bytes(2, "big") + key + padding
    length = HEADER_CHARS + 2 * len(payload) + 2 * MAC_BYTES
    text = header.encode(length)
    kbek, kbmk = derive_keys(kbpk)
    mac = _cmac(kbmk, text.encode() + payload)
    encrypted = Cipher(algorithms.AES(kbek), modes.CBC(mac)).encryptor().update(payload)
    return text + encrypted.hex().upper() + mac.hex().upper()


def unwrap(kbpk: bytes, block: str) -> tuple[KeyBlockHeader, bytes]:
    """The header and clear key of a version D key block, once its MAC checks.

    Raises:
        KeyBlockError: malformed, not version D, wrapped under another key, or altered.
    """
    header, payload = open_payload(kbpk, block)
    bits = int.from_bytes(payload[:2], "big")
    if bits % 8 or not 8 <= bits <= 8 * (len(payload) - 2):
        raise KeyBlockError("the key block's key length is invalid")
    return header, payload[2 : 2 + bits // 8]


def open_payload(kbpk: bytes, block: str) -> tuple[KeyBlockHeader, bytes]:
    """The header and the whole clear key data (length, key, padding) of a key block."""
    if not isinstance(block, str):
        raise KeyBlockError("a key block is text")
    header = KeyBlockHeader.parse(block)
    body = block[HEADER_CHARS:]
    if _HEX.fullmatch(body) is None or len(body) < 2 * (16 + MAC_BYTES) or len(body) % 32:
        raise KeyBlockError("the key block body is not whole AES blocks of hex")
    encrypted = bytes.fromhex(body[: -2 * MAC_BYTES])
    mac = bytes.fromhex(body[-2 * MAC_BYTES :])
    kbek, kbmk = derive_keys(kbpk)
    payload = Cipher(algorithms.AES(kbek), modes.CBC(mac)).decryptor().update(encrypted)
    expected = _cmac(kbmk, block[:HEADER_CHARS].encode() + payload)
    if not hmac.compare_digest(mac, expected):
        raise KeyBlockError("the key block MAC does not verify (wrong KBPK or altered block)")
    return header, payload
