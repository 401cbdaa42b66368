"""Evidence bundles: built from a real host's store, checked offline, tampering caught."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.identity import known_branch_keys, load_identity, load_public
from host_node.bundle import build_bundle, encode_bundle, verify_bundle
from host_node.checkpoint import SIGNER
from host_node.errors import StoreError
from host_node.journal import decode_entry
from host_node.store import ledger_path
from tests.host_node.recording import cli, private_copy, record_network


@pytest.fixture(scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return await record_network(tmp_path_factory.mktemp("recorded-evidence"), requests=120)


def first_request(data_dir: Path, kind: str, result: str = "00") -> str:
    connection = sqlite3.connect(ledger_path(data_dir))
    try:
        for body, hash_ in connection.execute("SELECT body, hash FROM journal ORDER BY seq"):
            entry = decode_entry(body, hash_)
            if entry.kind == kind and entry.result.value == result:
                return entry.request_id
    finally:
        connection.close()
    raise AssertionError(f"no {kind} with {result} in the recording")


def bundle_of(data_dir: Path, request_id: str) -> bytes:
    key = load_identity(data_dir, SIGNER)
    return encode_bundle(build_bundle(ledger_path(data_dir), request_id, key))


def failed(raw: bytes, data_dir: Path) -> set[str]:
    checks = verify_bundle(raw, load_public(data_dir, SIGNER), known_branch_keys(data_dir))
    return {c.name for c in checks if not c.ok}


def test_an_approved_withdrawal_holds_up_with_its_pin_outcome_and_no_secrets(
    recorded: Path,
) -> None:
    request_id = first_request(recorded, "withdraw")
    raw = bundle_of(recorded, request_id)
    assert failed(raw, recorded) == set()
    bundle = orjson.loads(raw)
    assert bundle["pin_verification"] == "00 PIN verified"
    kept = orjson.loads(bundle["record"]["record"])
    assert kept["request_id"] == request_id and kept["pin"] == "[removed]"
    assert b"pin_block" not in raw and b"ksn" not in raw
    entry = decode_entry(bundle["entry"]["body"].encode(), bundle["entry"]["hash"])
    assert entry.request_id == request_id and entry.result.value == "00"


def test_an_opening_shows_the_holders_document_masked(recorded: Path) -> None:
    raw = bundle_of(recorded, first_request(recorded, "open_account"))
    (document,) = orjson.loads(raw)["identity_documents"]
    assert document["role"] == "holder" and document["id_type"] == "resident_id"
    assert document["number"].startswith("*" * 10) and len(document["number"]) == 18
    assert failed(raw, recorded) == set()


def test_a_declined_pin_is_evidence_too(recorded: Path) -> None:
    raw = bundle_of(recorded, first_request(recorded, "withdraw", "55"))
    assert orjson.loads(raw)["pin_verification"] == "01 wrong PIN"
    assert failed(raw, recorded) == set()


def test_every_alteration_or_a_foreign_key_is_caught(recorded: Path) -> None:
    raw = bundle_of(recorded, first_request(recorded, "transfer"))
    bundle = orjson.loads(raw)

    def altered(change: str, value: object, *path: str) -> set[str]:
        copy = orjson.loads(raw)
        target = copy
        for step in path:
            target = target[step]
        target[change] = value
        return failed(orjson.dumps(copy), recorded)

    body = bundle["entry"]["body"].replace('"result":"00"', '"result":"51"')
    assert {"host_signature", "entry"} <= altered("body", body, "entry")
    assert "host_signature" in altered("pin_verification", "01 wrong PIN")
    record = bundle["record"]["record"].replace('"amount":', '"amount":1')
    assert "host_signature" in altered("record", record, "record")
    assert "entry_in_checkpoint" in altered(
        "checkpoint_path",
        [],
    )
    assert "checkpoint_signature" in altered("seq", bundle["checkpoint"]["seq"] + 1, "checkpoint")
    leaf = "00" * 32
    assert "record_in_frame" in altered("leaf_hash", leaf, "record")
    stranger = Ed25519PrivateKey.generate().public_key()
    assert {c.name for c in verify_bundle(raw, stranger) if not c.ok} >= {
        "host_signature",
        "checkpoint_signature",
    }
    assert [c.name for c in verify_bundle(b"not json", stranger)] == ["format"]


def test_an_entry_without_a_signed_checkpoint_has_no_bundle_yet(
    recorded: Path, tmp_path: Path
) -> None:
    data_dir = private_copy(recorded, tmp_path / "data")
    connection = sqlite3.connect(ledger_path(data_dir), isolation_level=None)
    connection.execute("DELETE FROM checkpoints")
    connection.close()
    with pytest.raises(StoreError, match="not yet covered"):
        bundle_of(data_dir, first_request(data_dir, "deposit"))
    with pytest.raises(StoreError, match="no journal entry"):
        bundle_of(data_dir, "0009-09-0000000009")


def test_the_cli_writes_and_checks_a_bundle(recorded: Path, tmp_path: Path) -> None:
    request_id = first_request(recorded, "deposit")
    out = tmp_path / "evidence.json"
    made = cli("journal", "evidence", request_id, "--out", str(out), "--data-dir", str(recorded))
    assert made.returncode == 0, made.stderr
    identities = recorded / "keys" / "identity"
    public, branch = tmp_path / "host.pub", tmp_path / "branch.pub"
    public.write_bytes((identities / "host.pub").read_bytes())
    branch.write_bytes((identities / f"branch-{request_id[:4]}.pub").read_bytes())
    keys = ("--public-key", str(public), "--branch-key", f"{request_id[:4]}={branch}")
    checked = cli("journal", "verify-evidence", str(out), *keys)
    assert checked.returncode == 0 and "the evidence holds" in checked.stdout
    unsigned = cli("journal", "verify-evidence", str(out), "--public-key", str(public))
    assert unsigned.returncode != 0 and "no public key given" in unsigned.stdout
    out.write_bytes(out.read_bytes().replace(b'"result\\":\\"00', b'"result\\":\\"51'))
    checked = cli("journal", "verify-evidence", str(out), *keys)
    assert checked.returncode != 0 and "does NOT hold" in checked.stdout
