from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_node import run_kat
from crypto_node.kat import check_case
from tests.crypto_node.kat_vectors import PIN_KAT, all_cases, kat_cases

ALL_ALGORITHMS = (
    "dukpt-aes128-initial-key",
    "dukpt-aes128-pin-key",
    "iso9564-4-encipher",
    "iso9564-4-decipher",
    "dukpt-iso4-pin-block",
    "ibm3624-offset",
    "visa-pvv",
    "iso9564-0-encipher",
)


@pytest.mark.parametrize("case", kat_cases(*ALL_ALGORITHMS))
def test_every_shared_vector_passes(case: dict[str, Any]) -> None:
    assert check_case(case, 0) == (True, f"PASS {case['id']}")


def test_the_shared_file_covers_every_algorithm_of_the_table() -> None:
    assert {case["algorithm"] for case in all_cases()} >= set(ALL_ALGORITHMS)


def test_run_kat_on_the_shared_file() -> None:
    lines, status = run_kat(PIN_KAT)
    cases = all_cases()
    assert status == 0
    assert lines[:-1] == [f"PASS {case['id']}" for case in cases]
    assert lines[-1] == f"{len(cases)} passed, 0 failed"


def _write(tmp_path: Path, cases: list[Any]) -> Path:
    path = tmp_path / "kat.json"
    path.write_text(json.dumps({"format": "branchnet-kat/1", "cases": cases}))
    return path


def test_a_wrong_expectation_fails_with_expected_and_got(tmp_path: Path) -> None:
    cases = copy.deepcopy(all_cases())
    target = next(c for c in cases if c["algorithm"] == "dukpt-aes128-pin-key")
    right = target["expect"]["pin_key"]
    target["expect"]["pin_key"] = "00" * 16
    lines, status = run_kat(_write(tmp_path, cases))
    assert status == 1
    failure = next(line for line in lines if line.startswith(f"FAIL {target['id']}:"))
    assert f"expected pin_key={'00' * 16}" in failure and f"got pin_key={right}" in failure
    assert lines[-1] == f"{len(cases) - 1} passed, 1 failed"


def test_unknown_algorithm_and_malformed_cases_fail_without_stopping(tmp_path: Path) -> None:
    good = next(c for c in all_cases() if c["algorithm"] == "visa-pvv")
    no_pin = {k: v for k, v in good.items() if k != "pin"} | {"id": "no-pin"}
    bad_hex = good | {"id": "bad-hex", "pvk": "XYZ"}
    cases: list[Any] = [
        {"id": "mystery", "algorithm": "rot13", "expect": {"x": "y"}},
        no_pin,
        bad_hex,
        good | {"id": "no-expect", "expect": {}},
        good | {"id": "wrong-output", "expect": {"offset": "1234"}},
        "not an object",
        {"algorithm": "dukpt-aes128-pin-key", "bdk": "FEDCBA9876543210F1F1F1F1F1F1F1F1",
         "ksn": "123456789012345600000000", "expect": {"pin_key": "00" * 16}},
        good,
    ]  # fmt: skip
    lines, status = run_kat(_write(tmp_path, cases))
    assert status == 1
    assert lines[0] == "FAIL mystery: unknown algorithm 'rot13'"
    assert lines[1].startswith("FAIL no-pin: malformed case: input 'pin'")
    assert lines[2].startswith("FAIL bad-hex: malformed case: input 'pvk'")
    assert lines[3].startswith("FAIL no-expect: malformed case")
    assert lines[4].startswith("FAIL wrong-output: malformed case")
    assert lines[5] == "FAIL case-6: malformed case: not a JSON object"
    assert lines[6].startswith("FAIL case-7: expected pin_key=") and "counter" in lines[6]
    assert lines[7] == f"PASS {good['id']}"
    assert lines[8] == "1 passed, 7 failed"


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"format": "branchnet-kat/2", "cases": []}',
        '{"format": "branchnet-kat/1", "cases": []}',
        '{"format": "branchnet-kat/1"}',
        "[1, 2]",
    ],
)
def test_a_malformed_file_fails(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    lines, status = run_kat(path)
    assert status == 1
    assert lines[0].startswith("FAIL bad.json: malformed KAT file")
    assert lines[-1] == "0 passed, 1 failed"


def test_a_missing_file_fails(tmp_path: Path) -> None:
    lines, status = run_kat(tmp_path / "absent.json")
    assert status == 1 and "cannot read" in lines[0]


@settings(max_examples=30, deadline=None)
@given(
    st.text("0123456789", min_size=4, max_size=12),
    st.text("0123456789", min_size=12, max_size=19),
    st.integers(min_value=1, max_value=5000),  # all valid: at most 13 one-bits
)
def test_unseen_cases_round_trip(pin: str, pan: str, counter: int) -> None:
    """Cases not in the shared file: a pad's block for any PIN/PAN deciphers to that PIN."""
    bdk = "FEDCBA9876543210F1F1F1F1F1F1F1F1"
    ksn = f"1234567890123456{counter:08X}"
    fill = "0123456789ABCDEF"
    key_case = {"id": "k", "algorithm": "dukpt-aes128-pin-key", "bdk": bdk, "ksn": ksn,
                "expect": {"pin_key": "00"}}  # fmt: skip
    _, line = check_case(key_case, 0)
    pin_key = line.split("got pin_key=")[1]
    block_case = {"id": "b", "algorithm": "dukpt-iso4-pin-block", "bdk": bdk, "ksn": ksn,
                  "pin": pin, "pan": pan, "fill": fill, "expect": {"pin_block": "00"}}  # fmt: skip
    _, line = check_case(block_case, 0)
    pin_block = line.split("got pin_block=")[1]
    decipher = {"id": "d", "algorithm": "iso9564-4-decipher", "key": pin_key,
                "pin_block": pin_block, "pan": pan, "expect": {"pin": pin}}  # fmt: skip
    assert check_case(decipher, 0) == (True, "PASS d")


HSM_KAT = Path(__file__).parent / "vectors" / "hsm-kat.json"


def test_our_own_public_vectors_pass() -> None:
    """X9.24-3 derivation keys across counter rollovers, TR-31 version D blocks."""
    lines, status = run_kat(HSM_KAT)
    assert status == 0, lines
    assert lines[-1] == "20 passed, 0 failed"


def test_a_case_may_expect_a_refusal() -> None:
    base = {"id": "r", "algorithm": "dukpt-aes128-pin-key", "bdk": "00" * 16}
    refused = {**base, "ksn": "1234567890123456" + "0001FFFF"}
    accepted = {**base, "ksn": "1234567890123456" + "00000001"}
    assert check_case({**refused, "expect": {"error": True}}, 0)[0]
    assert check_case({**refused, "expect": {"error": "counter"}}, 0)[0]
    assert not check_case({**refused, "expect": {"error": "parity"}}, 0)[0]
    assert not check_case({**accepted, "expect": {"error": True}}, 0)[0]
    assert check_case({**accepted, "expect": {"error": False}}, 0)[0]


def test_digit_inputs_may_be_numbers_and_hex_may_hold_spaces() -> None:
    case = {
        "id": "n",
        "algorithm": "visa-pvv",
        "pvk": "0123 4567 89AB CDEF FEDC BA98 7654 3210",
        "pvki": 3,
        "pin": "4524",
        "pan": "1122334455667788",
        "expect": {"pvv": "4021"},
    }
    assert check_case(case, 0) == (True, "PASS n")
