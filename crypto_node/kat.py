"""Known-answer tests: run a ``branchnet-kat/1`` file through the crypto node's own code.

The format is described in ``shared/vectors/README.md``: ``{"format": "branchnet-kat/1",
"cases": [...]}``, each case an ``id``, an ``algorithm``, its inputs and an ``expect`` object.
Every algorithm below calls the functions the HSM and the PIN pad use (``common.dukpt``,
``common.pinblock``, :mod:`crypto_node.ibm3624`, :mod:`crypto_node.visa_pvv`).

Output: one line per case, ``PASS <id>`` or ``FAIL <id>: ...``, then ``N passed, M failed``.
A case that is malformed, names an unknown algorithm or raises is a ``FAIL`` line; a file that
is unreadable or not of this format is one ``FAIL`` line. A case may expect a refusal:
``"expect": {"error": true}`` (or text the error message must contain). Digit inputs may be
JSON numbers; hex inputs may hold spaces. Beyond the shared algorithms, ``branchnet`` adds
``dukpt-aes128-derivation-key`` (``bdk``, ``ksn`` -> ``derivation_key``) and ``tr31-d-unwrap``
(``kbpk``, ``key_block`` -> ``key``, ``kcv``, ``usage``, ``algorithm``, ``mode_of_use``,
``version``, ``exportability``). The status is 1 if anything failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common import dukpt, pinblock
from common.dukpt import DukptError, HostDerivation, Ksn
from common.pinblock import PinBlockError
from crypto_node import ibm3624, tr31, visa_pvv
from crypto_node.errors import CryptoNodeError
from crypto_node.kcv import kcv
from crypto_node.pvk import Pvk

KAT_FORMAT = "branchnet-kat/1"


class _MalformedCase(Exception):
    """A case whose inputs cannot be read; the text says which and why."""


class _Inputs:
    """Typed access to one case's inputs."""

    def __init__(self, case: Mapping[str, Any]) -> None:
        self._case = case

    def _text(self, name: str) -> str:
        value = self._case.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # a digit field written as a JSON number
        if not isinstance(value, str):
            raise _MalformedCase(f"input {name!r} is missing or not a string")
        return value.strip()

    def has(self, name: str) -> bool:
        return name in self._case

    def hex(self, name: str, *sizes: int) -> bytes:
        """A byte string of one of ``sizes`` bytes, given as hex (spaces allowed)."""
        text = self._text(name).replace(" ", "")
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text) or len(text) // 2 not in sizes:
            sizes_text = " or ".join(str(2 * size) for size in sizes)
            raise _MalformedCase(f"input {name!r} must be {sizes_text} hex digits")
        return bytes.fromhex(text)

    def digits(self, name: str) -> str:
        text = self._text(name)
        if not re.fullmatch(r"[0-9]+", text):
            raise _MalformedCase(f"input {name!r} must be decimal digits")
        return text

    def text(self, name: str) -> str:
        return self._text(name)

    def ksn(self, name: str = "ksn") -> Ksn:
        raw = self.hex(name, dukpt.KSN_BYTES)
        return Ksn.parse(raw.hex())


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _initial_key(case: _Inputs) -> dict[str, str]:
    key = dukpt.initial_key(case.hex("bdk", 16), case.hex("initial_key_id", 8))
    return {"initial_key": _hex(key)}


def _derivation_key(case: _Inputs) -> dict[str, str]:
    return {"derivation_key": _hex(dukpt.derivation_key(case.hex("bdk", 16), case.ksn()))}


def _tr31_unwrap(case: _Inputs) -> dict[str, str]:
    header, key = tr31.unwrap(case.hex("kbpk", 16, 24, 32), case.text("key_block"))
    return {
        "key": _hex(key),
        "kcv": kcv(key, header.algorithm),
        "usage": header.usage,
        "algorithm": header.algorithm,
        "mode_of_use": header.mode_of_use,
        "version": header.version,
        "exportability": header.exportability,
    }


def _pin_key(case: _Inputs) -> dict[str, str]:
    return {"pin_key": _hex(HostDerivation(case.hex("bdk", 16)).pin_key(case.ksn()))}


def _iso4_encipher(case: _Inputs) -> dict[str, str]:
    block = pinblock.encipher_format4(
        case.hex("key", 16), case.digits("pin"), case.digits("pan"), case.hex("fill", 8)
    )
    return {"pin_block": _hex(block)}


def _iso4_decipher(case: _Inputs) -> dict[str, str]:
    pin = pinblock.decipher_format4(
        case.hex("key", 16), case.hex("pin_block", 16), case.digits("pan")
    )
    return {"pin": pin}


def _dukpt_iso4(case: _Inputs) -> dict[str, str]:
    key = HostDerivation(case.hex("bdk", 16)).pin_key(case.ksn())
    block = pinblock.encipher_format4(
        key, case.digits("pin"), case.digits("pan"), case.hex("fill", 8)
    )
    return {"pin_block": _hex(block)}


def _ibm3624_offset(case: _Inputs) -> dict[str, str]:
    validation_data = (
        case.text("validation_data")
        if case.has("validation_data") or not case.has("pan")
        else ibm3624.validation_data(case.digits("pan"))
    )
    offset = ibm3624.generate_offset(
        Pvk(case.hex("pvk", 16, 24)),
        case.digits("decimalization_table"),
        validation_data,
        case.digits("pin"),
    )
    return {"offset": offset}


