"""What the host writes and sends for a fixed workload, pinned to digests.

Frames in, through the guard, intake, plan, settle and the store, replies sealed out: the rows
of every table, each record's idempotency hash and proof, the reply bytes and the sealed reply
frames must stay byte for byte what they were (journal bodies and chain hashes are what a
standby, an auditor and a checkpoint verify; reply bytes are what branches compare on retry).
A deliberate change of any of them updates :data:`EXPECTED` in the same commit, saying why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import common.frames
from common.envelope import SessionKey, seal
from common.frames import FrameKind
from common.replies import encode_reply
from common.requests import encode_request
from common.topology import branch_key
from host_node.batch import accounts_to_load, plan, settle
from host_node.guard import Guard, _Sessions
from host_node.intake import unpack_frame
from host_node.journal import ChainHead
from host_node.store import connect, read_snapshot, read_staff, write_settlement, write_staff
from tests.host_node.fakes import STAFF, T0, Teller, account_no, fake_hsm

BRANCH = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
HOST = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
SESSION = SessionKey(1, b"\x03" * 32)

#: Digests (sha256, first 16 hex digits) of what the workload below makes the host keep and send.
EXPECTED = {
    "records": "fa0567e23d688467",
    "replies": "7f8012c8ecb43fe7",
    "head": "ceb28e07e95c3155",
    "accounts": "4628d842d528cfe7",
    "checkpoints": "4f53cda18c2baa0c",
    "customer_tiers": "9f4185e875107a7a",
    "customers": "97aa79e43241aab1",
    "evidence": "2c6b0f048532aa4e",
    "frames": "2f1bc5b9b2f54b86",
    "host_state": "4f53cda18c2baa0c",
    "idempotency": "efd96096354cf4a5",
    "journal": "d31c11d973cb7778",
    "meta": "4f53cda18c2baa0c",
    "postings": "b3c404c605269d43",
    "tier_changes": "7272fb0d74ead563",
}


class _FrozenClock:
    """Stands in for the ``datetime`` module in common.frames: headers made at ``T0``."""

    UTC = dt.UTC

    class datetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return T0


def _workload() -> list[list[bytes]]:
    """Frames of records: openings, cash, PIN kinds (one wrong PIN), a transfer, large cash
    without identity, a refused record, an undecodable one, a retry and a changed retry."""
    teller = Teller()
    a, b = account_no(1), account_no(2)
    frames: list[list[object]] = [
        [
            teller.open_account(a, deposit=500_000, pin=teller.pin("123456")),
            teller.open_account(b, deposit=1_000, pin=teller.pin("654321")),
        ],
        [
            teller.deposit(a, 12_345),
            teller.withdraw(a, 2_000, teller.pin("123456")),
            teller.balance(b, teller.pin("654321")),
            teller.withdraw(b, 100, teller.pin("000000")),
        ],
        [
            teller.transfer(a, b, 7_000, teller.pin("123456")),
            teller.deposit(b, 6_000_000),
            b'{"request_id":"0001-01-999","kind":"deposit","amount":"x"}',
            b"not json",
            teller.change_pin(b, teller.pin("654321"), teller.pin("111111")),
        ],
    ]
    raws = [[r if isinstance(r, bytes) else encode_request(r) for r in f] for f in frames]  # type: ignore[arg-type]
    return [*raws, [raws[1][0], raws[1][1][:-1] + b" }"]]


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\x00".join(parts)).hexdigest()[:16]


def _host_outputs(home: Path) -> dict[str, str]:
    connection = connect(home / "ledger.sqlite")
    write_staff(connection, STAFF.values())
    staff = read_staff(connection)
    guard = Guard(HOST, {"0001": BRANCH.public_key()})
    guard._sessions["0001"] = _Sessions(SESSION, T0)  # signed on (sign-on draws fresh keys)
    head, command_ids = ChainHead(), (f"c{n}" for n in itertools.count())
    clock = (T0 + dt.timedelta(milliseconds=n) for n in itertools.count())
    kept: list[bytes] = []
    replies: list[bytes] = []
    for sequence, raws in enumerate(_workload(), 1):
        body = seal(FrameKind.REQUEST, "0001", sequence, raws, SESSION, BRANCH)
        opened = guard.open(body, branch_key("0001"), T0)
        unpacked = unpack_frame(
            opened.frame, "0001", received_at=T0, unpacked_at=T0, evidence=opened.evidence
        )
        items = list(unpacked.items)
        kept += [f"{d.reason}".encode() + d.raw for d in unpacked.dead]
        for item in items:
            proof = item.proof()
            kept += [item.content_hash.encode(), proof.to_json() if proof else b"-"]
        stored = read_snapshot(connection, {i.request_id for i in items}, accounts_to_load(items))
        snapshot = dataclasses.replace(stored, staff=staff)
        planned = plan(items, snapshot, command_ids, taken_at=T0)
        responses = {c.command_id: fake_hsm(c) for c in planned.commands}
        settlement = settle(items, planned, snapshot, responses, head, lambda: next(clock))
        write_settlement(connection, settlement)
        head = settlement.head
        wire = [encode_reply(r) for r in settlement.replies if r is not None]
        replies += [*wire, guard.seal_reply("0001", sequence, wire) or b""]
        kept += [row.json().encode() for row in settlement.remembered]
    outputs = {"records": _digest(*kept), "replies": _digest(*replies), "head": head.hash[:16]}
    tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    for (table,) in sorted(tables.fetchall()):
        if table == "staff":  # the fakes' staff draw fresh keys
            continue
        rows = connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
        if table == "customers":  # created_at: the store's wall clock
            rows = [row[:-1] for row in rows]
        outputs[table] = _digest(repr(rows).encode())
    connection.close()
    return outputs


def test_the_host_keeps_and_sends_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common.frames, "dt", _FrozenClock)
    monkeypatch.setattr(os, "urandom", lambda n: b"\x07" * n)  # the GCM nonces
    assert _host_outputs(tmp_path) == EXPECTED
