from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from branch_node.pinpad import PinPad
from common.dukpt import Ksn
from common.pin_commands import (
    ChangePinCommand,
    Echo,
    GenerateOffset,
    HsmError,
    PinCommand,
    PinResponse,
    VerifyPin,
)
from common.requests import EncryptedPin
from crypto_node import CryptoKeys, Hsm, init_keys, load_crypto_keys
from crypto_node.hsm import replay_marks_path
from crypto_node.replay import WINDOW

Method = Literal["ibm3624", "visa_pvv"]
PAN = "6200010100000018"
PIN = "246810"


def _enroll(hsm: Hsm, pad: PinPad, method: Method = "ibm3624", pin: str = PIN) -> str:
    block = pad.encrypt(pin, PAN)
    response = hsm.execute(GenerateOffset(command_id="go", pan=PAN, pin=block, method=method))
    assert response.error is HsmError.OK and response.verification_value is not None
    return response.verification_value


def _verify(hsm: Hsm, pin: EncryptedPin, value: str, method: Method = "ibm3624") -> HsmError:
    command = VerifyPin(
        command_id="vp",
        pan=PAN,
        pin=pin,
        verification_value=value,
        method=method,
    )
    return hsm.execute(command).error


@pytest.mark.parametrize(("method", "length"), [("ibm3624", len(PIN)), ("visa_pvv", 4)])
def test_enrolled_pin_verifies_and_wrong_pin_does_not(
    hsm: Hsm, pad: PinPad, method: Method, length: int
) -> None:
    value = _enroll(hsm, pad, method)
    assert len(value) == length and value.isdigit()
    assert _verify(hsm, pad.encrypt(PIN, PAN), value, method) is HsmError.OK
    assert _verify(hsm, pad.encrypt("135799", PAN), value, method) is HsmError.VERIFICATION_FAILED


def test_generate_reports_the_key_version(hsm: Hsm, pad: PinPad) -> None:
    response = hsm.execute(GenerateOffset(command_id="g1", pan=PAN, pin=pad.encrypt(PIN, PAN)))
    assert response.key_version == 1 and response.command_id == "g1"


def test_change_pin_verifies_the_old_pin_and_returns_the_new_value(hsm: Hsm, pad: PinPad) -> None:
    old_value = _enroll(hsm, pad)
    change = ChangePinCommand(
        command_id="cp",
        pan=PAN,
        pin=pad.encrypt(PIN, PAN),
        new_pin=pad.encrypt("9753", PAN),
        verification_value=old_value,
    )
    response = hsm.execute(change)
    assert response.error is HsmError.OK and response.verification_value is not None
    new_value = response.verification_value
    assert len(new_value) == 4
    assert _verify(hsm, pad.encrypt("9753", PAN), new_value) is HsmError.OK
    assert _verify(hsm, pad.encrypt(PIN, PAN), new_value) is HsmError.VERIFICATION_FAILED


def test_change_pin_with_a_wrong_old_pin_gives_no_value(hsm: Hsm, pad: PinPad) -> None:
    old_value = _enroll(hsm, pad)
    change = ChangePinCommand(
        command_id="cp",
        pan=PAN,
        pin=pad.encrypt("111111", PAN),
        new_pin=pad.encrypt("9753", PAN),
        verification_value=old_value,
    )
    response = hsm.execute(change)
    assert response.error is HsmError.VERIFICATION_FAILED
    assert response.verification_value is None


