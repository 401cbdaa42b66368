"""The one table of two-character result codes (DESIGN.md "Requests")."""

from __future__ import annotations

from enum import StrEnum


class ResultCode(StrEnum):
    """A reply's result; values are the two characters on the wire."""

    APPROVED = "00"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    NO_SUCH_ACCOUNT = "14"
    ACCOUNT_EXISTS = "26"
    FORMAT_ERROR = "30"
    INSUFFICIENT_FUNDS = "51"
    WRONG_PIN = "55"
    NOT_PERMITTED = "57"
    ROLE_NOT_PERMITTED = "58"
    OVER_LIMIT = "61"
    RESTRICTED = "62"
    SUPERVISOR_REQUIRED = "63"
    LEGAL_AUTHORITY_REQUIRED = "64"
    #: ISO 8583 "response received too late": the request's deadline had passed when the
    #: host took it, so it was declined unapplied (journaled, no postings).
    TOO_LATE = "68"
    PIN_TRIES_EXCEEDED = "75"
    APPOINTMENT_REQUIRED = "76"
    IDENTITY_CHECK_FAILED = "77"
    UNAVAILABLE = "91"
    DUPLICATE_MISMATCH = "94"
    SYSTEM_ERROR = "96"

    @property
    def approved(self) -> bool:
        return self is ResultCode.APPROVED

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS: dict[ResultCode, str] = {
    ResultCode.APPROVED: "approved",
    ResultCode.INVALID_TRANSACTION: "invalid transaction",
    ResultCode.INVALID_AMOUNT: "invalid amount",
    ResultCode.NO_SUCH_ACCOUNT: "no such account",
    ResultCode.ACCOUNT_EXISTS: "account number already in use",
    ResultCode.FORMAT_ERROR: "format error",
    ResultCode.INSUFFICIENT_FUNDS: "insufficient funds",
    ResultCode.WRONG_PIN: "wrong PIN",
    ResultCode.NOT_PERMITTED: "not permitted on this account",
    ResultCode.ROLE_NOT_PERMITTED: "not permitted to this staff member's role",
    ResultCode.OVER_LIMIT: "over limit",
    ResultCode.RESTRICTED: "restricted (frozen or closed)",
    ResultCode.SUPERVISOR_REQUIRED: "supervisor authorisation required",
    ResultCode.LEGAL_AUTHORITY_REQUIRED: "legal authority required",
    ResultCode.TOO_LATE: "deadline passed before the host took the request",
    ResultCode.PIN_TRIES_EXCEEDED: "PIN tries exceeded",
    ResultCode.APPOINTMENT_REQUIRED: "appointment required",
    ResultCode.IDENTITY_CHECK_FAILED: "identity check failed",
    ResultCode.UNAVAILABLE: "host or crypto unavailable",
    ResultCode.DUPLICATE_MISMATCH: "duplicate request id with different content",
    ResultCode.SYSTEM_ERROR: "system error",
}
