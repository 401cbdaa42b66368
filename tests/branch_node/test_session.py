"""The branch's secure session: which reply frames it opens, with and without their signatures
checked."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from branch_node.session import BranchSession
from common.envelope import SessionKey, header_json, read_sealed, seal, sign_header
from common.errors import FrameError
from common.frames import FrameKind
from host_node.guard import Guard

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
HOST = Ed25519PrivateKey.generate()
BRANCH = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
RECORDS = [b'{"reply":1}', b'{"reply":2}']


def signed_on(*, check_reply_signatures: bool) -> tuple[Guard, BranchSession]:
    guard = Guard(HOST, {"0001": BRANCH.public_key()})
    session = BranchSession(
        "0001", BRANCH, HOST.public_key(), check_reply_signatures=check_reply_signatures
    )
    opened = guard.open(session.hello(1, T0), "branch.0001", T0)
    assert opened.answer is not None
    session.accept(session.open(opened.answer.body))
    return guard, session


def resigned(body: bytes, identity: Ed25519PrivateKey) -> bytes:
    """``body`` with its header signed by ``identity`` instead (record block untouched)."""
    sealed = read_sealed(body)
    return header_json(sign_header(sealed.header, identity)) + b"\n" + sealed.payload


@pytest.mark.parametrize("check", [True, False])
def test_a_reply_the_host_sealed_opens(check: bool) -> None:
    guard, session = signed_on(check_reply_signatures=check)
    reply = guard.seal_reply("0001", 7, RECORDS)
    assert reply is not None
    assert session.open(reply).records == tuple(RECORDS)


def test_a_branch_refuses_a_reply_whose_header_the_host_did_not_sign() -> None:
    guard, session = signed_on(check_reply_signatures=True)
    reply = guard.seal_reply("0001", 7, RECORDS)
    assert reply is not None
    with pytest.raises(FrameError, match="not signed by the host"):
        session.open(resigned(reply, STRANGER))


def test_unchecked_signatures_leave_the_gcm_tag_to_refuse_what_the_host_did_not_seal() -> None:
    # A load generator skips the host's signature; a reply must still be the host's, sealed
    # under this session, with the header it was sealed with.
    guard, session = signed_on(check_reply_signatures=False)
    reply = guard.seal_reply("0001", 7, RECORDS)
    assert reply is not None and session.current is not None
    assert session.open(resigned(reply, STRANGER)).records == tuple(RECORDS)
    foreign_key = SessionKey(session.current.epoch, os.urandom(32))
    forged = seal(FrameKind.REPLY, "host", 7, RECORDS, foreign_key, STRANGER)
    with pytest.raises(FrameError, match="does not decrypt"):
        session.open(forged)
    sealed = read_sealed(reply)
    moved = sealed.header.model_copy(update={"sequence": 8})
    with pytest.raises(FrameError, match="does not decrypt"):
        session.open(header_json(moved) + b"\n" + sealed.payload)
    not_host = seal(FrameKind.REPLY, "0002", 7, RECORDS, session.current, STRANGER)
    with pytest.raises(FrameError, match="not signed by the host"):
        session.open(not_host)


def test_sign_on_frames_are_checked_even_when_reply_signatures_are_not() -> None:
    guard, session = signed_on(check_reply_signatures=False)
    opened = guard.open(session.hello(2, T0), "branch.0001", T0)
    assert opened.answer is not None
    with pytest.raises(FrameError, match="not signed by the host"):
        session.accept(session.open(resigned(opened.answer.body, STRANGER)))
