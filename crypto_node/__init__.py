"""The crypto node: a payment HSM for PINs (DUKPT, ISO 9564 PIN blocks, IBM 3624, Visa PVV).

Public surface: the key files (:func:`init_keys`, :func:`load_crypto_keys`,
:class:`CryptoKeys`), the pure HSM core (:class:`Hsm`), its bus service
(:class:`CryptoService`), the known-answer runner (:func:`run_kat`) and the benchmark
(:func:`run_bench`).
"""

from __future__ import annotations

from crypto_node.bench import run_bench
from crypto_node.errors import CryptoNodeError, InputFormatError, ReplayError, UnknownKeyError
from crypto_node.hsm import Hsm, replay_marks_path
from crypto_node.kat import run_kat
from crypto_node.keys import CryptoKeys, init_keys, issue_pinpads, load_crypto_keys
from crypto_node.service import CryptoService

__all__ = [
    "CryptoKeys",
    "CryptoNodeError",
    "CryptoService",
    "Hsm",
    "InputFormatError",
    "ReplayError",
    "UnknownKeyError",
    "init_keys",
    "issue_pinpads",
    "load_crypto_keys",
    "replay_marks_path",
    "run_bench",
    "run_kat",
]
