"""HSM key commands and key usage: every key is refused for what its header does not allow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import crypto_node.hsm
from branch_node.pinpad import PinPad
from common.pin_commands import (
    ChangePinCommand,
    ExportKey,
    GenerateKey,
    GenerateOffset,
    HsmError,
    ImportKey,
    KeyCheck,
    PinResponse,
    TranslatePin,
    VerifyPin,
)
from common.pinblock import (
    decipher_format0,
    decipher_format3,
    encipher_format0,
    encipher_format1,
    encipher_format3,
)
from crypto_node import CryptoKeys, Hsm, init_keys, load_crypto_keys
from crypto_node.kcv import tdes_kcv
from crypto_node.keyring import KeyRing, open_block, seal
from crypto_node.keys import rotate_keys
from crypto_node.tr31 import KeyBlockHeader, unwrap, wrap

PAN = "6200010100000018"
PIN = "246810"


def _block(keys: CryptoKeys, usage: str, mode: str, key: bytes, **header: Any) -> str:
    """A key block under the HSM's LMK (as the host would keep one)."""
    algorithm = header.pop("algorithm", "T")
    return wrap(keys.lmk.key, KeyBlockHeader(usage, algorithm, mode, **header), key)


def _pvk_block(keys: CryptoKeys, usage: str = "V1", mode: str = "C", **header: Any) -> str:
    return _block(keys, usage, mode, keys.pvk, version="01", **header)


def _generate(hsm: Hsm, pad: PinPad, **fields: Any) -> PinResponse:
    return hsm.execute(
        GenerateOffset(command_id="go", pan=PAN, pin=pad.encrypt(PIN, PAN), **fields)
    )


def _verify(hsm: Hsm, pad: PinPad, value: str, **fields: Any) -> HsmError:
    command = VerifyPin(
        command_id="vp", pan=PAN, pin=pad.encrypt(PIN, PAN), verification_value=value, **fields
    )
    return hsm.execute(command).error


# ---- key usage refusals -----------------------------------------------------------------------


def test_a_pvk_key_block_given_in_the_command_is_used(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad
) -> None:
    stored = _generate(hsm, pad)
    given = _generate(hsm, pad, pvk=_pvk_block(keys))
    assert given.error is HsmError.OK and given.verification_value == stored.verification_value
    assert stored.verification_value is not None
    assert _verify(hsm, pad, stored.verification_value, pvk=_pvk_block(keys)) is HsmError.OK


@pytest.mark.parametrize(
    ("why", "usage", "mode"),
    [
        ("a PIN encryption key as a PVK", "P0", "B"),
        ("a Visa PVK for an IBM offset", "V2", "C"),
        ("a key encryption key as a PVK", "K0", "B"),
        ("a verify-only PVK to generate", "V1", "V"),
    ],
)
def test_generating_with_a_key_its_header_forbids_is_refused(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad, why: str, usage: str, mode: str
) -> None:
    response = _generate(hsm, pad, pvk=_pvk_block(keys, usage, mode))
    assert response.error is HsmError.USAGE_ERROR, why
    assert response.verification_value is None


def test_verifying_with_a_generate_only_pvk_is_refused(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad
) -> None:
    value = _generate(hsm, pad).verification_value
    assert value is not None
    assert _verify(hsm, pad, value, pvk=_pvk_block(keys, "V1", "G")) is HsmError.USAGE_ERROR
    assert _verify(hsm, pad, value, pvk=_pvk_block(keys, "V1", "V")) is HsmError.OK


def test_a_pvk_of_another_version_than_the_command_names_is_refused(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad
) -> None:
    value = _generate(hsm, pad).verification_value
    assert value is not None
    other = _block(keys, "V1", "C", keys.pvk, version="07")
    assert _verify(hsm, pad, value, pvk=other) is HsmError.USAGE_ERROR


def test_a_pvk_block_used_once_is_still_refused_for_another_version(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad
) -> None:
    value = _generate(hsm, pad).verification_value
    assert value is not None
    other = _block(keys, "V1", "C", keys.pvk, version="07")
    assert _verify(hsm, pad, value, pvk=other, key_version=7) is HsmError.OK
    assert _verify(hsm, pad, value, pvk=other, key_version=1) is HsmError.USAGE_ERROR


