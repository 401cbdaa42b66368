"""Commands the host sends the crypto node, and its responses (a payment HSM's shape).

A command has a two-letter code; a response echoes the command id and carries a two-character
error code: ``00`` ok, ``01`` PIN verification failed, others per :class:`HsmError`.
PIN blocks cross here encrypted, exactly as the PIN pad produced them.
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


class GenerateOffset(_PinBlockCommand):
    """Create the PIN verification value for a new PIN (IBM 3624 offset or Visa PVV)."""

    code: Literal["GO"] = "GO"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin: EncryptedPin
    method: Literal["ibm3624", "visa_pvv"] = "ibm3624"


class VerifyPin(_PinBlockCommand):
    """Check a PIN block against the stored verification value."""

    code: Literal["VP"] = "VP"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin: EncryptedPin
    method: Literal["ibm3624", "visa_pvv"] = "ibm3624"
    verification_value: str = Field(pattern=r"^\d{4,12}$", repr=False)
    key_version: int = 1


class ChangePinCommand(_PinBlockCommand):
    """Verify the old PIN block and produce the verification value of the new one."""

    code: Literal["CP"] = "CP"
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    pin: EncryptedPin
    new_pin: EncryptedPin
    method: Literal["ibm3624", "visa_pvv"] = "ibm3624"
    verification_value: str = Field(pattern=r"^\d{4,12}$", repr=False)
    key_version: int = 1


class Echo(_Command):
    """Health check."""

    code: Literal["EC"] = "EC"


PinCommand = Annotated[
    GenerateOffset | VerifyPin | ChangePinCommand | Echo, Field(discriminator="code")
]
PIN_COMMAND_ADAPTER: TypeAdapter[PinCommand] = TypeAdapter(PinCommand)


class PinResponse(BaseModel):
    """The crypto node's answer to one command.

    ``verification_value`` is set by GO and by a successful CP; ``key_version`` says which PVK
    generation produced it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str
    error: HsmError
    verification_value: str | None = Field(default=None, repr=False)
    key_version: int | None = None


PIN_RESPONSE_ADAPTER: TypeAdapter[PinResponse] = TypeAdapter(PinResponse)
