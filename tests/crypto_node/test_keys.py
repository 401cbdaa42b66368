from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common import dukpt
from common.errors import ConfigError
from crypto_node.keys import (
    CryptoKeys,
    aes_kcv,
    has_odd_parity,
    init_keys,
    load_crypto_keys,
    tdes_kcv,
    with_odd_parity,
)

BRANCHES = ["0001", "0002"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_key_files(tmp_path: Path) -> None:
    init_keys(tmp_path, BRANCHES, 4)
    keys_dir = tmp_path / "keys"
    assert _mode(keys_dir) == 0o700 and _mode(keys_dir / "lmk") == 0o700
    names = sorted(p.name for p in keys_dir.iterdir())
    assert names == ["crypto.json", "lmk", "pinpads-0001.json", "pinpads-0002.json"]
    components = sorted(p.name for p in (keys_dir / "lmk").iterdir())
    assert components == ["component-1.json", "component-2.json"]
    for path in [*keys_dir.glob("*.json"), *(keys_dir / "lmk").iterdir()]:
        assert _mode(path) == 0o600


def test_pad_files_give_each_terminal_its_derived_initial_key(tmp_path: Path) -> None:
    init_keys(tmp_path, BRANCHES, 3)
    keys = load_crypto_keys(tmp_path)
    document = json.loads((tmp_path / "keys" / "pinpads-0002.json").read_text())
    assert document["branch_id"] == "0002"
    assert sorted(document["pads"]) == ["01", "02", "03"]
    for terminal_id, pad in document["pads"].items():
        assert pad["initial_key_id"] == f"{keys.bdk_id}0002{terminal_id:0>4}"
        initial_key_id = bytes.fromhex(pad["initial_key_id"])
        assert pad["initial_key"] == dukpt.initial_key(keys.bdk, initial_key_id).hex().upper()


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    init_keys(tmp_path, BRANCHES, 2)
    before = load_crypto_keys(tmp_path)
    with pytest.raises(ConfigError, match="already exist"):
        init_keys(tmp_path, BRANCHES, 2)
    assert load_crypto_keys(tmp_path) == before
    init_keys(tmp_path, ["0001"], 2, force=True)
    after = load_crypto_keys(tmp_path)
    assert after.bdk != before.bdk and after.pvk != before.pvk
    # pad files of the old keys would no longer work: they are gone
    assert not (tmp_path / "keys" / "pinpads-0002.json").exists()


def test_the_key_store_holds_key_blocks_and_kcvs_never_a_clear_key(tmp_path: Path) -> None:
    init_keys(tmp_path, BRANCHES, 1)
    keys = load_crypto_keys(tmp_path)
    text = (tmp_path / "keys" / "crypto.json").read_text()
    document = json.loads(text)
    assert document["lmk_kcv"] == keys.lmk.kcv
    for stored in keys.ring:
        assert stored.key.hex().upper() not in text.upper()
        entry = next(e for e in document["keys"] if e["name"] == stored.name)
        assert entry["block"].startswith("D") and entry["kcv"] == stored.kcv
    assert keys.lmk.key.hex().upper() not in text.upper()
    assert {e["block"][5:7] for e in document["keys"]} == {"B0", "K0", "P0", "V1", "V2"}
    assert has_odd_parity(keys.pvk) and keys.pvk[:8] != keys.pvk[8:]
    assert len(keys.bdk) == 16 and len(keys.bdk_id) == 8
    assert keys.bdk_kcv == aes_kcv(keys.bdk) and keys.pvk_kcv == tdes_kcv(keys.pvk)
    assert keys.home == tmp_path


def _tamper(tmp_path: Path, edit: str) -> None:
    init_keys(tmp_path, BRANCHES, 1, force=True)
    path = tmp_path / "keys" / "crypto.json"
    document = json.loads(path.read_text())
    if edit == "block":
        entry = document["keys"][0]
        entry["block"] = entry["block"][:-1] + ("0" if entry["block"][-1] != "0" else "1")
    elif edit == "kcv":
        document["keys"][1]["kcv"] = "000000"
    elif edit == "table":
        document["decimalization_table"] = "0123456789ABCDEF"
    elif edit == "missing":
        document["keys"] = [e for e in document["keys"] if not e["name"].startswith("pvk-ibm")]
    elif edit == "component":
        other = tmp_path / "keys" / "lmk" / "component-2.json"
        component = json.loads(other.read_text())
        component["component"] = "00" * 32
        component["kcv"] = aes_kcv(bytes(32))
        other.write_text(json.dumps(component))
    elif edit == "component-kcv":
        other = tmp_path / "keys" / "lmk" / "component-1.json"
        component = json.loads(other.read_text())
        component["kcv"] = "000000"
        other.write_text(json.dumps(component))
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ("block", "MAC"),
        ("kcv", "check value"),
        ("table", "decimalization"),
        ("missing", "PVK generation is missing"),
        ("component", "another LMK"),
        ("component-kcv", "KCV"),
    ],
)
def test_damaged_key_files_are_refused(tmp_path: Path, edit: str, reason: str) -> None:
    _tamper(tmp_path, edit)
    with pytest.raises(ConfigError, match=reason) as caught:
        load_crypto_keys(tmp_path)
    for component in (tmp_path / "keys" / "lmk").iterdir():
        assert json.loads(component.read_text())["component"] not in str(caught.value).upper()


def test_missing_or_unreadable_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keys init"):
        load_crypto_keys(tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "crypto.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_crypto_keys(tmp_path)


def test_repr_never_shows_key_bytes() -> None:
    keys = CryptoKeys.generate()
    text = repr(keys)
    assert keys.bdk_id in text
    for secret in (keys.bdk, keys.pvk, keys.lmk.key, *(k.key for k in keys.ring)):
        assert secret.hex() not in text.lower()
        assert repr(secret) not in text
    assert keys.decimalization_table not in text
    for stored in keys.ring:
        assert stored.key.hex() not in repr(stored).lower() and stored.block not in repr(stored)
    assert keys.lmk.key.hex() not in repr(keys.lmk).lower()


def test_tdes_kcv_of_the_classic_test_key() -> None:
    assert tdes_kcv(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")) == "08D7B4"


def test_aes_kcv_is_the_cmac_of_a_zero_block() -> None:
    # CMAC of one full block M (SP 800-38B): E(K, M xor K1), K1 = dbl(E(K, 0)).
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    encrypt = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    l_value = int.from_bytes(encrypt.update(bytes(16)), "big")
    k1 = ((l_value << 1) & ((1 << 128) - 1)) ^ (0x87 if l_value >> 127 else 0)
    expected = encrypt.update(k1.to_bytes(16, "big"))  # M is zeros, so M xor K1 = K1
    assert aes_kcv(key) == expected[:3].hex().upper()
    # the classic zero-block KCV would be a different value
    assert aes_kcv(key) != l_value.to_bytes(16, "big")[:3].hex().upper()


def test_odd_parity() -> None:
    assert with_odd_parity(bytes([0x00, 0x01, 0xFE, 0xFF])) == bytes([0x01, 0x01, 0xFE, 0xFE])
    key = with_odd_parity(bytes(range(256)))
    assert has_odd_parity(key)
    assert not has_odd_parity(b"\x00")


def test_initial_key_ids_name_bdk_branch_and_terminal() -> None:
    keys = CryptoKeys.generate()
    assert keys.initial_key_id("0042", "07").hex().upper() == keys.bdk_id + "0042" + "0007"
    with pytest.raises(ConfigError):
        keys.initial_key_id("42", "07")