def test_a_tdes_key_without_odd_parity_is_a_parity_error(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad
) -> None:
    even = bytes([keys.pvk[0] ^ 1]) + keys.pvk[1:]
    response = _generate(hsm, pad, pvk=_block(keys, "V1", "C", even, version="01"))
    assert response.error is HsmError.PARITY_ERROR


def test_a_key_block_under_another_lmk_or_altered_is_a_key_error(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad
) -> None:
    foreign = wrap(bytes(32), KeyBlockHeader("V1", "T", "C", "01"), keys.pvk)
    assert _generate(hsm, pad, pvk=foreign).error is HsmError.KEY_ERROR
    block = _pvk_block(keys)
    assert _generate(hsm, pad, pvk=block[:-1] + ("0" if block[-1] != "0" else "1")).error is (
        HsmError.KEY_ERROR
    )
    assert _generate(hsm, pad, pvk="pvk-ibm/99").error is HsmError.KEY_ERROR


def test_a_bdk_is_refused_for_anything_but_derivation(keys: CryptoKeys, hsm: Hsm) -> None:
    bdk = f"bdk/{keys.bdk_id}"
    export = hsm.execute(ExportKey(command_id="ek", key=bdk, kek="kek/main"))
    assert export.error is HsmError.USAGE_ERROR  # not exportable
    block = encipher_format0(keys.ring.get("zpk/legacy").key, PIN, PAN).hex().upper()
    translate = TranslatePin(
        command_id="tp", pan=PAN, pin_block=block, format=0, source_key=bdk,
        destination_key="zpk/legacy", destination_format=3,
    )  # fmt: skip
    assert hsm.execute(translate).error is HsmError.USAGE_ERROR


def test_a_bdk_whose_mode_is_not_derive_does_not_serve_pads() -> None:
    keys = CryptoKeys.generate()
    name = f"bdk/{keys.bdk_id}"
    stored = keys.ring.get(name)
    header = KeyBlockHeader("B0", "A", "E", "01", "N")
    ring = KeyRing({**keys.ring.keys, name: seal(keys.lmk.key, name, header, stored.key)})
    hsm = Hsm(replace(keys, ring=ring), persist=False)
    pad = PinPad(*keys.pinpad_key("0001", "01"))
    assert _generate(hsm, pad).error is HsmError.USAGE_ERROR


# ---- PIN block translation ---------------------------------------------------------------------


def _zpk(keys: CryptoKeys, mode: str = "B") -> tuple[str, bytes]:
    key = keys.ring.get("zpk/legacy").key
    return _block(keys, "P0", mode, key), key


def _translate(hsm: Hsm, **fields: Any) -> PinResponse:
    fields.setdefault("pan", PAN)
    fields.setdefault("destination_key", "zpk/legacy")
    return hsm.execute(TranslatePin(command_id="tp", **fields))


@pytest.mark.parametrize("target", [0, 3])
def test_dukpt_format_4_translates_to_a_legacy_zone_pin_key(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad, target: int
) -> None:
    pin = pad.encrypt(PIN, PAN)
    response = _translate(
        hsm, pin_block=pin.pin_block, ksn=pin.ksn, format=4, destination_format=target
    )
    assert response.error is HsmError.OK and response.pin_block is not None
    decipher = decipher_format0 if target == 0 else decipher_format3
    assert decipher(keys.ring.get("zpk/legacy").key, bytes.fromhex(response.pin_block), PAN) == PIN
    again = _translate(hsm, pin_block=pin.pin_block, ksn=pin.ksn, format=4, destination_format=0)
    assert again.error is HsmError.REPLAY


@pytest.mark.parametrize(("source", "target"), [(0, 3), (3, 0), (0, 0), (3, 3), (1, 0), (1, 3)])
def test_allowed_translations_between_zone_pin_keys(
    keys: CryptoKeys, hsm: Hsm, source: int, target: int
) -> None:
    block, key = _zpk(keys)
    other = keys.ring.get("zpk/legacy").key
    clear = {
        0: lambda: encipher_format0(key, PIN, PAN),
        1: lambda: encipher_format1(key, PIN),
        3: lambda: encipher_format3(key, PIN, PAN),
    }[source]()
    response = _translate(
        hsm, pin_block=clear.hex().upper(), format=source, source_key=block,
        destination_format=target,
    )  # fmt: skip
    assert response.error is HsmError.OK and response.pin_block is not None
    decipher = decipher_format0 if target == 0 else decipher_format3
    assert decipher(other, bytes.fromhex(response.pin_block), PAN) == PIN


