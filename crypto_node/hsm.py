"""The HSM core: PIN commands in, responses out; every clear PIN lives and dies here.

A PIN block arrives as the pad made it: ISO 9564 format 4 under the AES DUKPT PIN key of its
KSN. The HSM checks the KSN names its BDK and a counter that pad has not used, derives the key
from the BDK, deciphers, records the counter, and then generates or verifies the IBM 3624
offset or Visa PVV. Every failure becomes an :class:`HsmError` code; nothing raises out of
:meth:`Hsm.execute_batch`, and no error text carries PIN, PIN block, card number or key.

A PIN block that does not decipher under the card's PAN (wrong PAN, corrupted, not format 4)
is a format error (``15``), not a wrong PIN. Only format 4 under AES DUKPT (24-digit KSN) is
accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from common.dukpt import DukptError, HostDerivation, Ksn
from common.logs import get_logger
from common.pin_commands import (
    ChangePinCommand,
    Echo,
    GenerateOffset,
    HsmError,
    PinCommand,
    PinResponse,
    VerifyPin,
)
from common.pinblock import PinBlockError, decipher_format4
from common.requests import EncryptedPin
from crypto_node import ibm3624, visa_pvv
from crypto_node.errors import CryptoNodeError, InputFormatError, ReplayError, UnknownKeyError
from crypto_node.keys import CryptoKeys
from crypto_node.pvk import Pvk
from crypto_node.replay import ReplayGuard, ReplayMarks, fingerprint

_log = get_logger(__name__)


def replay_marks_path(data_dir: Path) -> Path:
    """Where the HSM of a data directory keeps its KSN replay marks."""
    return data_dir / "crypto" / "ksn-marks.json"


class Hsm:
    """Runs PIN commands against one set of keys.

    Args:
        keys: the node's keys.
        replay_file: where the KSN replay marks persist; by default
            ``keys.home/crypto/ksn-marks.json`` when the keys came from a data directory.
        persist: False keeps the marks in memory only (benchmarks, tests).

    Batches run one at a time (a lock), so the replay marks see commands in order.
    """

    def __init__(
        self, keys: CryptoKeys, *, replay_file: Path | None = None, persist: bool = True
    ) -> None:
        self._keys = keys
        self._bdk_id = bytes.fromhex(keys.bdk_id)
        self._derivation = HostDerivation(keys.bdk)
        self._pvk = Pvk(keys.pvk)
        if replay_file is None and keys.home is not None:
            replay_file = replay_marks_path(keys.home)
        self._marks = ReplayMarks(replay_file) if persist and replay_file is not None else None
        self._replay = self._marks.load() if self._marks is not None else ReplayGuard()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Hsm(bdk_id={self._keys.bdk_id}, replay={self._replay!r})"

    def execute(self, command: PinCommand) -> PinResponse:
        """Run one command."""
        return self.execute_batch([command])[0]

    def execute_batch(self, commands: Sequence[PinCommand]) -> list[PinResponse]:
        """Run commands in order; one response each, in the same order.

        The KSN marks are saved before returning; if that fails, every command that used a
        PIN block is answered ``99`` (its counter stays refused in memory).
        """
        with self._lock:
            responses = [self._answer(command) for command in commands]
            if self._marks is None or not self._replay.dirty:
                return responses
            try:
                self._marks.save(self._replay)
            except OSError as error:
                _log.error("ksn_marks_not_saved", error=type(error).__name__)
                return [
                    r if isinstance(c, Echo) else _response(r.command_id, HsmError.INTERNAL_ERROR)
                    for c, r in zip(commands, responses, strict=True)
                ]
            return responses

    def _answer(self, command: PinCommand) -> PinResponse:
        try:
            return self._run(command)
        except (CryptoNodeError, PinBlockError, DukptError) as error:
            code = error.code if isinstance(error, CryptoNodeError) else HsmError.FORMAT_ERROR
            return _response(_command_id(command), code)
        except Exception as error:
            _log.error("hsm_command_failed", error=type(error).__name__)
            return _response(_command_id(command), HsmError.INTERNAL_ERROR)

    def _run(self, command: PinCommand) -> PinResponse:
        # Dispatch on the code, not isinstance: this is the hot path.
        code = getattr(command, "code", None)
        if code == "VP":
            command = cast(VerifyPin, command)
            self._check_version(command.key_version)
            pin = self._open(command.pin, command.pan, command.binding)
            ok = self._verify(command.method, pin, command.pan, command.verification_value)
            return _response(command.command_id, _verdict(ok))
        if code == "GO":
            command = cast(GenerateOffset, command)
            pin = self._open(command.pin, command.pan, command.binding)
            return self._value_response(command.command_id, command.method, pin, command.pan)
        if code == "CP":
            command = cast(ChangePinCommand, command)
            self._check_version(command.key_version)
            old_pin = self._open(command.pin, command.pan, command.binding)
            new_pin = self._open(command.new_pin, command.pan, command.binding, "new")
            if not self._verify(command.method, old_pin, command.pan, command.verification_value):
                return _response(command.command_id, HsmError.VERIFICATION_FAILED)
            return self._value_response(command.command_id, command.method, new_pin, command.pan)
        if code == "EC":
            return _response(_command_id(command), HsmError.OK)
        return _response(_command_id(command), HsmError.UNKNOWN_COMMAND)

    def _check_version(self, key_version: int) -> None:
        if key_version != self._keys.key_version:
            raise UnknownKeyError("no PVK of that version")

    def _open(
        self, encrypted: EncryptedPin, pan: str, binding: str | None, role: str = "pin"
    ) -> str:
        """The clear PIN of a pad's block, refusing a used KSN; records the KSN once it works.

        A used KSN is accepted when it comes again bound to the same transaction with the
        same block in the same role (a retransmission; see :mod:`crypto_node.replay`).
        """
        if encrypted.format != 4 or len(encrypted.ksn) != 24:
            raise InputFormatError("only ISO 9564 format 4 blocks under AES DUKPT are accepted")
        ksn = Ksn.parse(encrypted.ksn)
        if ksn.initial_key_id[:4] != self._bdk_id:
            raise UnknownKeyError("the KSN names another BDK")
        use = None if binding is None else fingerprint(binding, role, ksn, encrypted.pin_block)
        if self._replay.is_used(ksn, use):
            raise ReplayError("KSN counter already used")
        key = self._derivation.pin_key(ksn)
        pin = decipher_format4(key, bytes.fromhex(encrypted.pin_block), pan)
        self._replay.record(ksn, use)
        return pin

    def _value_response(self, command_id: str, method: str, pin: str, pan: str) -> PinResponse:
        return PinResponse(
            command_id=command_id,
            error=HsmError.OK,
            verification_value=self._generate(method, pin, pan),
            key_version=self._keys.key_version,
        )

    def _generate(self, method: str, pin: str, pan: str) -> str:
        keys = self._keys
        if method == "visa_pvv":
            return visa_pvv.generate_pvv(self._pvk, keys.pvki, pin, pan)
        validation_data = ibm3624.validation_data(pan)
        return ibm3624.generate_offset(self._pvk, keys.decimalization_table, validation_data, pin)

    def _verify(self, method: str, pin: str, pan: str, value: str) -> bool:
        keys = self._keys
        if method == "visa_pvv":
            return visa_pvv.verify_pvv(self._pvk, keys.pvki, pin, pan, value)
        validation_data = ibm3624.validation_data(pan)
        return ibm3624.verify_offset(
            self._pvk, keys.decimalization_table, validation_data, pin, value
        )


def _command_id(command: object) -> str:
    command_id = getattr(command, "command_id", None)
    return command_id if isinstance(command_id, str) else "?"


def _response(command_id: str, error: HsmError) -> PinResponse:
    """A response carrying only a code."""
    return PinResponse(command_id=command_id, error=error)


def _verdict(ok: bool) -> HsmError:
    return HsmError.OK if ok else HsmError.VERIFICATION_FAILED
