"""Journal verification: a real host's store verifies; every kind of tampering is caught."""

from __future__ import annotations

import gzip
import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from common.identity import load_public
from host_node.archive import audit_archive, segments
from host_node.audit import Audit, audit_store
from host_node.checkpoint import SIGNER, decode_checkpoint, encode_checkpoint
from host_node.journal import ChainHead, JournalEntry, Origin, decode_entry, seal
from host_node.store import ledger_path
from tests.host_node.recording import cli, private_copy, record_network

#: Entries each tampering test aims at (well inside the journal).
TARGET = 40


@pytest.fixture(scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory left by a short simulation: a real store with signed checkpoints."""
    return await record_network(tmp_path_factory.mktemp("recorded"))


@pytest.fixture
def data_dir(recorded: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded data directory, free to tamper with."""
    return private_copy(recorded, tmp_path / "data")


def audit(data_dir: Path) -> Audit:
    return audit_store(ledger_path(data_dir), load_public(data_dir, SIGNER))


def tamper(data_dir: Path, change: Callable[[sqlite3.Connection], None]) -> None:
    connection = sqlite3.connect(ledger_path(data_dir), isolation_level=None)
    try:
        change(connection)
    finally:
        connection.close()


def body_of(connection: sqlite3.Connection, seq: int) -> bytes:
    body: bytes = connection.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()[0]
    return body


def test_an_untouched_journal_verifies_and_is_signed_to_its_head(data_dir: Path) -> None:
    result = audit(data_dir)
    assert result.ok, result.findings
    assert result.entries >= 200 and result.signed_to == result.entries
    assert result.checkpoints >= 1 and result.first_broken is None


def test_one_flipped_byte_names_its_entry(data_dir: Path) -> None:
    def flip(connection: sqlite3.Connection) -> None:
        body = bytearray(body_of(connection, TARGET))
        body[len(body) // 2] ^= 0x01
        connection.execute("UPDATE journal SET body = ? WHERE seq = ?", (bytes(body), TARGET))

    tamper(data_dir, flip)
    result = audit(data_dir)
    assert not result.ok and result.first_broken == TARGET


def test_a_deleted_entry_is_named(data_dir: Path) -> None:
    tamper(data_dir, lambda c: c.execute("DELETE FROM journal WHERE seq = ?", (TARGET,)))
    result = audit(data_dir)
    assert not result.ok and result.first_broken == TARGET
    assert any("missing" in f.problem for f in result.findings)


def test_two_swapped_entries_are_caught(data_dir: Path) -> None:
    def swap(connection: sqlite3.Connection) -> None:
        rows = connection.execute(
            "SELECT seq, body, hash FROM journal WHERE seq IN (?, ?)", (TARGET, TARGET + 1)
        ).fetchall()
        (a, body_a, hash_a), (b, body_b, hash_b) = rows
        connection.execute(
            "UPDATE journal SET body = ?, hash = ? WHERE seq = ?", (body_b, hash_b, a)
        )
        connection.execute(
            "UPDATE journal SET body = ?, hash = ? WHERE seq = ?", (body_a, hash_a, b)
        )

    tamper(data_dir, swap)
    result = audit(data_dir)
    assert not result.ok and result.first_broken == TARGET


def test_an_edited_balance_is_caught(data_dir: Path) -> None:
    def enrich(connection: sqlite3.Connection) -> None:
        number = connection.execute(
            "SELECT number FROM accounts WHERE kind = 'customer' AND balance > 0 LIMIT 1"
        ).fetchone()[0]
        connection.execute(
            "UPDATE accounts SET balance = balance + 100 WHERE number = ?", (number,)
        )

    tamper(data_dir, enrich)
    result = audit(data_dir)
    assert not result.ok
    assert any(f.problem.startswith("balances_match_postings") for f in result.findings)


def test_a_rewritten_history_with_a_consistent_chain_fails_the_checkpoint(data_dir: Path) -> None:
    """Re-seal every entry from the target on: the chain holds, the host's signature does not."""

    def rewrite(connection: sqlite3.Connection) -> None:
        rows = connection.execute(
            "SELECT body, hash FROM journal WHERE seq >= ? ORDER BY seq", (TARGET,)
        ).fetchall()
        previous = connection.execute(
            "SELECT hash FROM journal WHERE seq = ?", (TARGET - 1,)
        ).fetchone()[0]
        for body, hash_ in rows:
            entry = decode_entry(body, hash_)
            forged = seal(
                ChainHead(entry.seq - 1, previous),
                origin_of(entry),
                kind=entry.kind,
                subject=entry.subject,
                processed_at=entry.processed_at,
                postings=entry.postings,
                result=entry.result,
                reason="rewritten" if entry.seq == TARGET else entry.reason,
            )
            connection.execute(
                "UPDATE journal SET body = ?, hash = ? WHERE seq = ?",
                (forged.body, forged.hash, entry.seq),
            )
            previous = forged.hash

    tamper(data_dir, rewrite)
    result = audit(data_dir)
    assert not result.ok
    assert any("checkpoint" in f.problem for f in result.findings)
    assert not any("does not link" in f.problem for f in result.findings)


def test_a_forged_checkpoint_signature_is_caught(data_dir: Path) -> None:
    def forge(connection: sqlite3.Connection) -> None:
        seq, raw = connection.execute("SELECT seq, body FROM checkpoints LIMIT 1").fetchone()
        forged = replace(decode_checkpoint(raw), signature="00" * 64)
        connection.execute(
            "UPDATE checkpoints SET body = ? WHERE seq = ?", (encode_checkpoint(forged), seq)
        )

    tamper(data_dir, forge)
    result = audit(data_dir)
    assert not result.ok and any("signature" in f.problem for f in result.findings)


def test_the_cli_exits_non_zero_on_tampering_and_names_the_entry(data_dir: Path) -> None:
    assert cli("journal", "verify", "--data-dir", str(data_dir)).returncode == 0
    tamper(data_dir, lambda c: c.execute("DELETE FROM journal WHERE seq = ?", (TARGET,)))
    tampered = cli("journal", "verify", "--data-dir", str(data_dir))
    assert tampered.returncode != 0
    assert f"first broken entry: {TARGET}" in tampered.stdout


def test_show_filters_by_account_branch_result_and_time(data_dir: Path) -> None:
    connection = sqlite3.connect(ledger_path(data_dir))
    entries = [
        decode_entry(body, hash_)
        for body, hash_ in connection.execute("SELECT body, hash FROM journal ORDER BY seq")
    ]
    connection.close()
    withdrawal = next(e for e in entries if e.kind == "withdraw" and e.result.value == "00")
    account = withdrawal.postings[0].account

    outputs: list[str] = []

    def shown(*flags: str) -> list[str]:
        result = cli("journal", "show", "--data-dir", str(data_dir), *flags)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
        return [line.split()[3] for line in result.stdout.splitlines()]

    by_account = shown("--account", account)
    assert withdrawal.request_id in by_account
    assert by_account == [
        e.request_id
        for e in entries
        if any(p.account == account for p in e.postings) or e.subject == withdrawal.subject
    ]
    declined = shown("--result", "55", "--branch", "0002")
    assert declined == [
        e.request_id for e in entries if e.result.value == "55" and e.branch_id == "0002"
    ]
    moment = entries[TARGET].processed_at.isoformat()
    assert shown("--until", moment) == [
        e.request_id for e in entries if e.processed_at < entries[TARGET].processed_at
    ]
    assert not any(account in output for output in outputs)  # card numbers shown masked


def origin_of(entry: JournalEntry) -> Origin:
    return Origin(
        request_id=entry.request_id,
        branch_id=entry.branch_id,
        teller_id=entry.teller_id,
        terminal_id=entry.terminal_id,
        origin_time=entry.origin_time,
        received_at=entry.received_at,
        unpacked_at=entry.unpacked_at,
        record_hash=entry.record_hash,
    )


def test_an_archive_verifies_and_catches_a_corrupt_or_forged_segment(
    data_dir: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    assert (
        cli("journal", "archive", "--data-dir", str(data_dir), "--to", str(archive)).returncode == 0
    )
    again = cli("journal", "archive", "--data-dir", str(data_dir), "--to", str(archive))
    assert again.returncode == 0 and "nothing new" in again.stdout
    (segment,) = segments(archive)
    key = load_public(data_dir, SIGNER)
    clean = audit_archive(archive, key)
    assert clean.ok, clean.findings
    assert clean.entries == audit(data_dir).entries == clean.signed_to
    verify = ["journal", "verify", "--data-dir", str(data_dir), "--archive", str(archive)]
    assert cli(*verify).returncode == 0

    original = segment.path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    segment.path.write_bytes(bytes(damaged))
    assert any("checksum" in f.problem for f in audit_archive(archive, key).findings)
    assert cli(*verify).returncode != 0

    # A forger who also rewrites the checksum still meets the chain and the signature.
    lines = gzip.decompress(original).splitlines()
    del lines[TARGET + 1]  # the checkpoint line comes first
    forged = gzip.compress(b"\n".join(lines) + b"\n")
    segment.path.write_bytes(forged)
    checksum = segment.path.with_name(segment.path.name + ".sha256")
    checksum.write_text(f"{hashlib.sha256(forged).hexdigest()}  {segment.path.name}\n")
    forged_audit = audit_archive(archive, key)
    assert not forged_audit.ok and forged_audit.first_broken is not None
