"""Commands the host sends the crypto node, and its responses (a payment HSM's shape).

A command has a two-letter code; a response echoes the command id and carries a two-character
error code: ``00`` ok, ``01`` PIN verification failed, others per :class:`HsmError`.
PIN blocks cross here encrypted, exactly as the PIN pad produced them.

Commands that name a key take a :data:`KeyRef`: the name of a key the crypto node holds
(``zpk/legacy``, ``kek/main``, ``pvk-ibm/2`` ...) or a TR-31 key block wrapped under its LMK.

=====  ===========================================================================
code   command
=====  ===========================================================================
GO     generate an IBM 3624 offset or Visa PVV from an encrypted PIN block
VP     verify a PIN block by offset or PVV
CP     change a PIN: verify the old block, produce the value of the new one
TP     translate a PIN block to a zone PIN key, format 0 or 3
GK     generate a key, returned as a key block under the LMK
IK     import a key block wrapped under a KEK (rewrapped under the LMK)
EK     export a key under a KEK
KC     key check value of a key
EC     echo / health
=====  ===========================================================================
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from common.requests import EncryptedPin


class HsmError(StrEnum):
    """The crypto node's error codes."""

    OK = "00"
    VERIFICATION_FAILED = "01"
    KEY_ERROR = "10"
    REPLAY = "11"
    FORMAT_ERROR = "15"
    USAGE_ERROR = "16"
    PARITY_ERROR = "17"
    PIN_FORMAT_REFUSED = "20"
    UNKNOWN_COMMAND = "68"
    INTERNAL_ERROR = "99"


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(min_length=1, max_length=40)


class _PinBlockCommand(_Command):
    """A command carrying PIN blocks from a pad.

    ``binding`` names the transaction the blocks belong to (the host sends the request id).
    A KSN already used is accepted again only with the same binding and the same PIN block —
    a retransmission of that transaction; without a binding, a used KSN is always a replay.
    """

    binding: str | None = Field(default=None, min_length=1, max_length=64)


#: A key the crypto node holds, by name, or a TR-31 key block under its LMK.
KeyRef = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[0-9A-Za-z/_.-]+$")]


class GenerateOffset(_PinBlockCommand):
    """Create the PIN verification value for a new PIN (IBM 3624 offset or Visa PVV)."""

    code: Literal["GO"] = "GO"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin: EncryptedPin
    method: Literal["ibm3624", "visa_pvv"] = "ibm3624"
    pvk: KeyRef | None = Field(default=None, repr=False)


class VerifyPin(_PinBlockCommand):
    """Check a PIN block against the stored verification value."""

    code: Literal["VP"] = "VP"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin: EncryptedPin
    method: Literal["ibm3624", "visa_pvv"] = "ibm3624"
    verification_value: str = Field(pattern=r"^\d{4,12}$", repr=False)
    key_version: int = 1
    pvk: KeyRef | None = Field(default=None, repr=False)


class ChangePinCommand(_PinBlockCommand):
    """Verify the old PIN block and produce the verification value of the new one."""

    code: Literal["CP"] = "CP"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin: EncryptedPin
    new_pin: EncryptedPin
    method: Literal["ibm3624", "visa_pvv"] = "ibm3624"
    verification_value: str = Field(pattern=r"^\d{4,12}$", repr=False)
    key_version: int = 1
    pvk: KeyRef | None = Field(default=None, repr=False)


class TranslatePin(_PinBlockCommand):
    """Re-encrypt a PIN block for a zone PIN key, in format 0 or 3 (ISO/Visa rules).

    The source is format 4 under the pad's DUKPT key (``ksn`` set), or format 0, 1 or 3 under
    ``source_key``. Allowed: 0 <-> 3, 1 -> 0 or 3, 4 (DUKPT) -> 0 or 3; never into 1 or 4.
    """

    code: Literal["TP"] = "TP"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin_block: str = Field(pattern=r"^(?:[0-9A-F]{16}|[0-9A-F]{32})$", repr=False)
    format: Literal[0, 1, 3, 4]
    ksn: str | None = Field(default=None, pattern=r"^[0-9A-F]{24}$", repr=False)
    source_key: KeyRef | None = Field(default=None, repr=False)
    destination_key: KeyRef = Field(repr=False)
    destination_format: Literal[0, 1, 3, 4]


class GenerateKey(_Command):
    """Generate a key; answered with its key block under the LMK and its KCV."""

    code: Literal["GK"] = "GK"
    usage: Literal["B0", "K0", "P0", "V1", "V2"]
    algorithm: Literal["A", "T"]
    mode_of_use: Literal["B", "C", "D", "E", "G", "N", "V", "X"]
    exportability: Literal["E", "N", "S"] = "N"
    version: str = Field(default="00", pattern=r"^[0-9A-Z]{2}$")
    length: Literal[16, 24, 32] = 16


class ImportKey(_Command):
    """Open a key block wrapped under a KEK and rewrap it under the LMK."""

    code: Literal["IK"] = "IK"
    kek: KeyRef = Field(repr=False)
    key_block: str = Field(min_length=16, max_length=512, repr=False)


class ExportKey(_Command):
    """Wrap an exportable key under a KEK for a partner."""

    code: Literal["EK"] = "EK"
    key: KeyRef = Field(repr=False)
    kek: KeyRef = Field(repr=False)


class KeyCheck(_Command):
    """The key check value of a key."""

    code: Literal["KC"] = "KC"
    key: KeyRef = Field(repr=False)


class Echo(_Command):
    """Health check."""

    code: Literal["EC"] = "EC"


PinCommand = Annotated[
    GenerateOffset
    | VerifyPin
    | ChangePinCommand
    | TranslatePin
    | GenerateKey
    | ImportKey
    | ExportKey
    | KeyCheck
    | Echo,
    Field(discriminator="code"),
]
#: Only the JSON keys go through pydantic's string cache: the values (PIN blocks, KSNs, card
#: numbers) are new in every command, so caching them costs time and keeps them in memory.
PIN_COMMAND_ADAPTER: TypeAdapter[PinCommand] = TypeAdapter(
    PinCommand, config=ConfigDict(cache_strings="keys")
)


class PinResponse(BaseModel):
    """The crypto node's answer to one command.

    ``verification_value`` is set by GO and by a successful CP; ``key_version`` says which PVK
    generation produced it and ``method`` by which method. ``pin_block`` answers TP;
    ``key_block`` answers GK, IK and EK; ``kcv`` answers GK, IK, EK and KC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str
    error: HsmError
    verification_value: str | None = Field(default=None, repr=False)
    key_version: int | None = None
    method: Literal["ibm3624", "visa_pvv"] | None = None
    pin_block: str | None = Field(default=None, repr=False)
    key_block: str | None = Field(default=None, repr=False)
    kcv: str | None = None


PIN_RESPONSE_ADAPTER: TypeAdapter[PinResponse] = TypeAdapter(PinResponse)
