"""The HSM core: commands in, responses out; every clear PIN and key lives and dies here.

A PIN block arrives as the pad made it: ISO 9564 format 4 under the AES DUKPT PIN key of its
KSN. The HSM finds the BDK the KSN names (any generation it holds), checks the counter is not
used (:mod:`crypto_node.replay`), derives the key, deciphers, records the counter, and then
generates or verifies the IBM 3624 offset or Visa PVV with the PVK generation the command
names. Every key is taken from the key ring *for a purpose*, so a key whose TR-31 header does
not allow it is refused (``16``), a TDES key without odd parity too (``17``), a key block
that does not open or a key the HSM does not hold is ``10``.

Every failure becomes an :class:`HsmError` code; nothing raises out of
:meth:`Hsm.execute_batch`, and no error text carries PIN, PIN block, card number or key.
A PIN block that does not decipher under the card's PAN (wrong PAN, corrupted, not the
format claimed) is a format error (``15``), not a wrong PIN; a PIN block translation the
ISO/Visa rules forbid is ``20``.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from common.dukpt import DukptError, HostDerivation, Ksn
from common.logs import get_logger
from common.pin_commands import (
    ChangePinCommand,
    ExportKey,
    GenerateKey,
    GenerateOffset,
    HsmError,
    ImportKey,
    KeyCheck,
    PinCommand,
    PinResponse,
    TranslatePin,
    VerifyPin,
)
from common.pinblock import (
    PinBlockError,
    decipher_format0,
    decipher_format1,
    decipher_format3,
    decipher_format4,
    encipher_format0,
    encipher_format3,
)
from common.requests import EncryptedPin
from crypto_node import ibm3624, visa_pvv
from crypto_node.errors import (
    CryptoNodeError,
    InputFormatError,
    KeyUsageError,
    ParityError,
    PinFormatError,
    ReplayError,
    UnknownKeyError,
)
from crypto_node.kcv import has_odd_parity, kcv, with_odd_parity
from crypto_node.keyring import Action, StoredKey, open_block, seal
from crypto_node.keys import CryptoKeys, bdk_name, pvk_name, pvki_of
from crypto_node.pvk import Pvk
from crypto_node.replay import ReplayGuard, ReplayMarks, fingerprint
from crypto_node.tr31 import KeyBlockHeader

_log = get_logger(__name__)

#: Key blocks opened from commands, kept (bounded, least recently used dropped) so a host
#: sending the same block each time pays for its CMACs once.
_BLOCK_CACHE = 256
_PVK_USAGE = {"ibm3624": "V1", "visa_pvv": "V2"}
#: (source format, destination format) pairs a translation may make (ISO 9564-1 / Visa).
_TRANSLATIONS = frozenset({(0, 0), (0, 3), (3, 0), (3, 3), (1, 0), (1, 3), (4, 0), (4, 3)})


def replay_marks_path(data_dir: Path) -> Path:
    """Where the HSM of a data directory keeps its KSN replay marks."""
    return data_dir / "crypto" / "ksn-marks.json"


class Hsm:
    """Runs commands against one set of keys.

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
        self._derivations: dict[bytes, HostDerivation] = {}
        self._pvks: dict[tuple[str, int, Action, str | None], Pvk] = {}
        self._blocks: OrderedDict[str, StoredKey] = OrderedDict()
        if replay_file is None and keys.home is not None:
            replay_file = replay_marks_path(keys.home)
        self._marks = ReplayMarks(replay_file) if persist and replay_file is not None else None
        self._replay = self._marks.load() if self._marks is not None else ReplayGuard()
        self._lock = threading.Lock()
        self._commands: dict[str, Callable[[PinCommand], PinResponse]] = {
            "VP": self._verify_pin,
            "GO": self._generate_value,
            "CP": self._change_pin,
            "TP": self._translate,
            "GK": self._generate_key,
            "IK": self._import_key,
            "EK": self._export_key,
            "KC": self._key_check,
            "EC": lambda command: _response(command.command_id, HsmError.OK),
        }

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
                    _response(r.command_id, HsmError.INTERNAL_ERROR)
                    if c.code in ("GO", "VP", "CP", "TP")
                    else r
                    for c, r in zip(commands, responses, strict=True)
                ]
            return responses

    def _answer(self, command: PinCommand) -> PinResponse:
        try:
            run = self._commands.get(getattr(command, "code", ""))
            if run is None:
                return _response(_command_id(command), HsmError.UNKNOWN_COMMAND)
            return run(command)
        except (CryptoNodeError, PinBlockError, DukptError) as error:
            code = error.code if isinstance(error, CryptoNodeError) else HsmError.FORMAT_ERROR
            return _response(_command_id(command), code)
        except Exception as error:
            _log.error("hsm_command_failed", error=type(error).__name__)
            return _response(_command_id(command), HsmError.INTERNAL_ERROR)

    # ---- PIN verification values ------------------------------------------------------------

    def _verify_pin(self, command: PinCommand) -> PinResponse:
        command = cast(VerifyPin, command)
        pvk = self._pvk(command.method, command.key_version, "verify", command.pvk)
        pin = self._open(command.pin, command.pan, command.binding)
        ok = self._verify(pvk, command.method, command.key_version, pin, command)
        return _response(command.command_id, HsmError.OK if ok else HsmError.VERIFICATION_FAILED)

    def _generate_value(self, command: PinCommand) -> PinResponse:
        command = cast(GenerateOffset, command)
        version = self._keys.key_version
        pvk = self._pvk(command.method, version, "generate", command.pvk)
        pin = self._open(command.pin, command.pan, command.binding)
        return self._value_response(
            command.command_id, pvk, command.method, version, pin, command.pan
        )

    def _change_pin(self, command: PinCommand) -> PinResponse:
        command = cast(ChangePinCommand, command)
        check = self._pvk(command.method, command.key_version, "verify", command.pvk)
        version = self._keys.key_version
        make = self._pvk(command.method, version, "generate", None)
        old_pin = self._open(command.pin, command.pan, command.binding)
        new_pin = self._open(command.new_pin, command.pan, command.binding, "new")
        if not self._verify(check, command.method, command.key_version, old_pin, command):
            return _response(command.command_id, HsmError.VERIFICATION_FAILED)
        return self._value_response(
            command.command_id, make, command.method, version, new_pin, command.pan
        )

    def _pvk(self, method: str, version: int, action: Action, given: str | None) -> Pvk:
        """The PVK of ``method`` and generation ``version`` (or the one given), for ``action``.

        Cached by all four: a block given is checked against each version it comes with.
        """
        cached = self._pvks.get((method, version, action, given))
        if cached is None:
            stored = self._key(given if given is not None else pvk_name(method, version))
            if given is not None and stored.header.version != f"{version % 100:02d}":
                raise KeyUsageError("the PVK given is not of the version the command names")
            cached = Pvk(stored.check(_PVK_USAGE[method], action))
            if len(self._pvks) >= _BLOCK_CACHE:
                self._pvks.clear()  # PVKs given as blocks: keep the cache bounded
            self._pvks[(method, version, action, given)] = cached
        return cached

    def _value_response(
        self, command_id: str, pvk: Pvk, method: str, version: int, pin: str, pan: str
    ) -> PinResponse:
        if method == "visa_pvv":
            value = visa_pvv.generate_pvv(pvk, pvki_of(version), pin, pan)
        else:
            table = self._keys.decimalization_table
            value = ibm3624.generate_offset(pvk, table, ibm3624.validation_data(pan), pin)
        return PinResponse(
            command_id=command_id,
            error=HsmError.OK,
            verification_value=value,
            key_version=version,
            method=method,
        )

    def _verify(
        self, pvk: Pvk, method: str, version: int, pin: str, command: VerifyPin | ChangePinCommand
    ) -> bool:
        value, pan = command.verification_value, command.pan
        if method == "visa_pvv":
            return visa_pvv.verify_pvv(pvk, pvki_of(version), pin, pan, value)
        table = self._keys.decimalization_table
        return ibm3624.verify_offset(pvk, table, ibm3624.validation_data(pan), pin, value)

    # ---- PIN blocks -------------------------------------------------------------------------

    def _open(
        self, encrypted: EncryptedPin, pan: str, binding: str | None, role: str = "pin"
    ) -> str:
        """The clear PIN of a pad's block, refusing a used KSN; records the KSN once it works.

        A used KSN is accepted when it comes again bound to the same transaction with the
        same block in the same role (a retransmission; see :mod:`crypto_node.replay`).
        """
        if encrypted.format != 4 or len(encrypted.ksn) != 24:
            raise InputFormatError("only ISO 9564 format 4 blocks under AES DUKPT are accepted")
        return self._open_dukpt(encrypted.pin_block, encrypted.ksn, pan, binding, role)

    def _open_dukpt(
        self, pin_block: str, ksn_text: str, pan: str, binding: str | None, role: str
    ) -> str:
        ksn = Ksn.parse(ksn_text)
        derivation = self._derivation(ksn.initial_key_id[:4])
        use = None if binding is None else fingerprint(binding, role, ksn, pin_block)
        if self._replay.is_used(ksn, use):
            raise ReplayError("KSN counter already used")
        key = derivation.pin_key(ksn)
        pin = decipher_format4(key, bytes.fromhex(pin_block), pan)
        self._replay.record(ksn, use)
        return pin

    def _derivation(self, bdk_id: bytes) -> HostDerivation:
        """The DUKPT derivation of the BDK generation a KSN names."""
        derivation = self._derivations.get(bdk_id)
        if derivation is None:
            name = bdk_name(bdk_id.hex().upper())
            if name not in self._keys.ring:
                raise UnknownKeyError("the KSN names a BDK the HSM does not hold")
            derivation = HostDerivation(self._keys.ring.use(name, "B0", "derive"))
            self._derivations[bdk_id] = derivation
        return derivation

    def _translate(self, command: PinCommand) -> PinResponse:
        command = cast(TranslatePin, command)
        source, target = command.format, command.destination_format
        if (source, target) not in _TRANSLATIONS:
            raise PinFormatError("that PIN block translation is not allowed")
        block = bytes.fromhex(command.pin_block)
        if source == 4:
            if command.ksn is None or len(block) != 16:
                raise InputFormatError("a format 4 source is a DUKPT block with its KSN")
            pin = self._open_dukpt(
                command.pin_block, command.ksn, command.pan, command.binding, "pin"
            )
        else:
            if command.source_key is None or len(block) != 8:
                raise InputFormatError("a format 0, 1 or 3 source is 8 bytes under a source key")
            key = self._key(command.source_key).check("P0", "decrypt")
            if source == 0:
                pin = decipher_format0(key, block, command.pan)
            elif source == 3:
                pin = decipher_format3(key, block, command.pan)
            else:
                pin = decipher_format1(key, block)
        destination = self._key(command.destination_key)
        key = destination.check("P0", "encrypt")
        if destination.header.algorithm != "T":
            raise KeyUsageError("a format 0 or 3 destination key is TDES")
        encipher = encipher_format0 if target == 0 else encipher_format3
        translated = encipher(key, pin, command.pan).hex().upper()
        return PinResponse(command_id=command.command_id, error=HsmError.OK, pin_block=translated)

    # ---- keys -------------------------------------------------------------------------------

    def _key(self, ref: str) -> StoredKey:
        """A key by name, or opened from a key block under the LMK (cached, bounded)."""
        if ref in self._keys.ring:
            return self._keys.ring.get(ref)
        if not ref.startswith("D") or len(ref) < 16:
            raise UnknownKeyError("the HSM holds no key of that name")
        stored = self._blocks.get(ref)
        if stored is not None:
            self._blocks.move_to_end(ref)
            return stored
        stored = open_block(self._keys.lmk.key, ref, "given")
        if len(self._blocks) >= _BLOCK_CACHE:
            self._blocks.popitem(last=False)  # the least recently used
        self._blocks[ref] = stored
        return stored

    def _generate_key(self, command: PinCommand) -> PinResponse:
        command = cast(GenerateKey, command)
        header = KeyBlockHeader(
            command.usage,
            command.algorithm,
            command.mode_of_use,
            command.version,
            command.exportability,
        )
        if command.algorithm == "T":
            if command.length == 32:
                raise InputFormatError("a TDES key is 16 or 24 bytes")
            key = with_odd_parity(secrets.token_bytes(command.length))
        else:
            key = secrets.token_bytes(command.length)
        stored = seal(self._keys.lmk.key, "generated", header, key)
        return _key_response(command.command_id, stored.block, stored.kcv)

    def _import_key(self, command: PinCommand) -> PinResponse:
        command = cast(ImportKey, command)
        kek = self._key(command.kek).check("K0", "decrypt")
        imported = open_block(kek, command.key_block, "imported")
        if imported.header.algorithm == "T" and not has_odd_parity(imported.key):
            raise ParityError("the imported key does not have odd parity")
        stored = seal(self._keys.lmk.key, "imported", imported.header, imported.key)
        return _key_response(command.command_id, stored.block, stored.kcv)

    def _export_key(self, command: PinCommand) -> PinResponse:
        command = cast(ExportKey, command)
        stored = self._key(command.key)
        stored.check_exportable()
        kek = self._key(command.kek).check("K0", "encrypt")
        exported = seal(kek, "exported", stored.header, stored.key)
        return _key_response(command.command_id, exported.block, exported.kcv)

    def _key_check(self, command: PinCommand) -> PinResponse:
        command = cast(KeyCheck, command)
        stored = self._key(command.key)
        return PinResponse(
            command_id=command.command_id,
            error=HsmError.OK,
            kcv=kcv(stored.key, stored.header.algorithm),
        )


def _key_response(command_id: str, block: str, check_value: str) -> PinResponse:
    return PinResponse(command_id=command_id, error=HsmError.OK, key_block=block, kcv=check_value)


def _command_id(command: object) -> str:
    command_id = getattr(command, "command_id", None)
    return command_id if isinstance(command_id, str) else "?"


def _response(command_id: str, error: HsmError) -> PinResponse:
    """A response carrying only a code.

    Validated construction: pydantic-core builds it faster than ``model_construct`` (which
    fills the defaults in Python), so there is nothing to gain by skipping validation.
    """
    return PinResponse(command_id=command_id, error=error)
