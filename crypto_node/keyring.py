"""The keys the crypto node holds in memory, each with the header that says what it may do.

A :class:`StoredKey` is a key opened from its TR-31 block under the LMK; the crypto node asks
the :class:`KeyRing` for a key *by purpose* (``use(name, usage, action)``) and gets it only
when the key block's usage and mode of use allow that action:

======== =====================================================================
action   modes of use that allow it (X9.143 table 8; ``N`` = no restriction)
======== =====================================================================
generate ``C`` ``G`` ``N``
verify   ``C`` ``V`` ``N``
derive   ``X``
encrypt  ``B`` ``E`` ``N``
decrypt  ``B`` ``D`` ``N``
export   exportability ``E`` (under a trusted KEK)
======== =====================================================================

TDES keys must have odd parity, checked at every use (``17``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from crypto_node.errors import KeyUsageError, ParityError, UnknownKeyError
from crypto_node.kcv import has_odd_parity, kcv
from crypto_node.tr31 import KeyBlockHeader, unwrap, wrap

Action = Literal["generate", "verify", "derive", "encrypt", "decrypt"]
_MODES: dict[str, frozenset[str]] = {
    "generate": frozenset("CGN"),
    "verify": frozenset("CVN"),
    "derive": frozenset("X"),
    "encrypt": frozenset("BEN"),
    "decrypt": frozenset("BDN"),
}
#: Key sizes per algorithm.
KEY_SIZES = {"A": (16, 24, 32), "T": (16, 24)}


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key, its TR-31 header, its KCV and the key block it came from (never the key in repr)."""

    name: str
    header: KeyBlockHeader
    key: bytes = field(repr=False)
    block: str = field(repr=False)

    @property
    def kcv(self) -> str:
        return kcv(self.key, self.header.algorithm)

    @property
    def version(self) -> str:
        return self.header.version

    def check(self, usage: str, action: Action) -> bytes:
        """The key, if its header allows ``action`` as a ``usage`` key.

        Raises:
            KeyUsageError: the header names another usage or a mode that forbids ``action``.
            ParityError: a TDES key without odd parity.
        """
        if self.header.usage != usage:
            raise KeyUsageError(f"key {self.name} is a {self.header.usage} key, not {usage}")
        if self.header.mode_of_use not in _MODES[action]:
            raise KeyUsageError(
                f"key {self.name}'s mode of use {self.header.mode_of_use} forbids {action}"
            )
        if self.header.algorithm == "T" and not has_odd_parity(self.key):
            raise ParityError(f"key {self.name} does not have odd parity")
        return self.key

    def check_exportable(self) -> None:
        if self.header.exportability != "E":
            raise KeyUsageError(f"key {self.name} is not exportable")


def open_block(kbpk: bytes, block: str, name: str) -> StoredKey:
    """A key block opened under ``kbpk`` (refused: see :func:`crypto_node.tr31.unwrap`)."""
    header, key = unwrap(kbpk, block)
    if len(key) not in KEY_SIZES[header.algorithm]:
        raise UnknownKeyError(f"key {name} has a length its algorithm does not allow")
    return StoredKey(name, header, key, block)


def seal(kbpk: bytes, name: str, header: KeyBlockHeader, key: bytes) -> StoredKey:
    """A key wrapped into a fresh key block under ``kbpk``."""
    return StoredKey(name, header, key, wrap(kbpk, header, key))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Keys by name (``bdk/<id>``, ``pvk-ibm/<version>``, ``pvk-visa/<version>``, ...)."""

    keys: Mapping[str, StoredKey]

    def __repr__(self) -> str:
        return f"KeyRing({sorted(self.keys)})"

    def __iter__(self) -> Iterator[StoredKey]:
        return iter(self.keys.values())

    def __contains__(self, name: object) -> bool:
        return name in self.keys

    def get(self, name: str) -> StoredKey:
        """The key named ``name``.

        Raises:
            UnknownKeyError: the HSM holds no such key.
        """
        stored = self.keys.get(name)
        if stored is None:
            raise UnknownKeyError("the HSM holds no key of that name")
        return stored

    def use(self, name: str, usage: str, action: Action) -> bytes:
        """The key named ``name`` for ``action``, checked against its header."""
        return self.get(name).check(usage, action)

    def with_key(self, stored: StoredKey) -> KeyRing:
        return KeyRing({**self.keys, stored.name: stored})
