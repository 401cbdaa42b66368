from __future__ import annotations

import json
from pathlib import Path

import pytest

from branch_node.pinpad import PinPad, load_pinpads
from common import dukpt
from common.dukpt import DukptError, HostDerivation, Ksn
from common.errors import ConfigError
from common.pin_commands import HsmError, VerifyPin
from common.pinblock import PinBlockError, decipher_format4
from common.requests import EncryptedPin
from crypto_node import CryptoKeys, Hsm, init_keys, load_crypto_keys
from crypto_node.ibm3624 import generate_offset, validation_data
from crypto_node.pvk import Pvk

PAN = "6200010100000018"
PIN = "123456"


@pytest.fixture
def keys() -> CryptoKeys:
    return CryptoKeys.generate()


def _pad(keys: CryptoKeys, counter: int = 0) -> PinPad:
    return PinPad(*keys.pinpad_key("0001", "01"), counter=counter)


def _open(keys: CryptoKeys, encrypted: EncryptedPin, pan: str = PAN) -> str:
    key = HostDerivation(keys.bdk).pin_key(Ksn.parse(encrypted.ksn))
    return decipher_format4(key, bytes.fromhex(encrypted.pin_block), pan)


def test_the_host_side_recovers_the_pin(keys: CryptoKeys) -> None:
    encrypted = _pad(keys).encrypt(PIN, PAN)
    assert encrypted.format == 4
    assert len(encrypted.pin_block) == 32 and len(encrypted.ksn) == 24
    assert _open(keys, encrypted) == PIN


def test_every_pin_gets_a_new_ksn(keys: CryptoKeys) -> None:
    pad = _pad(keys)
    ksns = [pad.encrypt(PIN, PAN).ksn for _ in range(500)]
    assert len(set(ksns)) == 500
    assert [Ksn.parse(k).counter for k in ksns] == list(range(1, 501))
    assert pad.counter == 500


def test_the_ksn_names_the_pad(keys: CryptoKeys) -> None:
    ksn = Ksn.parse(_pad(keys).encrypt(PIN, PAN).ksn)
    assert ksn.initial_key_id.hex().upper() == keys.bdk_id + "0001" + "0001"


def test_a_resumed_pad_continues_after_its_last_counter(keys: CryptoKeys) -> None:
    pad = _pad(keys, counter=41)
    assert pad.next_counter == 42
    encrypted = pad.encrypt(PIN, PAN)
    assert Ksn.parse(encrypted.ksn).counter == 42 == pad.counter
    assert _open(keys, encrypted) == PIN


def test_counters_with_17_one_bits_are_skipped(keys: CryptoKeys) -> None:
    pad = _pad(keys, counter=0x1FFFE)
    assert Ksn.parse(pad.encrypt(PIN, PAN).ksn).counter == 0x20000


def test_an_exhausted_pad_refuses_and_keeps_its_counter(keys: CryptoKeys) -> None:
    pad = _pad(keys, counter=0xFFFF_0000)
    with pytest.raises(DukptError):
        pad.encrypt(PIN, PAN)
    assert pad.counter == 0xFFFF_0000


def test_a_bad_pin_uses_no_counter(keys: CryptoKeys) -> None:
    pad = _pad(keys, counter=7)
    with pytest.raises(PinBlockError):
        pad.encrypt("12", PAN)
    assert pad.counter == 7
    assert Ksn.parse(pad.encrypt(PIN, PAN).ksn).counter == 8


def test_blocks_of_the_same_pin_differ(keys: CryptoKeys) -> None:
    pad = _pad(keys)
    assert pad.encrypt(PIN, PAN).pin_block != pad.encrypt(PIN, PAN).pin_block


def test_repr_shows_no_key(keys: CryptoKeys) -> None:
    initial_key_id, initial_key = keys.pinpad_key("0001", "01")
    text = repr(PinPad(initial_key_id, initial_key))
    assert initial_key.hex() not in text.lower()
    assert keys.bdk.hex() not in text.lower()


def test_load_pinpads_from_the_crypto_nodes_key_file(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001", "0002"], 3)
    pads = load_pinpads(tmp_path, "0002", counters={"02": 10})
    assert sorted(pads) == ["01", "02", "03"]
    assert pads["02"].counter == 10 and pads["01"].counter == 0
    keys = load_crypto_keys(tmp_path)
    pvk = Pvk(keys.pvk)
    offset = generate_offset(pvk, keys.decimalization_table, validation_data(PAN), PIN)
    hsm = Hsm(keys, persist=False)
    for terminal_id, pad in pads.items():
        encrypted = pad.encrypt(PIN, PAN)
        assert Ksn.parse(encrypted.ksn).initial_key_id == keys.initial_key_id("0002", terminal_id)
        command = VerifyPin(
            command_id=terminal_id, pan=PAN, pin=encrypted, verification_value=offset
        )
        assert hsm.execute(command).error is HsmError.OK


def test_the_pad_file_holds_initial_keys_derived_from_the_bdk_not_the_bdk(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    keys = load_crypto_keys(tmp_path)
    text = (tmp_path / "keys" / "pinpads-0001.json").read_text()
    assert keys.bdk.hex().upper() not in text
    entry = json.loads(text)["pads"]["01"]
    initial_key_id = bytes.fromhex(entry["initial_key_id"])
    assert bytes.fromhex(entry["initial_key"]) == dukpt.initial_key(keys.bdk, initial_key_id)


def test_load_pinpads_refuses_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no PIN pad keys"):
        load_pinpads(tmp_path, "0001")
    init_keys(tmp_path, ["0001"], 1)
    path = tmp_path / "keys" / "pinpads-0001.json"
    (tmp_path / "keys" / "pinpads-0009.json").write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match="another branch"):
        load_pinpads(tmp_path, "0009")
    path.write_text('{"branch_id": "0001", "pads": {"01": {"initial_key_id": "XYZ"}}}')
    with pytest.raises(ConfigError):
        load_pinpads(tmp_path, "0001")
    path.write_text("not json")
    with pytest.raises(ConfigError):
        load_pinpads(tmp_path, "0001")
