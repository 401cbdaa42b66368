"""Masking personal data for logs and events: card numbers, ID numbers and names.

Card numbers keep their first 6 and last 4 digits (:func:`common.ids.mask_pan`); identity
numbers their first 3 and last 2 characters; names (``customer_name``, ``holder_name``...)
their first character. :func:`mask_text`
masks what it recognises in free text (an 18-character resident ID, a 13-19 digit card
number); :func:`mask_fields` masks a document (an event, a log entry) by its keys, at any depth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from common.ids import mask_pan

_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])(\d{3})\d{13}([0-9][0-9Xx])(?![0-9A-Za-z])")
_PAN = re.compile(r"(?<![0-9])(\d{6})\d{3,9}(\d{4})(?![0-9])")
_CARD_KEYS = re.compile(r"(^|_)(account|to_account|pan|card|card_number)$")
_ID_KEYS = re.compile(r"(^|_)(id_number|document_number|holder_id|withdrawer_id)$")
_NAME_KEYS = re.compile(r"(^|_)(customer|holder|withdrawer|person)_name$")


def mask_id_number(number: str) -> str:
    """An identity document number with only its first 3 and last 2 characters shown."""
    if len(number) <= 5:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


def mask_name(name: str) -> str:
    """A person's name with only its first character shown (张三 → 张*)."""
    return name[:1] + "*" * (len(name) - 1) if name else name


def mask_text(text: str) -> str:
    """Free text with resident ID numbers and card numbers in it masked."""
    text = _RESIDENT_ID.sub(lambda m: m.group(1) + "*" * 13 + m.group(2), text)
    return _PAN.sub(lambda m: m.group(1) + "*" * (len(m.group(0)) - 10) + m.group(2), text)


def mask_value(key: str, value: Any) -> Any:
    """``value`` masked as what ``key`` names it (card, ID number, name), else its text masked."""
    if isinstance(value, Mapping):
        return mask_fields(value)
    if isinstance(value, list | tuple):
        return [mask_value(key, item) for item in value]
    if not isinstance(value, str):
        return value
    if _NAME_KEYS.search(key):
        return mask_name(value)
    if _ID_KEYS.search(key):
        return mask_id_number(value)
    if _CARD_KEYS.search(key) and value.isdigit():
        return mask_pan(value)
    return mask_text(value)


def mask_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with every card number, ID number and name masked.

    An ``id_document``-shaped mapping (``{"id_type": ..., "number": ...}``) has its number
    masked as an ID number.
    """
    masked: dict[str, Any] = {}
    for key, value in document.items():
        if key == "number" and "id_type" in document and isinstance(value, str):
            masked[key] = mask_id_number(value)
        else:
            masked[key] = mask_value(str(key), value)
    return masked
