"""Identity documents shown at the counter: format checks and masking, shared by host and branch.

DOMAIN.md: accounts and cards are opened with a valid identity document (a resident ID card, a
military officer's card or a passport), and a large withdrawal by someone other than the
depositor needs both people's documents checked against the customer record.

- Resident ID card (GB 11643-1999): 6-digit division code, birth date ``YYYYMMDD`` (a real
  date, not in the future), 3-digit order code, ISO 7064 MOD 11-2 check character.
- Military officer's card (军官证): the issuing unit's character(s), ``字第``, 6-8 digits, ``号``
  (e.g. ``南字第2005123号``).
- Passport: an ICAO 9303 document number, 6-9 capital letters or digits with at least one
  digit and a leading letter (Chinese ordinary passports: ``E`` or ``G`` + 8 characters).

Numbers never reach logs or journal entries in full: :func:`mask_id_number` shows the first
three and last four characters of long numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

IdType = Literal["resident_id", "military_officer", "passport"]
ID_TYPES: tuple[IdType, ...] = ("resident_id", "military_officer", "passport")

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_RESIDENT = re.compile(r"^\d{17}[\dX]$")
_OFFICER = re.compile(r"^[\u4e00-\u9fff]{1,4}字第\d{6,8}号$")
_PASSPORT = re.compile(r"^[A-Z](?=[A-Z0-9]*\d)[A-Z0-9]{5,8}$")
#: The earliest birth year a resident ID number may carry.
_FIRST_BIRTH_YEAR = 1880


def check_character(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def birth_date(number: str) -> dt.date | None:
    """The birth date encoded in a resident ID number, or None when it is not a real date."""
    try:
        return dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None


def resident_id_problem(number: str, today: dt.date | None = None) -> str | None:
    """Why ``number`` is not a valid resident ID number, or None when it is."""
    if _RESIDENT.match(number) is None:
        return "a resident ID number is 17 digits and a check character"
    born = birth_date(number)
    if born is None:
        return "the resident ID number's birth date is not a real date"
    if born.year < _FIRST_BIRTH_YEAR or born > (today or dt.date.today()):
        return "the resident ID number's birth date is out of range"
    if check_character(number[:17]) != number[17]:
        return "the resident ID number's check character is wrong"
    return None


def is_valid_resident_id(number: str) -> bool:
    """True for 18 characters with a real birth date and the right check character."""
    return resident_id_problem(number) is None


def document_problem(id_type: str, number: str, today: dt.date | None = None) -> str | None:
    """Why a document of ``id_type`` numbered ``number`` fails its format check, or None."""
    if id_type == "resident_id":
        return resident_id_problem(number, today)
    if id_type == "military_officer":
        if _OFFICER.match(number) is None:
            return "a military officer's card number reads like 南字第2005123号"
        return None
    if id_type == "passport":
        if _PASSPORT.match(number) is None:
            return "a passport number is 6-9 capital letters or digits, a letter first"
        return None
    return f"unknown identity document type {id_type[:20]!r}"


def mask_id_number(number: str) -> str:
    """An identity document number with all but its first three and last four masked."""
    if len(number) >= 10:
        return number[:3] + "*" * (len(number) - 7) + number[-4:]
    if len(number) >= 4:
        return number[:1] + "*" * (len(number) - 3) + number[-2:]
    return "*" * len(number)


def masked_document(id_type: str, number: str) -> str:
    """``type:masked-number``, as journal entries show a document that was checked."""
    return f"{id_type}:{mask_id_number(number)}"
