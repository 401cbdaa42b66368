"""Request records, one model per kind, and the decoder that turns bytes into one.

Every record names its originator (branch, teller, terminal), when it was originated and a
request id that is stable across retries. A record that cannot be used is not an exception:
:func:`decode_request` returns a :class:`RecordError` carrying the result code to answer with.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from common.id_documents import IdType
from common.ids import (
    REQUEST_ID,
    AccountNo,
    BranchId,
    RequestId,
    StaffId,
    TerminalId,
    is_valid_account_no,
)
from common.money import Amount, NonNegativeAmount
from common.results import ResultCode

#: The largest request record accepted, in bytes.
MAX_RECORD_BYTES = 8 * 1024

#: Who acts at the terminal: a teller, a supervisor authorising, an auditor.
Role = Literal["teller", "supervisor", "auditor"]


def _is_none(value: object) -> bool:
    return value is None


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class EncryptedPin(_Record):
    """A PIN block as the PIN pad sent it: encrypted, with the key serial number.

    The host passes it to the crypto node untouched; it is never logged or stored.
    """

    pin_block: str = Field(pattern=r"^(?:[0-9A-F]{16}|[0-9A-F]{32})$", repr=False)
    ksn: str = Field(pattern=r"^(?:[0-9A-F]{20}|[0-9A-F]{24})$", repr=False)
    format: Literal[0, 3, 4] = 4


class IdDocument(_Record):
    """An identity document shown at the counter."""

    id_type: IdType
    number: str = Field(min_length=1, max_length=32, repr=False)


class Authorisation(_Record):
    """A staff signature on the request carrying it: a supervisor's authorisation (maker-checker),
    or a supervisor's or auditor's own request signed. The signer's staff id and their Ed25519
    signature (hex) over the request without this field (common.authorisation).
    """

    supervisor_id: StaffId
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", repr=False)


class RequestBase(_Record):
    """Fields every request carries."""

    request_id: RequestId
    branch_id: BranchId
    teller_id: StaffId
    terminal_id: TerminalId
    origin_time: dt.datetime
    #: The acting staff member's (``teller_id``'s) role.
    role: Role = "teller"
    #: A supervisor's signed authorisation, where a teller alone may not act.
    authorisation: Authorisation | None = None
    #: When the branch stops waiting for the reply (absolute UTC, wall clock); a request the
    #: host takes later is declined ``68`` unapplied. None (older branches): no deadline.
    #: Left out when None: a record without one keeps the bytes (and idempotency hash) it had
    #: before deadlines (a field-level exclusion: half the cost of a wrapping serializer).
    deadline: AwareDatetime | None = Field(default=None, exclude_if=_is_none)


class OpenAccount(RequestBase):
    kind: Literal["open_account"] = "open_account"
    account: AccountNo
    customer_name: str = Field(min_length=1, max_length=64, repr=False)
    id_document: IdDocument
    pin: EncryptedPin | None = None
    initial_deposit: NonNegativeAmount = 0


class Deposit(RequestBase):
    kind: Literal["deposit"] = "deposit"
    account: AccountNo
    amount: Amount


class Withdraw(RequestBase):
    kind: Literal["withdraw"] = "withdraw"
    account: AccountNo
    amount: Amount
    pin: EncryptedPin
    withdrawer: IdDocument | None = None
    holder: IdDocument | None = None


class Transfer(RequestBase):
    kind: Literal["transfer"] = "transfer"
    account: AccountNo
    to_account: AccountNo
    amount: Amount
    pin: EncryptedPin


class Balance(RequestBase):
    kind: Literal["balance"] = "balance"
    account: AccountNo
    pin: EncryptedPin


class ChangePin(RequestBase):
    kind: Literal["change_pin"] = "change_pin"
    account: AccountNo
    pin: EncryptedPin
    new_pin: EncryptedPin


class CloseAccount(RequestBase):
    kind: Literal["close_account"] = "close_account"
    account: AccountNo
    pin: EncryptedPin


class MakeAppointment(RequestBase):
    kind: Literal["make_appointment"] = "make_appointment"
    account: AccountNo
    amount: Amount
    date: dt.date


class Freeze(RequestBase):
    kind: Literal["freeze"] = "freeze"
    account: AccountNo
    amount: Amount | None = None
    authority_ref: str = Field(min_length=1, max_length=64)


class Unfreeze(RequestBase):
    kind: Literal["unfreeze"] = "unfreeze"
    account: AccountNo
    authority_ref: str = Field(min_length=1, max_length=64)


class Deduct(RequestBase):
    kind: Literal["deduct"] = "deduct"
    account: AccountNo
    amount: Amount
    authority_ref: str = Field(min_length=1, max_length=64)


class UnlockPin(RequestBase):
    """A supervisor lifts a PIN lock after three wrong tries (the customer is present)."""

    kind: Literal["unlock_pin"] = "unlock_pin"
    account: AccountNo


class CustomerQuery(RequestBase):
    kind: Literal["customer_query"] = "customer_query"
    account: AccountNo
    purpose: str = Field(min_length=1, max_length=128)


Request = Annotated[
    OpenAccount
    | Deposit
    | Withdraw
    | Transfer
    | Balance
    | ChangePin
    | CloseAccount
    | MakeAppointment
    | Freeze
    | Unfreeze
    | Deduct
    | CustomerQuery
    | UnlockPin,
    Field(discriminator="kind"),
]
#: Only the JSON keys go through pydantic's string cache (as for PIN commands): the values
#: (card numbers, PIN blocks, KSNs, request ids) are new in every request.
REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(
    Request, config=ConfigDict(cache_strings="keys")
)
KINDS: tuple[str, ...] = (
    "open_account", "deposit", "withdraw", "transfer", "balance", "change_pin",
    "close_account", "make_appointment", "freeze", "unfreeze", "deduct", "customer_query",
    "unlock_pin",
)  # fmt: skip
#: Kinds that carry a PIN the crypto node must verify before the host acts.
PIN_KINDS = frozenset({"withdraw", "transfer", "balance", "change_pin", "close_account"})
_REQUEST_ID = re.compile(REQUEST_ID)
_ACCOUNT_FIELD_NAMES = ("account", "to_account")
_ACCOUNT_FIELDS = frozenset(_ACCOUNT_FIELD_NAMES)
_AMOUNT_FIELDS = frozenset({"amount", "initial_deposit"})


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why a record was refused before any processing.

    ``request_id`` is set when the record named a usable one, so the refusal can be answered.
    """

    request_id: str | None
    code: ResultCode
    reason: str


