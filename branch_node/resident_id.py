"""Resident identity card numbers (GB 11643-1999): a generator for the workload.

Layout: 6-digit administrative division code, birth date ``YYYYMMDD``, a 3-digit order code
(odd for men, even for women), and a check character computed with ISO 7064 MOD 11-2. The
checks live in :mod:`common.id_documents`, shared with the host.
"""

from __future__ import annotations

import datetime as dt
import random

from common.id_documents import birth_date, check_character, is_valid_resident_id

__all__ = ["DIVISIONS", "birth_date", "check_character", "is_valid_resident_id", "resident_id"]

#: A few real division codes (Beijing Dongcheng, Shanghai Huangpu, Guangzhou Liwan, ...).
DIVISIONS = (
    "110101", "110105", "310101", "310115", "440103", "440305",
    "510104", "330106", "320102", "420102", "610113", "500103",
)  # fmt: skip


def resident_id(rng: random.Random, *, born_after: dt.date, born_before: dt.date) -> str:
    """A random valid resident ID number for someone born in the given range."""
    span = (born_before - born_after).days
    born = born_after + dt.timedelta(days=rng.randrange(span))
    first17 = f"{rng.choice(DIVISIONS)}{born:%Y%m%d}{rng.randrange(1, 1000):03d}"
    return first17 + check_character(first17)
