"""The crypto node: a payment HSM for PINs (DUKPT, ISO 9564 PIN blocks, IBM 3624, Visa PVV).

Public surface: the master key (:class:`Lmk` from :class:`Component` s), the key store
(:func:`init_keys`, :func:`load_crypto_keys`, :func:`rotate_keys`, :class:`CryptoKeys`), TR-31
key blocks (:class:`KeyBlockHeader`), the pure HSM core (:class:`Hsm`), its bus service
(:class:`CryptoService`), the known-answer runner (:func:`run_kat`) and the benchmark
(:func:`run_bench`).
"""

from __future__ import annotations

from crypto_node.bench import run_bench
from crypto_node.errors import CryptoNodeError, InputFormatError, ReplayError, UnknownKeyError
from crypto_node.hsm import Hsm, replay_marks_path
from crypto_node.kat import run_kat
from crypto_node.keys import CryptoKeys, init_keys, issue_pinpads, load_crypto_keys, rotate_keys
from crypto_node.lmk import Component, Lmk
from crypto_node.service import INLINE_COMMANDS, CryptoService
from crypto_node.tr31 import KeyBlockHeader

__all__ = [
    "INLINE_COMMANDS",
    "Component",
    "CryptoKeys",
    "CryptoNodeError",
    "CryptoService",
    "Hsm",
    "InputFormatError",
    "KeyBlockHeader",
    "Lmk",
    "ReplayError",
    "UnknownKeyError",
    "init_keys",
    "issue_pinpads",
    "load_crypto_keys",
    "replay_marks_path",
    "rotate_keys",
    "run_bench",
    "run_kat",
]
