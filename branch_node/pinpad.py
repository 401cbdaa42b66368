"""The PIN pad: turns a PIN typed at the counter into an encrypted block for the crypto node.

Each terminal's pad holds its initial key id and initial key (loaded from the pad key file the
crypto node issued; never the BDK) and its DUKPT transaction counter. Every PIN gets the next
valid counter, so a KSN is never used twice; the block is ISO 9564 format 4 under the AES DUKPT
PIN key of that KSN, with random fill from ``secrets``.

Resuming: the branch persists each pad's last counter and passes it back as ``counter``. To
survive a crash, reserve :attr:`PinPad.next_counter` durably *before* calling
:meth:`PinPad.encrypt`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path

from common.dukpt import DukptError, KeyDerivation, Ksn, next_counter
from common.errors import ConfigError
from common.pinblock import encipher_format4
from common.requests import EncryptedPin

PINPADS_FORMAT = "branchnet-pinpads/1"
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")


def pinpads_path(data_dir: Path, branch_id: str) -> Path:
    """The pad key file the crypto node writes for a branch."""
    return data_dir / "keys" / f"pinpads-{branch_id}.json"


class PinPad:
    """One terminal's PIN pad.

    Args:
        initial_key_id: the pad's 8-byte initial key id (the first part of every KSN).
        initial_key: its AES-128 initial key.
        counter: the last transaction counter used (0 for a new pad).
    """

    __slots__ = ("_counter", "_derivation", "_initial_key_id", "_lock")

    def __init__(self, initial_key_id: bytes, initial_key: bytes, counter: int = 0) -> None:
        if counter < 0:
            raise DukptError("a DUKPT counter is not negative")
        self._derivation = KeyDerivation(initial_key, initial_key_id)
        self._initial_key_id = initial_key_id
        self._counter = counter
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"PinPad(initial_key_id={self._initial_key_id.hex().upper()}, counter={self._counter})"
        )

    @property
    def initial_key_id(self) -> bytes:
        return self._initial_key_id

    @property
    def counter(self) -> int:
        """The last transaction counter used (0 before the first PIN)."""
        return self._counter

    @property
    def next_counter(self) -> int:
        """The counter the next :meth:`encrypt` will use (reserve it before encrypting)."""
        return next_counter(self._counter)

    def encrypt(self, pin: str, pan: str) -> EncryptedPin:
        """Encrypt ``pin`` for the card ``pan`` under the next KSN.

        Raises:
            PinBlockError: not a 4-12 digit PIN, or not a 1-19 digit PAN (no counter used).
            DukptError: the pad's counters are exhausted.
        """
        with self._lock:
            counter = next_counter(self._counter)
            key = self._derivation.pin_key(counter)
            pin_block = encipher_format4(key, pin, pan)
            self._counter = counter
        ksn = Ksn(self._initial_key_id, counter)
        return EncryptedPin(pin_block=pin_block.hex().upper(), ksn=str(ksn), format=4)


def load_pinpads(
    data_dir: Path, branch_id: str, counters: Mapping[str, int] | None = None
) -> dict[str, PinPad]:
    """The branch's PIN pads by terminal id, from the pad key file.

    Args:
        counters: each terminal's last used counter, to resume from (default 0).

    Raises:
        ConfigError: the file is missing, unreadable, malformed or for another branch.
    """
    path = pinpads_path(data_dir, branch_id)
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no PIN pad keys for branch {branch_id} in {path.parent}") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not JSON") from None
    counters = counters or {}
    try:
        if document.get("format", PINPADS_FORMAT) != PINPADS_FORMAT:
            raise ConfigError(f"{path} is not {PINPADS_FORMAT}")
        if document["branch_id"] != branch_id:
            raise ConfigError(f"{path} holds another branch's PIN pads")
        pads: dict[str, PinPad] = {}
        for terminal_id, entry in document["pads"].items():
            initial_key_id, initial_key = entry["initial_key_id"], entry["initial_key"]
            if not (_HEX16.fullmatch(initial_key_id) and _HEX32.fullmatch(initial_key)):
                raise ConfigError(f"{path}: malformed keys for terminal {terminal_id}")
            pads[str(terminal_id)] = PinPad(
                bytes.fromhex(initial_key_id),
                bytes.fromhex(initial_key),
                counter=counters.get(str(terminal_id), 0),
            )
    except (KeyError, TypeError, AttributeError, DukptError):
        raise ConfigError(f"{path} is malformed") from None
    return pads