@pytest.mark.parametrize(
    ("source", "target"), [(0, 1), (3, 1), (1, 1), (0, 4), (3, 4), (4, 1), (4, 4)]
)
def test_forbidden_translations_are_refused(
    keys: CryptoKeys, hsm: Hsm, pad: PinPad, source: int, target: int
) -> None:
    pin = pad.encrypt(PIN, PAN)
    fields: dict[str, Any] = (
        {"pin_block": pin.pin_block, "ksn": pin.ksn}
        if source == 4
        else {
            "pin_block": encipher_format0(_zpk(keys)[1], PIN, PAN).hex().upper(),
            "source_key": "zpk/legacy",
        }
    )
    response = _translate(hsm, format=source, destination_format=target, **fields)
    assert response.error is HsmError.PIN_FORMAT_REFUSED and response.pin_block is None


def test_translation_keys_must_allow_their_direction(keys: CryptoKeys, hsm: Hsm) -> None:
    encrypt_only, key = _zpk(keys, "E")
    decrypt_only, _ = _zpk(keys, "D")
    block = encipher_format0(key, PIN, PAN).hex().upper()
    refused = _translate(
        hsm, pin_block=block, format=0, source_key=encrypt_only, destination_format=3
    )
    assert refused.error is HsmError.USAGE_ERROR
    refused = _translate(
        hsm, pin_block=block, format=0, source_key=decrypt_only, destination_format=3,
        destination_key=decrypt_only,
    )  # fmt: skip
    assert refused.error is HsmError.USAGE_ERROR
    allowed = _translate(
        hsm, pin_block=block, format=0, source_key=decrypt_only, destination_format=3,
        destination_key=encrypt_only,
    )  # fmt: skip
    assert allowed.error is HsmError.OK
    pvk_as_zpk = _translate(
        hsm, pin_block=block, format=0, source_key="pvk-ibm/1", destination_format=3
    )
    assert pvk_as_zpk.error is HsmError.USAGE_ERROR


def test_a_block_under_the_wrong_zone_key_is_a_format_error(keys: CryptoKeys, hsm: Hsm) -> None:
    wrong = encipher_format0(keys.pvk, PIN, PAN).hex().upper()
    response = _translate(
        hsm, pin_block=wrong, format=0, source_key="zpk/legacy", destination_format=3
    )
    assert response.error is HsmError.FORMAT_ERROR


# ---- generate, import, export, KCV --------------------------------------------------------------


def test_generate_key_gives_a_block_under_the_lmk_with_its_kcv(keys: CryptoKeys, hsm: Hsm) -> None:
    response = hsm.execute(
        GenerateKey(command_id="gk", usage="P0", algorithm="T", mode_of_use="B", exportability="E")
    )
    assert response.error is HsmError.OK and response.key_block is not None
    header, key = unwrap(keys.lmk.key, response.key_block)
    assert header == KeyBlockHeader("P0", "T", "B", "00", "E")
    assert response.kcv == tdes_kcv(key)
    check = hsm.execute(KeyCheck(command_id="kc", key=response.key_block))
    assert check.kcv == response.kcv
    bad = GenerateKey(command_id="gk", usage="P0", algorithm="T", mode_of_use="B", length=32)
    assert hsm.execute(bad).error is HsmError.FORMAT_ERROR


