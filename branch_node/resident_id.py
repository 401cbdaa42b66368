"""Resident identity card numbers (GB 11643-1999): 18 characters with an ISO 7064 check.

Layout: 6-digit administrative division code, birth date ``YYYYMMDD``, a 3-digit order code
(odd for men, even for women), and a check character computed with ISO 7064 MOD 11-2.
"""

from __future__ import annotations

import datetime as dt
import random
import re

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")

#: A few real division codes (Beijing Dongcheng, Shanghai Huangpu, Guangzhou Liwan, ...).
DIVISIONS = (
    "110101", "110105", "310101", "310115", "440103", "440305",
    "510104", "330106", "320102", "420102", "610113", "500103",
)  # fmt: skip


def check_character(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def birth_date(number: str) -> dt.date | None:
    """The birth date encoded in ``number``, or None when it is not a real date."""
    try:
        return dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None


def is_valid_resident_id(number: str) -> bool:
    """True for 18 characters with a real birth date and the right check character."""
    return (
        _SHAPE.match(number) is not None
        and birth_date(number) is not None
        and check_character(number[:17]) == number[17]
    )


def resident_id(rng: random.Random, *, born_after: dt.date, born_before: dt.date) -> str:
    """A random valid resident ID number for someone born in the given range."""
    span = (born_before - born_after).days
    born = born_after + dt.timedelta(days=rng.randrange(span))
    first17 = f"{rng.choice(DIVISIONS)}{born:%Y%m%d}{rng.randrange(1, 1000):03d}"
    return first17 + check_character(first17)
