"""Reply records: the host's answer to one request."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, TypeAdapter

from common.results import ResultCode


class Reply(BaseModel):
    """The host's answer to one request record.

    ``balance`` and ``available`` are in fen and present where the kind makes them relevant;
    ``amount`` is the money the request moved (for ``close_account``, the cash paid out);
    ``account`` is the opened account's number for ``open_account``; ``rule`` names the rule
    that decided a decline (``large_cash_identity``, ``appointment``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    result: ResultCode
    reason: str
    balance: int | None = None
    amount: int | None = None
    available: int | None = None
    account: str | None = None
    received_at: dt.datetime
    processed_at: dt.datetime
    journal_seq: int | None = None
    rule: str | None = None

    @property
    def approved(self) -> bool:
        return self.result is ResultCode.APPROVED

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, without the original's encoded bytes (:func:`encode_reply`: stale)."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop(_WIRE, None)
        return copied


REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)


#: Where a reply keeps its wire bytes, beside its fields (out of equality and serialisation).
_WIRE = "_wire"


def encode_reply(reply: Reply) -> bytes:
    """Serialise a reply record to its wire bytes, once per reply: the host needs them twice
    (its idempotency row, then the reply frame)."""
    fields = reply.__dict__
    wire: bytes | None = fields.get(_WIRE)
    if wire is None:
        wire = fields[_WIRE] = reply.__pydantic_serializer__.to_json(reply)
    return wire


def decode_reply(raw: bytes) -> Reply:
    """Decode a reply record.

    Raises:
        pydantic.ValidationError: the bytes are not a reply.
    """
    return REPLY_ADAPTER.validate_json(raw)