def test_the_key_blocks_used_most_recently_stay_opened(
    hsm: Hsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = []
    for n in range(3):
        generate = GenerateKey(command_id=f"g{n}", usage="P0", algorithm="T", mode_of_use="B")
        block = hsm.execute(generate).key_block
        assert block is not None
        blocks.append(block)
    opened: list[str] = []
    real_open = open_block

    def counting_open(key: bytes, block: str, source: Any) -> Any:
        opened.append(block)
        return real_open(key, block, source)

    monkeypatch.setattr(crypto_node.hsm, "open_block", counting_open)
    monkeypatch.setattr(crypto_node.hsm, "_BLOCK_CACHE", 2)
    first, second, third = blocks
    for block in (first, second, first, third, first):  # the third drops the second, not the first
        assert hsm.execute(KeyCheck(command_id="kc", key=block)).error is HsmError.OK
    assert opened == [first, second, third]


def test_export_then_import_under_a_kek_keeps_the_key_and_its_header(
    keys: CryptoKeys, hsm: Hsm
) -> None:
    exported = hsm.execute(ExportKey(command_id="ek", key="zpk/legacy", kek="kek/main"))
    assert exported.error is HsmError.OK and exported.key_block is not None
    assert exported.kcv == keys.ring.get("zpk/legacy").kcv
    kek = keys.ring.get("kek/main").key
    header, key = unwrap(kek, exported.key_block)
    assert key == keys.ring.get("zpk/legacy").key and header.usage == "P0"
    imported = hsm.execute(ImportKey(command_id="ik", kek="kek/main", key_block=exported.key_block))
    assert imported.error is HsmError.OK and imported.key_block is not None
    assert unwrap(keys.lmk.key, imported.key_block) == (header, key)
    assert imported.kcv == exported.kcv


def test_key_transport_refusals(keys: CryptoKeys, hsm: Hsm) -> None:
    assert hsm.execute(ExportKey(command_id="e", key="pvk-ibm/1", kek="kek/main")).error is (
        HsmError.USAGE_ERROR  # not exportable
    )
    assert hsm.execute(ExportKey(command_id="e", key="zpk/legacy", kek="pvk-ibm/1")).error is (
        HsmError.USAGE_ERROR  # not a KEK
    )
    unwrap_only = _block(keys, "K0", "D", keys.ring.get("kek/main").key, algorithm="A")
    assert hsm.execute(ExportKey(command_id="e", key="zpk/legacy", kek=unwrap_only)).error is (
        HsmError.USAGE_ERROR
    )
    kek = keys.ring.get("kek/main").key
    even = bytes(16)
    parity = wrap(kek, KeyBlockHeader("P0", "T", "B"), even)
    assert hsm.execute(ImportKey(command_id="i", kek="kek/main", key_block=parity)).error is (
        HsmError.PARITY_ERROR
    )
    foreign = wrap(bytes(32), KeyBlockHeader("P0", "A", "B"), bytes(16))
    assert hsm.execute(ImportKey(command_id="i", kek="kek/main", key_block=foreign)).error is (
        HsmError.KEY_ERROR
    )
    wrap_only = _block(keys, "K0", "E", kek, algorithm="A")
    importing = ImportKey(command_id="i", kek=wrap_only, key_block=parity)
    assert hsm.execute(importing).error is HsmError.USAGE_ERROR


# ---- rotation -------------------------------------------------------------------------------


def test_rotation_keeps_old_generations_verifying(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    first = load_crypto_keys(tmp_path)
    old_pad = PinPad(*first.pinpad_key("0001", "01"))
    hsm = Hsm(first, persist=False)
    old = {m: _generate(hsm, old_pad, method=m) for m in ("ibm3624", "visa_pvv")}
    assert all(r.key_version == 1 for r in old.values())
    rotate_keys(tmp_path, "pvk")
    keys = rotate_keys(tmp_path, "bdk", ["0001"], 1)
    assert keys.key_version == 2 and keys.bdk_id != first.bdk_id
    hsm = Hsm(load_crypto_keys(tmp_path), persist=False)
    new_pad = PinPad(*keys.pinpad_key("0001", "01"))
    for method, response in old.items():
        value = response.verification_value
        assert value is not None
        # an old pad (old BDK) and a new pad both verify against the old generation's value
        for pad in (old_pad, new_pad):
            assert _verify(hsm, pad, value, method=method, key_version=1) is HsmError.OK
        fresh = _generate(hsm, new_pad, method=method)
        assert fresh.key_version == 2 and fresh.verification_value is not None
        assert _verify(hsm, old_pad, fresh.verification_value, method=method, key_version=2) is (
            HsmError.OK
        )
    # a change of PIN on an old-generation account produces a current-generation value
    change = ChangePinCommand(
        command_id="cp",
        pan=PAN,
        pin=new_pad.encrypt(PIN, PAN),
        new_pin=new_pad.encrypt("1357", PAN),
        verification_value=old["ibm3624"].verification_value or "",
        key_version=1,
    )
    changed = hsm.execute(change)
    assert changed.error is HsmError.OK and changed.key_version == 2
