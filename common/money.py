"""Money as an integer number of fen (CNY minor units, 1 yuan = 100 fen). Never a float."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StrictInt

FEN_PER_YUAN = 100
#: The largest amount a single request may carry: 100 million yuan.
MAX_AMOUNT = 100_000_000 * FEN_PER_YUAN

#: A positive amount of one request, in fen; validation rejects floats, bools and strings.
Amount = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT)]
#: A non-negative amount (an opening deposit may be zero).
NonNegativeAmount = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]

_YUAN = re.compile(r"^(-)?(\d+)(?:\.(\d{1,2}))?$")


def yuan(whole: int, fen: int = 0) -> int:
    """Return ``whole`` yuan and ``fen`` fen as fen."""
    return whole * FEN_PER_YUAN + fen


def parse_yuan(text: str) -> int:
    """Parse a decimal yuan amount such as ``"1234.5"`` into fen exactly.

    Raises:
        ValueError: the text is not a decimal number with at most two fraction digits.
    """
    match = _YUAN.match(text.strip().replace(",", ""))
    if match is None:
        raise ValueError(f"not a yuan amount: {text!r}")
    sign, whole, frac = match.groups()
    fen = int(whole) * FEN_PER_YUAN + int((frac or "0").ljust(2, "0"))
    return -fen if sign else fen


def format_fen(fen: int) -> str:
    """Format fen as yuan with two decimals and thousands separators: ``-1,234.05``."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), FEN_PER_YUAN)
    return f"{sign}{whole:,}.{part:02d}"
