"""Reply records: the host's answer to one request."""

from __future__ import annotations

import datetime as dt
import functools
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

    @functools.cached_property
    def wire(self) -> bytes:
        """The reply's wire bytes, encoded once: the host needs them twice (its idempotency
        row and the reply frame). Kept beside the fields, out of equality and serialisation."""
        return self.__pydantic_serializer__.to_json(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, without the original's :attr:`wire` bytes (they would be stale)."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("wire", None)
        return copied


REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)


def encode_reply(reply: Reply) -> bytes:
    """Serialise a reply record to its wire bytes (once per reply: :attr:`Reply.wire`)."""
    return reply.wire


def decode_reply(raw: bytes) -> Reply:
    """Decode a reply record.

    Raises:
        pydantic.ValidationError: the bytes are not a reply.
    """
    return REPLY_ADAPTER.validate_json(raw)