def _visa_pvv(case: _Inputs) -> dict[str, str]:
    pvv = visa_pvv.generate_pvv(
        Pvk(case.hex("pvk", 16, 24)), case.digits("pvki"), case.digits("pin"), case.digits("pan")
    )
    return {"pvv": pvv}


def _iso0_encipher(case: _Inputs) -> dict[str, str]:
    block = pinblock.encipher_format0(
        case.hex("key", 16, 24), case.digits("pin"), case.digits("pan")
    )
    return {"pin_block": _hex(block)}


def _iso0_decipher(case: _Inputs) -> dict[str, str]:
    key, block = case.hex("key", 16, 24), case.hex("pin_block", 8)
    return {"pin": pinblock.decipher_format0(key, block, case.digits("pan"))}


def _iso3_decipher(case: _Inputs) -> dict[str, str]:
    key, block = case.hex("key", 16, 24), case.hex("pin_block", 8)
    return {"pin": pinblock.decipher_format3(key, block, case.digits("pan"))}


ALGORITHMS: dict[str, Callable[[_Inputs], dict[str, str]]] = {
    "dukpt-aes128-initial-key": _initial_key,
    "dukpt-aes128-pin-key": _pin_key,
    "iso9564-4-encipher": _iso4_encipher,
    "iso9564-4-decipher": _iso4_decipher,
    "dukpt-iso4-pin-block": _dukpt_iso4,
    "ibm3624-offset": _ibm3624_offset,
    "visa-pvv": _visa_pvv,
    "iso9564-0-encipher": _iso0_encipher,
    "iso9564-0-decipher": _iso0_decipher,
    "iso9564-3-decipher": _iso3_decipher,
    "dukpt-aes128-derivation-key": _derivation_key,
    "tr31-d-unwrap": _tr31_unwrap,
}


def check_case(case: object, index: int) -> tuple[bool, str]:
    """Run one case; ``(passed, line)``. Never raises."""
    case_id = f"case-{index + 1}"
    if isinstance(case, dict) and isinstance(case.get("id"), str) and case["id"].strip():
        case_id = _one_line(case["id"])  # one line per case, whatever the id holds
    if not isinstance(case, dict):
        return False, f"FAIL {case_id}: malformed case: not a JSON object"
    algorithm = case.get("algorithm")
    run = ALGORITHMS.get(algorithm) if isinstance(algorithm, str) else None
    if run is None:
        return False, f"FAIL {case_id}: unknown algorithm {algorithm!r}"
    expect = case.get("expect")
    if not isinstance(expect, dict) or not expect:
        return False, f"FAIL {case_id}: malformed case: 'expect' must be a non-empty object"
    try:
        got = run(_Inputs(case))
    except _MalformedCase as error:
        return False, f"FAIL {case_id}: malformed case: {error}"
    except (PinBlockError, DukptError, CryptoNodeError) as error:
        got = {"error": str(error)}
    except Exception as error:
        got = {"error": type(error).__name__}
    if "error" in expect:
        return _expected_error(case_id, expect["error"], got)
    unknown = sorted(set(expect) - set(got) - {"error"})
    if unknown and "error" not in got:
        return False, f"FAIL {case_id}: malformed case: {algorithm} has no output {unknown[0]!r}"
    if all(str(got.get(name, "")).upper() == str(value).upper() for name, value in expect.items()):
        return True, f"PASS {case_id}"
    expected = ", ".join(f"{name}={_one_line(value)}" for name, value in expect.items())
    shown = ", ".join(f"{name}={_one_line(value)}" for name, value in got.items())
    return False, f"FAIL {case_id}: expected {expected} got {shown}"


def _expected_error(case_id: str, wanted: object, got: Mapping[str, str]) -> tuple[bool, str]:
    """A case that expects a refusal: ``true`` (any), ``false`` (none) or text the error holds."""
    error = got.get("error")
    if wanted is False:
        ok = error is None
    elif wanted is True:
        ok = error is not None
    else:
        ok = error is not None and str(wanted).lower() in error.lower()
    if ok:
        return True, f"PASS {case_id}"
    shown = ", ".join(f"{name}={_one_line(value)}" for name, value in got.items())
    return False, f"FAIL {case_id}: expected error={_one_line(wanted)} got {shown}"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def run_kat(path: Path | str) -> tuple[list[str], int]:
    """Run every case of a KAT file; the report lines and the exit status (0 or 1)."""
    path = Path(path)
    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        return _file_failure(path, f"cannot read: {error.strerror}")
    except ValueError:
        return _file_failure(path, "not JSON")
    if not isinstance(document, dict) or document.get("format") != KAT_FORMAT:
        return _file_failure(path, f"not a {KAT_FORMAT} document")
    cases = document.get("cases")
    if not isinstance(cases, list) or not cases:
        return _file_failure(path, "'cases' must be a non-empty list")
    lines: list[str] = []
    passed = 0
    for index, case in enumerate(cases):
        ok, line = check_case(case, index)
        passed += ok
        lines.append(line)
    failed = len(cases) - passed
    lines.append(f"{passed} passed, {failed} failed")
    return lines, 1 if failed else 0


def _file_failure(path: Path, reason: str) -> tuple[list[str], int]:
    return [f"FAIL {path.name}: malformed KAT file: {reason}", "0 passed, 1 failed"], 1
