"""The "Never" rule after a whole simulation: no clear PIN, PIN block or clear key outside the
crypto node's memory — not in the logs, the store, the journal, the replay marks, the key
store, reprs or exception messages.

The PIN pads are observed (a spy around the real :meth:`PinPad.encrypt`) so the test knows
every PIN typed and every block sent. Files deliberately holding key material are the
training setup's LMK component files and the pads' key-injection files (``keys/lmk/``,
``keys/pinpads-*.json``): they are the only files allowed to.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from branch_node.pinpad import PinPad, load_pinpads
from branchnet.simulate import SimulationConfig, simulate
from common.authorisation import StaffKey, staff_public_keys
from common.requests import EncryptedPin
from crypto_node import Hsm, init_keys, load_crypto_keys
from crypto_node.errors import CryptoNodeError
from crypto_node.lmk import Component, load_lmk
from crypto_node.tr31 import unwrap


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield repr(value)


def _store_values(path: Path) -> tuple[list[str], list[bytes]]:
    """Every TEXT and BLOB value of every table of a SQLite file."""
    texts: list[str] = []
    blobs: list[bytes] = []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        texts.append(value)
                    elif isinstance(value, bytes):
                        blobs.append(value)
    finally:
        db.close()
    return texts, blobs


@pytest.mark.slow
async def test_a_simulation_leaves_no_pin_block_or_key_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typed: list[tuple[str, EncryptedPin]] = []
    encrypt = PinPad.encrypt

    def observed(pad: PinPad, pin: str, pan: str) -> EncryptedPin:
        block = encrypt(pad, pin, pan)
        typed.append((pin, block))
        return block

    monkeypatch.setattr(PinPad, "encrypt", observed)
    config = SimulationConfig(
        branches=2, terminals=2, duration_s=60, max_requests=400, data_dir=tmp_path
    )
    with structlog.testing.capture_logs() as logs:
        report = await simulate(config)
    assert report["reconciliation"]["ok"] and len(typed) > 50

    keys = load_crypto_keys(tmp_path)
    pads = [pad for b in ("0001", "0002") for pad in load_pinpads(tmp_path, b).values()]
    clear_keys = [load_lmk(tmp_path).key, *(stored.key for stored in keys.ring)]
    clear_keys += [bytes.fromhex(p) for p in _pad_keys(tmp_path)]
    staff = staff_public_keys(tmp_path)  # supervisors' and auditors' signing keys
    assert {"S000101", "A000101", "S000201", "A000201"} <= set(staff)
    clear_keys += [StaffKey.load(tmp_path, s).key.private_bytes_raw() for s in staff]
    pins = {pin for pin, _ in typed}
    long_secrets = [block.pin_block for _, block in typed]
    long_secrets += [k.hex().upper() for k in clear_keys]
    raw_secrets = [k for k in clear_keys] + [bytes.fromhex(b.pin_block) for _, b in typed]
    assert pads  # the pads exist; their keys are among the secrets

    # logs: no field is a PIN; no text anywhere holds a block or a key
    logged = list(_strings(logs))
    assert not pins & set(logged)
    text = "\n".join(logged).upper()
    assert not [s for s in long_secrets if s in text]

    # every file of the data directory except the key-injection files
    allowed = {tmp_path / "keys" / "lmk"}
    for path in tmp_path.rglob("*"):
        if not path.is_file() or any(a in path.parents for a in allowed):
            continue
        if path.name.startswith("pinpads-"):
            continue
        content = path.read_bytes()
        upper = content.upper()
        leaks = [s for s in long_secrets if s.encode() in upper]
        leaks += [s.hex() for s in raw_secrets if s in content]
        assert not leaks, f"{path.relative_to(tmp_path)} holds a secret"
        if path.suffix == ".sqlite":
            texts, blobs = _store_values(path)
            for blob in blobs:  # journal bodies and the like: JSON whose strings are checked
                try:
                    texts.extend(_strings(json.loads(blob)))
                except ValueError:
                    continue
            for text_value in list(texts):
                if text_value.startswith(("{", "[")):
                    try:
                        texts.extend(_strings(json.loads(text_value)))
                    except ValueError:
                        continue
            assert not pins & set(texts), f"{path.name} stores a PIN"

    # reprs of everything that holds keys
    hsm = Hsm(keys, persist=False)
    shown = " ".join(repr(x) for x in (hsm, keys, keys.ring, keys.lmk, *keys.ring, *pads)).upper()
    assert not [s for s in long_secrets if s in shown]


def _pad_keys(data_dir: Path) -> list[str]:
    found = []
    for path in (data_dir / "keys").glob("pinpads-*.json"):
        for pad in json.loads(path.read_text())["pads"].values():
            found.append(pad["initial_key"])
    return found


def test_exception_messages_hold_no_key_material(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    keys = load_crypto_keys(tmp_path)
    secrets = [k.key.hex().upper() for k in keys.ring] + [keys.lmk.key.hex().upper()]
    messages: list[str] = []
    block = keys.ring.get("zpk/legacy").block
    for attempt in (
        lambda: unwrap(bytes(32), block),
        lambda: unwrap(keys.lmk.key, block[:-2] + "00"),
        lambda: Component.entered(keys.lmk.key.hex(), "000000"),
        lambda: Component.entered("XY" + keys.lmk.key.hex()[2:], "000000"),
    ):
        with pytest.raises(CryptoNodeError) as caught:
            attempt()
        messages.append(str(caught.value) + repr(caught.value))
    text = " ".join(messages).upper()
    assert not [s for s in secrets if s in text]
    assert not [s for s in secrets if s[:16] in text]