def encode_request(request: RequestBase) -> bytes:
    """Serialise a request record to its wire bytes (compact JSON, no newlines)."""
    return request.__pydantic_serializer__.to_json(request)


def decode_request(raw: bytes, *, branch_id: str | None = None) -> Request | RecordError:
    """Decode one record, or say why it cannot be processed.

    Args:
        raw: the record's bytes as they arrived.
        branch_id: the branch the frame came from; a record naming another is refused.

    Returns:
        The request, or a :class:`RecordError` with ``30`` (format), ``12`` (unknown kind),
        ``13`` (amount) or ``14`` (malformed account number).
    """
    if len(raw) > MAX_RECORD_BYTES:
        return RecordError(None, ResultCode.FORMAT_ERROR, "record too large")
    try:
        # the adapter's validator itself: the adapter's wrapper costs 10% per record
        request: Request = REQUEST_ADAPTER.validator.validate_json(raw, strict=True)
    except ValidationError as error:
        return _diagnose(raw, branch_id, error)
    fields = request.__dict__  # not getattr: a model's missing attribute is slow to miss
    for name in _ACCOUNT_FIELD_NAMES:
        number = fields.get(name)
        if number is not None and not is_valid_account_no(number):
            return RecordError(
                request.request_id, ResultCode.NO_SUCH_ACCOUNT, "malformed account number"
            )
    if branch_id is not None and (
        request.branch_id != branch_id or not request.request_id.startswith(branch_id + "-")
    ):
        return RecordError(None, ResultCode.FORMAT_ERROR, "record names another branch")
    return request


def _diagnose(raw: bytes, branch_id: str | None, error: ValidationError) -> RecordError:
    """Explain why a record failed validation, naming its request id when it has a usable one."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return RecordError(None, ResultCode.FORMAT_ERROR, "record is not valid JSON")
    if not isinstance(document, dict):
        return RecordError(None, ResultCode.FORMAT_ERROR, "record is not a JSON object")
    request_id = _usable_request_id(document, branch_id)
    if request_id is None:
        return RecordError(None, ResultCode.FORMAT_ERROR, "missing or malformed request_id")
    if document.get("kind") not in KINDS:
        return RecordError(request_id, ResultCode.INVALID_TRANSACTION, "unknown request kind")
    return RecordError(request_id, *_classify(error))


def _usable_request_id(document: dict[str, Any], branch_id: str | None) -> str | None:
    request_id = document.get("request_id")
    if not isinstance(request_id, str) or len(request_id) > 32:
        return None
    if _REQUEST_ID.match(request_id) is None:
        return None
    if branch_id is not None and not request_id.startswith(branch_id + "-"):
        return None
    return request_id


def _classify(error: ValidationError) -> tuple[ResultCode, str]:
    """Map the first validation problem to a result code and a reason without input values."""
    first = error.errors(include_input=False, include_url=False)[0]
    location = [str(part) for part in first["loc"]]
    field = location[-1] if location else ""
    names = set(location)
    if names & _AMOUNT_FIELDS:
        return ResultCode.INVALID_AMOUNT, f"invalid amount: {first['type']}"
    if names & _ACCOUNT_FIELDS and first["type"] != "missing":
        return ResultCode.NO_SUCH_ACCOUNT, "malformed account number"
    return ResultCode.FORMAT_ERROR, f"{'.'.join(location[1:]) or field}: {first['type']}"
