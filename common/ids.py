"""Identifiers: branches, terminals, request ids, card/account numbers, ledger accounts.

Account numbers are 16-digit card numbers (PANs) with a Luhn check digit, taken from the
branch's card stock: ``62`` + branch id (4) + terminal id (2) + serial (7) + check digit.
The PIN pad needs the PAN to form an ISO 9564 format 4 block, so the number is known at the
counter before the host sees the request.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

from pydantic import Field

BRANCH_ID = r"^\d{4}$"
TERMINAL_ID = r"^\d{2}$"
STAFF_ID = r"^[A-Z0-9]{1,12}$"
REQUEST_ID = r"^\d{4}-\d{2}-\d{1,12}$"
ACCOUNT_NO = r"^\d{16}$"

BranchId = Annotated[str, Field(pattern=BRANCH_ID)]
TerminalId = Annotated[str, Field(pattern=TERMINAL_ID)]
StaffId = Annotated[str, Field(pattern=STAFF_ID)]
RequestId = Annotated[str, Field(pattern=REQUEST_ID)]
AccountNo = Annotated[str, Field(pattern=ACCOUNT_NO)]

CARD_PREFIX = "62"
_ACCOUNT = re.compile(ACCOUNT_NO)
#: A Luhn digit doubled, its digits summed.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def branch_ids(count: int) -> list[str]:
    """The ids of the first ``count`` branches: ``0001``, ``0002``, ..."""
    return [f"{n:04d}" for n in range(1, count + 1)]


def terminal_ids(count: int) -> list[str]:
    """The ids of a branch's first ``count`` terminals: ``01``, ``02``, ..."""
    return [f"{n:02d}" for n in range(1, count + 1)]


def request_id(branch_id: str, terminal_id: str, sequence: int) -> str:
    """A globally unique request id: branch, terminal and the terminal's sequence number."""
    return f"{branch_id}-{terminal_id}-{sequence:010d}"


def luhn_check_digit(digits: str) -> str:
    """The Luhn (ISO/IEC 7812) check digit to append to ``digits``."""
    backwards = digits[::-1]
    total = sum(_DOUBLED[ord(char) - 48] for char in backwards[0::2])
    total += sum(ord(char) - 48 for char in backwards[1::2])
    return str((10 - total % 10) % 10)


@functools.lru_cache(maxsize=1 << 16)
def is_valid_account_no(text: str) -> bool:
    """True for a 16-digit number whose last digit is its Luhn check digit.

    Cached: the host checks every account named in every request, and busy accounts recur.
    """
    return bool(_ACCOUNT.match(text)) and luhn_check_digit(text[:-1]) == text[-1]


def card_number(branch_id: str, terminal_id: str, serial: int) -> str:
    """The card (account) number of a terminal's ``serial``-th card from stock."""
    if not 0 <= serial < 10_000_000:
        raise ValueError("card serial out of range")
    body = f"{CARD_PREFIX}{branch_id}{terminal_id}{serial:07d}"
    return body + luhn_check_digit(body)


def cash_account(branch_id: str) -> str:
    """The ledger account holding a branch's counter cash."""
    return f"CASH-{branch_id}"


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits of a card number, the rest masked."""
    if len(pan) < 11:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
