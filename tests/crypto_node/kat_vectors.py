"""The shared known-answer vectors (``shared/vectors`` sits next to the repository root).

Loading fails loudly when the file is missing: a KAT that cannot find its vectors must fail,
never skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).parents[3] / "shared" / "vectors"
PIN_KAT = VECTORS / "pin-kat.json"


def all_cases() -> list[dict[str, Any]]:
    """Every case of ``pin-kat.json`` (raises when the file is missing or empty)."""
    document = json.loads(PIN_KAT.read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = document["cases"]
    if not cases:
        raise RuntimeError(f"{PIN_KAT} holds no cases")
    return cases


def kat_cases(*algorithms: str) -> list[Any]:
    """The cases of the given algorithms as pytest params named by case id."""
    cases = [case for case in all_cases() if case["algorithm"] in algorithms]
    if not cases:
        raise RuntimeError(f"{PIN_KAT} holds no case for {', '.join(algorithms)}")
    return [pytest.param(case, id=case["id"]) for case in cases]