def test_a_replayed_pin_block_is_refused(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    block = pad.encrypt(PIN, PAN)
    assert _verify(hsm, block, value) is HsmError.OK
    assert _verify(hsm, block, value) is HsmError.REPLAY
    # replayed inside a change of PIN, and twice in one batch
    change = ChangePinCommand(
        command_id="cp", pan=PAN, pin=block, new_pin=pad.encrypt("1111", PAN),
        verification_value=value,
    )  # fmt: skip
    assert hsm.execute(change).error is HsmError.REPLAY
    fresh = pad.encrypt(PIN, PAN)
    twice = [
        VerifyPin(command_id=str(n), pan=PAN, pin=fresh, verification_value=value) for n in (1, 2)
    ]
    assert [r.error for r in hsm.execute_batch(twice)] == [HsmError.OK, HsmError.REPLAY]


def test_the_same_block_as_old_and_new_pin_is_refused(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    block = pad.encrypt(PIN, PAN)
    change = ChangePinCommand(
        command_id="cp", pan=PAN, pin=block, new_pin=block, verification_value=value
    )
    assert hsm.execute(change).error is HsmError.REPLAY


def test_blocks_slightly_out_of_order_are_accepted_once(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    first, second, third = (pad.encrypt(PIN, PAN) for _ in range(3))
    assert _verify(hsm, third, value) is HsmError.OK
    assert _verify(hsm, first, value) is HsmError.OK
    assert _verify(hsm, second, value) is HsmError.OK
    assert _verify(hsm, first, value) is HsmError.REPLAY
    old = pad.encrypt(PIN, PAN)
    for _ in range(WINDOW + 1):
        latest = pad.encrypt(PIN, PAN)
    assert _verify(hsm, latest, value) is HsmError.OK
    assert _verify(hsm, old, value) is HsmError.REPLAY  # too far behind to tell


def test_replay_refusal_survives_a_restart(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    keys = load_crypto_keys(tmp_path)
    pad = PinPad(*keys.pinpad_key("0001", "01"))
    hsm = Hsm(keys)
    value = _enroll(hsm, pad)
    block = pad.encrypt(PIN, PAN)
    assert _verify(hsm, block, value) is HsmError.OK
    assert replay_marks_path(tmp_path).exists()
    restarted = Hsm(load_crypto_keys(tmp_path))
    assert _verify(restarted, block, value) is HsmError.REPLAY
    assert _verify(restarted, pad.encrypt(PIN, PAN), value) is HsmError.OK


def test_a_block_that_does_not_decipher_uses_no_counter(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    block = pad.encrypt(PIN, PAN)
    wrong_card = VerifyPin(
        command_id="x", pan="6200010100000026", pin=block, verification_value=value
    )
    assert hsm.execute(wrong_card).error is HsmError.FORMAT_ERROR
    assert _verify(hsm, block, value) is HsmError.OK


def _with(block: EncryptedPin, **changes: object) -> EncryptedPin:
    return EncryptedPin.model_validate({**block.model_dump(), **changes})


def test_malformed_blocks_and_ksns(keys: CryptoKeys, hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    block = pad.encrypt(PIN, PAN)
    pad_id = block.ksn[:16]
    cases = {
        "counter zero": (_with(block, ksn=pad_id + "00000000"), HsmError.FORMAT_ERROR),
        "17 one-bits": (_with(block, ksn=pad_id + "0001FFFF"), HsmError.FORMAT_ERROR),
        "another BDK": (_with(block, ksn="FFFFFFFF" + block.ksn[8:]), HsmError.KEY_ERROR),
        "format 0": (_with(block, format=0), HsmError.FORMAT_ERROR),
        "TDES KSN": (_with(block, ksn=block.ksn[:20]), HsmError.FORMAT_ERROR),
        "8-byte block": (_with(block, pin_block=block.pin_block[:16]), HsmError.FORMAT_ERROR),
    }
    if keys.bdk_id == "FFFFFFFF":  # pragma: no cover - one in 4 billion
        pytest.skip("random BDK id collides with the test's")
    for name, (bad, expected) in cases.items():
        assert _verify(hsm, bad, value) is expected, name
    assert _verify(hsm, block, value) is HsmError.OK


def test_unknown_key_version(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    command = VerifyPin(
        command_id="v", pan=PAN, pin=pad.encrypt(PIN, PAN), verification_value=value, key_version=2
    )
    assert hsm.execute(command).error is HsmError.KEY_ERROR


def test_echo_and_unknown_commands(hsm: Hsm) -> None:
    assert hsm.execute(Echo(command_id="e")) == PinResponse(command_id="e", error=HsmError.OK)
    assert hsm.execute("XX").error is HsmError.UNKNOWN_COMMAND  # type: ignore[arg-type]


class _BrokenPvk:
    def encrypt(self, block: bytes) -> bytes:
        raise RuntimeError("boom 246810")


def test_an_unexpected_failure_is_an_internal_error_not_a_crash(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    hsm._pvk = _BrokenPvk()  # type: ignore[assignment]
    commands: list[PinCommand] = [
        VerifyPin(command_id="v", pan=PAN, pin=pad.encrypt(PIN, PAN), verification_value=value),
        Echo(command_id="e"),
    ]
    assert [r.error for r in hsm.execute_batch(commands)] == [
        HsmError.INTERNAL_ERROR,
        HsmError.OK,
    ]


def test_marks_that_cannot_be_saved_fail_the_batch_closed(keys: CryptoKeys, tmp_path: Path) -> None:
    hsm = Hsm(keys, replay_file=tmp_path / "crypto" / "ksn-marks.json")
    (tmp_path / "crypto").write_text("")  # the marks' directory is now a file: saving fails
    pad = PinPad(*keys.pinpad_key("0001", "01"))
    commands: list[PinCommand] = [
        GenerateOffset(command_id="g", pan=PAN, pin=pad.encrypt(PIN, PAN)),
        Echo(command_id="e"),
    ]
    responses = hsm.execute_batch(commands)
    assert [r.error for r in responses] == [HsmError.INTERNAL_ERROR, HsmError.OK]
    assert responses[0].verification_value is None


def test_responses_keep_command_order(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    commands = [
        VerifyPin(command_id=f"c{n}", pan=PAN, pin=pad.encrypt(pin, PAN), verification_value=value)
        for n, pin in enumerate([PIN, "000000", PIN, "999999"])
    ]
    responses = hsm.execute_batch(commands)
    assert [r.command_id for r in responses] == ["c0", "c1", "c2", "c3"]
    assert [r.error for r in responses] == [
        HsmError.OK,
        HsmError.VERIFICATION_FAILED,
        HsmError.OK,
        HsmError.VERIFICATION_FAILED,
    ]


def test_no_secret_in_reprs(keys: CryptoKeys, hsm: Hsm, pad: PinPad) -> None:
    block = pad.encrypt(PIN, PAN)
    response = hsm.execute(GenerateOffset(command_id="g", pan=PAN, pin=block))
    command = VerifyPin(
        command_id="v", pan=PAN, pin=block, verification_value=response.verification_value or ""
    )
    texts = [repr(hsm), repr(response), repr(command), repr(block), repr(keys)]
    secrets = [PIN, PAN, block.pin_block, keys.bdk.hex().upper(), keys.pvk.hex().upper()]
    secrets.append(str(response.verification_value))
    for text in texts:
        for secret in secrets:
            assert secret not in text.upper()
    assert Ksn.parse(block.ksn).counter == pad.counter


def _bound_verify(hsm: Hsm, pin: EncryptedPin, value: str, binding: str) -> HsmError:
    command = VerifyPin(
        command_id="vp", pan=PAN, pin=pin, verification_value=value, binding=binding
    )
    return hsm.execute(command).error


def test_a_retransmission_of_the_same_transaction_gets_the_same_verdict(
    hsm: Hsm, pad: PinPad
) -> None:
    value = _enroll(hsm, pad)
    right, wrong = pad.encrypt(PIN, PAN), pad.encrypt("135799", PAN)
    assert _bound_verify(hsm, right, value, "0001-r1") is HsmError.OK
    assert _bound_verify(hsm, right, value, "0001-r1") is HsmError.OK
    assert _bound_verify(hsm, wrong, value, "0001-r2") is HsmError.VERIFICATION_FAILED
    assert _bound_verify(hsm, wrong, value, "0001-r2") is HsmError.VERIFICATION_FAILED
    # the same KSN under another transaction, or with no binding, is a replay
    assert _bound_verify(hsm, right, value, "0001-r3") is HsmError.REPLAY
    assert _verify(hsm, right, value) is HsmError.REPLAY
    # the same KSN and binding with another block (a forgery under a used counter)
    forged = EncryptedPin(pin_block=wrong.pin_block, ksn=right.ksn)
    assert _bound_verify(hsm, forged, value, "0001-r1") is HsmError.REPLAY


def test_a_bound_change_of_pin_is_retransmittable_but_not_reusable(hsm: Hsm, pad: PinPad) -> None:
    value = _enroll(hsm, pad)
    old, new = pad.encrypt(PIN, PAN), pad.encrypt("1357", PAN)
    change = ChangePinCommand(
        command_id="cp", pan=PAN, pin=old, new_pin=new, verification_value=value, binding="b-1"
    )
    first, again = hsm.execute(change), hsm.execute(change)
    assert first.error is again.error is HsmError.OK
    assert first.verification_value == again.verification_value
    swapped = change.model_copy(update={"pin": new, "new_pin": old})
    assert hsm.execute(swapped).error is HsmError.REPLAY  # a block in another role
    same = ChangePinCommand(
        command_id="cp", pan=PAN, pin=old, new_pin=old, verification_value=value, binding="b-1"
    )
    assert hsm.execute(same).error is HsmError.REPLAY


def test_retransmissions_are_recognised_after_a_restart(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    keys = load_crypto_keys(tmp_path)
    pad = PinPad(*keys.pinpad_key("0001", "01"))
    value = _enroll(Hsm(keys), pad)
    block = pad.encrypt(PIN, PAN)
    assert _bound_verify(Hsm(keys), block, value, "0001-r9") is HsmError.OK
    marks = replay_marks_path(tmp_path).read_text()
    assert block.pin_block not in marks.upper()
    restarted = Hsm(load_crypto_keys(tmp_path))
    assert _bound_verify(restarted, block, value, "0001-r9") is HsmError.OK
    assert _bound_verify(restarted, block, value, "0001-r10") is HsmError.REPLAY
