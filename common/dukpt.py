"""AES-128 DUKPT (ANSI X9.24-3-2017): initial keys and PIN-encryption working keys.

A PIN pad is loaded with an *initial key* derived from the base derivation key (BDK) and its
8-byte *initial key id*. Each transaction uses a fresh *key serial number* (KSN: the initial
key id plus a 32-bit transaction counter). The pad derives the working key from its initial
key; the host side (the crypto node) derives the same key from the BDK and the KSN.

Derivation (X9.24-3 §6.3): every step AES-encrypts one 16-byte *derivation data* block

    version 01 | block counter 01 | key usage (2) | algorithm (2) | length in bits (2)
    | 8 bytes: the initial key id (initial key), or its last 4 bytes + a counter (others)

under the key one level up. The key for counter ``c`` comes from the key for ``c`` without its
lowest one-bit, down to counter 0, which is the initial key. :class:`KeyDerivation` keeps the
intermediate keys of recent counters, so consecutive counters of one pad cost two AES steps.

A valid counter is non-zero and has at most 16 one-bits (a pad skips the others).
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from common.errors import BranchnetError

INITIAL_KEY_ID_BYTES = 8
KSN_BYTES = 12
KEY_BYTES = 16
MAX_COUNTER = 0xFFFF_FFFF
MAX_ONE_BITS = 16

_ECB = modes.ECB()
_Encryptor = CipherContext
_KSN_HEX = re.compile(r"[0-9A-Fa-f]{24}")

# Derivation-data fields (X9.24-3 §6.3.2, tables 2-4).
_VERSION_AND_BLOCK = b"\x01\x01"
_USAGE_KEY_DERIVATION = b"\x80\x00"
_USAGE_INITIAL_KEY = b"\x80\x01"
_USAGE_PIN_ENCRYPTION = b"\x10\x00"
_AES128_128_BITS = b"\x00\x02\x00\x80"


class DukptError(BranchnetError):
    """A KSN, counter or key that DUKPT cannot use; the message never holds key material."""


@dataclass(frozen=True, slots=True)
class Ksn:
    """A key serial number: the pad's initial key id and its transaction counter."""

    initial_key_id: bytes
    counter: int

    def __post_init__(self) -> None:
        if len(self.initial_key_id) != INITIAL_KEY_ID_BYTES:
            raise DukptError(f"an initial key id is {INITIAL_KEY_ID_BYTES} bytes")
        if not is_valid_counter(self.counter):
            raise DukptError("invalid DUKPT transaction counter")

    @classmethod
    def parse(cls, text: str) -> Ksn:
        """Read a KSN from 24 hex digits.

        Raises:
            DukptError: not 24 hex digits, or an invalid counter.
        """
        if not isinstance(text, str) or _KSN_HEX.fullmatch(text) is None:
            raise DukptError("a KSN is 24 hex digits")
        initial_key_id, counter = bytes.fromhex(text[:16]), int(text[16:], 16)
        return cls(initial_key_id, counter)

    def __bytes__(self) -> bytes:
        return self.initial_key_id + self.counter.to_bytes(4, "big")

    def __str__(self) -> str:
        return bytes(self).hex().upper()


def is_valid_counter(counter: int) -> bool:
    """True for a counter a pad may use: 1..2**32-1 with at most 16 one-bits."""
    return 0 < counter <= MAX_COUNTER and counter.bit_count() <= MAX_ONE_BITS


def next_counter(counter: int) -> int:
    """The first valid counter after ``counter`` (a pad's next transaction).

    Counters with more than 16 one-bits are skipped by adding their lowest one-bit, as the
    standard's pad algorithm does.

    Raises:
        DukptError: the pad has used its last counter.
    """
    if counter < 0:
        raise DukptError("a DUKPT counter is not negative")
    following = counter + 1
    while following.bit_count() > MAX_ONE_BITS:
        following += following & -following
    if following > MAX_COUNTER:
        raise DukptError("the PIN pad's DUKPT counters are exhausted")
    return following


def _encryptor(key: bytes) -> _Encryptor:
    return Cipher(algorithms.AES(key), _ECB).encryptor()


def _derivation_prefix(usage: bytes, initial_key_id: bytes) -> bytes:
    """The derivation data of one usage and pad up to the counter (its first 12 bytes)."""
    return _VERSION_AND_BLOCK + usage + _AES128_128_BITS + initial_key_id[4:]


def _derivation_data(usage: bytes, initial_key_id: bytes, counter: int) -> bytes:
    return _derivation_prefix(usage, initial_key_id) + counter.to_bytes(4, "big")


def _check_key(key: bytes, name: str) -> None:
    if len(key) != KEY_BYTES:
        raise DukptError(f"the {name} must be an AES-128 key ({KEY_BYTES} bytes)")


def _check_initial_key_id(initial_key_id: bytes) -> None:
    if len(initial_key_id) != INITIAL_KEY_ID_BYTES:
        raise DukptError(f"an initial key id is {INITIAL_KEY_ID_BYTES} bytes")


def initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    """The initial key a pad with ``initial_key_id`` is loaded with (X9.24-3 §6.3.3)."""
    _check_key(bdk, "BDK")
    _check_initial_key_id(initial_key_id)
    data = _VERSION_AND_BLOCK + _USAGE_INITIAL_KEY + _AES128_128_BITS + initial_key_id
    return _encryptor(bdk).update(data)


class KeyDerivation:
    """Working keys of one pad, derived from its initial key, with recent steps remembered.

    The cipher context of each counter's intermediate key is kept in a bounded LRU cache, so a
    pad's next counter usually costs one new AES key schedule for the derivation step and one
    for the working-key step. Holds key material: keep instances inside the component that
    owns the key, and never log them.
    """

    __slots__ = ("_initial_key_id", "_intermediate", "_pin_prefix")

    def __init__(self, initial_key_bytes: bytes, initial_key_id: bytes, cache: int = 32) -> None:
        _check_key(initial_key_bytes, "initial key")
        _check_initial_key_id(initial_key_id)
        self._initial_key_id = initial_key_id
        self._pin_prefix = _derivation_prefix(_USAGE_PIN_ENCRYPTION, initial_key_id)
        derivation_prefix = _derivation_prefix(_USAGE_KEY_DERIVATION, initial_key_id)
        root = initial_key_bytes

        @functools.lru_cache(maxsize=cache)
        def intermediate(counter: int) -> _Encryptor:
            """An AES context keyed with the intermediate key of ``counter``."""
            if counter == 0:
                return _encryptor(root)
            parent = counter & (counter - 1)  # without the lowest one-bit
            data = derivation_prefix + counter.to_bytes(4, "big")
            return _encryptor(intermediate(parent).update(data))

        self._intermediate: Callable[[int], _Encryptor] = intermediate

    def __repr__(self) -> str:
        return f"KeyDerivation(initial_key_id={self._initial_key_id.hex().upper()})"

    def pin_key(self, counter: int) -> bytes:
        """The PIN-encryption working key for ``counter`` (AES-128)."""
        if not is_valid_counter(counter):
            raise DukptError("invalid DUKPT transaction counter")
        return self._intermediate(counter).update(self._pin_prefix + counter.to_bytes(4, "big"))


class HostDerivation:
    """The host side: working keys for any pad of one BDK, from the KSN alone.

    Keeps one :class:`KeyDerivation` per recently seen pad (bounded, least recently used
    dropped). The pad table is lock-protected; the cached cipher contexts are meant for one
    thread at a time (the HSM runs its batches one by one).
    """

    __slots__ = ("_bdk", "_lock", "_pads", "_pads_cached")

    def __init__(self, bdk: bytes, pads_cached: int = 1024) -> None:
        _check_key(bdk, "BDK")
        self._bdk = bdk
        self._pads: OrderedDict[bytes, KeyDerivation] = OrderedDict()
        self._pads_cached = pads_cached
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HostDerivation(pads={len(self._pads)})"

    def pad(self, initial_key_id: bytes) -> KeyDerivation:
        """The derivation of the pad with ``initial_key_id``."""
        pads = self._pads
        with self._lock:
            derivation = pads.get(initial_key_id)
            if derivation is not None:
                pads.move_to_end(initial_key_id)  # most recently used last
                return derivation
            derivation = KeyDerivation(initial_key(self._bdk, initial_key_id), initial_key_id)
            if len(pads) >= self._pads_cached:
                pads.popitem(last=False)  # the least recently used
            pads[initial_key_id] = derivation
            return derivation

    def pin_key(self, ksn: Ksn) -> bytes:
        """The PIN-encryption working key the pad used for ``ksn``."""
        return self.pad(ksn.initial_key_id).pin_key(ksn.counter)


def pin_key(bdk: bytes, ksn: Ksn) -> bytes:
    """The PIN-encryption working key for ``ksn``, from the BDK (host side, uncached)."""
    derivation = KeyDerivation(initial_key(bdk, ksn.initial_key_id), ksn.initial_key_id, cache=0)
    return derivation.pin_key(ksn.counter)


def derivation_key(bdk: bytes, ksn: Ksn) -> bytes:
    """The intermediate derivation key of ``ksn``'s counter (X9.24-3 §6.3.4; known answers).

    Walks from the initial key, adding the counter's one-bits from the highest down.
    """
    key = initial_key(bdk, ksn.initial_key_id)
    reached = 0
    for bit in reversed(range(32)):
        if ksn.counter >> bit & 1:
            reached |= 1 << bit
            data = _derivation_data(_USAGE_KEY_DERIVATION, ksn.initial_key_id, reached)
            key = _encryptor(key).update(data)
    return key


def pin_key_from_initial_key(initial_key_bytes: bytes, ksn: Ksn) -> bytes:
    """The PIN-encryption working key for ``ksn``, from the pad's initial key (pad side)."""
    return KeyDerivation(initial_key_bytes, ksn.initial_key_id, cache=0).pin_key(ksn.counter)
