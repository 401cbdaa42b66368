"""The host's gate: sign-on, and every reason a frame is refused."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from branch_node.session import BranchSession
from common.envelope import (
    SessionKey,
    header_json,
    read_sealed,
    seal,
    sign_header,
    signing_bytes,
    verify_record,
)
from common.frames import Frame, FrameKind, build_frame, decode_frame, encode_frame
from common.signon import Rekey
from host_node.errors import FrameRefused
from host_node.guard import Guard, GuardConfig, Refusal, SecurityAlert

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
HOST = Ed25519PrivateKey.generate()
BRANCHES = {b: Ed25519PrivateKey.generate() for b in ("0001", "0002")}
KEY = {b: f"branch.{b}" for b in BRANCHES}


class Harness:
    def __init__(self, config: GuardConfig | None = None) -> None:
        self.alerts: list[SecurityAlert] = []
        self.guard = Guard(
            HOST,
            {b: k.public_key() for b, k in BRANCHES.items()},
            config=config or GuardConfig(),
            on_alert=self.alerts.append,
        )
        self.sessions = {b: BranchSession(b, k, HOST.public_key()) for b, k in BRANCHES.items()}
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def sign_on(self, branch_id: str = "0001", now: dt.datetime = T0) -> SessionKey:
        session = self.sessions[branch_id]
        opened = self.guard.open(session.hello(self.next_sequence(), now), KEY[branch_id], now)
        assert opened.answer is not None and opened.answer.routing_key == KEY[branch_id]
        session.accept(session.open(opened.answer.body))
        assert session.current is not None
        return session.current

    def request(self, branch_id: str = "0001", records: list[bytes] | None = None) -> bytes:
        return self.sessions[branch_id].seal(self.next_sequence(), records or [b'{"r":1}'])

    def refused(
        self, body: bytes, routing_key: str = KEY["0001"], now: dt.datetime = T0
    ) -> Refusal:
        with pytest.raises(FrameRefused) as caught:
            self.guard.open(body, routing_key, now)
        self.guard.report(caught.value, routing_key, now)
        return caught.value.refusal


@pytest.fixture
def harness() -> Harness:
    h = Harness()
    h.sign_on("0001")
    return h


def test_a_signed_on_branch_is_heard_and_answered_under_the_same_session(
    harness: Harness,
) -> None:
    records = [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    opened = harness.guard.open(harness.request(records=records), KEY["0001"], T0)
    assert opened.branch_id == "0001" and opened.frame.records == tuple(records)
    assert opened.evidence is not None
    for index, record in enumerate(records):
        assert verify_record(record, opened.evidence.proof(index), BRANCHES["0001"].public_key())
    reply = harness.guard.seal_reply("0001", 1, [b'{"reply":1}'])
    assert reply is not None
    assert harness.sessions["0001"].open(reply).records == (b'{"reply":1}',)
    assert harness.guard.seal_reply("0002", 1, [b"x"]) is None  # not signed on
    assert harness.alerts == []


def _tampered_signature(body: bytes) -> bytes:
    sealed = read_sealed(body)
    forged = sign_header(sealed.header, BRANCHES["0002"])  # a signature, but not 0001's
    return header_json(forged) + b"\n" + sealed.payload


def _wrong_count(harness: Harness) -> bytes:
    session = harness.sessions["0001"].current
    assert session is not None
    records = [b"x", b"y"]
    frame = build_frame(
        FrameKind.REQUEST, "0001", harness.next_sequence(), records, epoch=session.epoch
    )
    header = sign_header(frame.header.model_copy(update={"count": 3}), BRANCHES["0001"])
    nonce = os.urandom(12)
    block = session.cipher().encrypt(nonce, b"\n".join(records), signing_bytes(header))
    return header_json(header) + b"\n" + nonce + block


def test_every_bad_frame_is_refused_with_its_reason(harness: Harness) -> None:
    good = harness.request()
    harness.guard.open(good, KEY["0001"], T0)
    flipped = bytearray(harness.request())
    flipped[-1] ^= 1
    stranger = Ed25519PrivateKey.generate()
    unknown = seal(FrameKind.REQUEST, "0009", 1, [b"x"], SessionKey(1, bytes(32)), stranger)
    cases = {
        Refusal.MALFORMED: (b"\x00garbage", KEY["0001"]),
        Refusal.WRONG_KIND: (
            seal(FrameKind.REPLY, "0001", 99, [b"x"], SessionKey(1, bytes(32)), BRANCHES["0001"]),
            KEY["0001"],
        ),
        Refusal.UNKNOWN_BRANCH: (unknown, "branch.0009"),
        Refusal.WRONG_ROUTE: (harness.request(), KEY["0002"]),
        Refusal.BAD_SIGNATURE: (_tampered_signature(harness.request()), KEY["0001"]),
        Refusal.REPLAYED: (good, KEY["0001"]),
        Refusal.UNDECRYPTABLE: (bytes(flipped), KEY["0001"]),
        Refusal.COUNT_MISMATCH: (_wrong_count(harness), KEY["0001"]),
    }
    for expected, (body, routing_key) in cases.items():
        assert harness.refused(body, routing_key) is expected, expected
    assert [a.refusal for a in harness.alerts] == list(cases)
    assert all(a.reason for a in harness.alerts)
    assert harness.guard.alerts[Refusal.REPLAYED] == 1


def test_sequences_below_the_window_are_refused() -> None:
    harness = Harness(GuardConfig(replay_window=8))
    harness.sign_on()
    old = harness.request()
    for _ in range(10):
        harness.guard.open(harness.request(), KEY["0001"], T0)
    assert harness.refused(old) is Refusal.OUTSIDE_WINDOW


def test_a_frame_given_back_may_come_again(harness: Harness) -> None:
    body = harness.request()
    opened = harness.guard.open(body, KEY["0001"], T0)
    harness.guard.forget("0001", opened.frame.header.sequence)
    assert harness.guard.open(body, KEY["0001"], T0).frame == opened.frame


def test_the_previous_epoch_holds_for_the_grace_period_only() -> None:
    harness = Harness(GuardConfig(grace_s=10))
    first = harness.sign_on()
    before = harness.request()
    also_before = harness.request()
    second = harness.sign_on(now=T0 + dt.timedelta(seconds=1))
    assert second.epoch > first.epoch
    assert harness.guard.open(before, KEY["0001"], T0 + dt.timedelta(seconds=5)).branch_id
    late = T0 + dt.timedelta(seconds=12)
    assert harness.refused(also_before, now=late) is Refusal.STALE_EPOCH
    assert harness.guard.open(harness.request(), KEY["0001"], late).branch_id == "0001"


def test_sessions_expire_and_unsigned_on_branches_are_stale() -> None:
    harness = Harness(GuardConfig(session_ttl_s=60))
    harness.sign_on()
    assert harness.refused(harness.request(), now=T0 + dt.timedelta(seconds=61)) is (
        Refusal.STALE_EPOCH
    )
    other = Harness()  # a restarted host: no sessions at all
    other.sessions["0001"] = harness.sessions["0001"]
    assert other.refused(harness.request()) is Refusal.STALE_EPOCH


def test_an_old_or_foreign_hello_starts_no_session(harness: Harness) -> None:
    session = harness.sessions["0001"]
    stale = session.hello(harness.next_sequence(), T0 - dt.timedelta(hours=1))
    assert harness.refused(stale) is Refusal.STALE_SIGN_ON
    as_other = harness.sessions["0002"].hello(harness.next_sequence(), T0)
    assert harness.refused(as_other, KEY["0001"]) is Refusal.WRONG_ROUTE
    record = (
        b'{"branch_id":"0001","type":"hello","ephemeral":"'
        + b"ab" * 32
        + b'","nonce":"'
        + b"cd" * 16
        + b'","at":"2026-03-02T09:00:00"}'
    )  # no time zone: refused, never a crash
    frame = build_frame(FrameKind.SIGN_ON, "0001", harness.next_sequence(), [record])
    signed = Frame(sign_header(frame.header, BRANCHES["0001"]), frame.records)
    assert harness.refused(encode_frame(signed)) is Refusal.MALFORMED
    hello = session.hello(harness.next_sequence(), T0)
    harness.guard.open(hello, KEY["0001"], T0)
    assert harness.refused(hello) is Refusal.REPLAYED


def test_a_signed_hello_with_a_small_order_key_is_refused_not_a_crash(harness: Harness) -> None:
    record = (
        b'{"branch_id":"0001","type":"hello","ephemeral":"'
        + b"00" * 32  # X25519 gives no shared secret with it (RFC 7748 section 6.1)
        + b'","nonce":"'
        + b"cd" * 16
        + b'","at":"2026-03-02T09:00:00Z"}'
    )
    frame = build_frame(FrameKind.SIGN_ON, "0001", harness.next_sequence(), [record])
    signed = Frame(sign_header(frame.header, BRANCHES["0001"]), frame.records)
    assert harness.refused(encode_frame(signed)) is Refusal.MALFORMED
    assert harness.alerts[-1].reason.endswith("hello carries an unusable key")
    harness.sign_on()  # the branch's real sign-on still works


def test_rekey_notices_are_signed_and_rate_limited(harness: Harness) -> None:
    notice = harness.guard.rekey_notice("0001", "host restarted", T0)
    assert notice is not None
    assert harness.guard.rekey_notice("0001", "again", T0) is None
    record = harness.sessions["0001"].accept(decode_frame(notice.body))
    assert isinstance(record, Rekey) and record.reason == "host restarted"
    assert harness.guard.rekey_notice("0001", "later", T0 + dt.timedelta(seconds=2)) is not None


def test_a_welcome_that_answers_no_hello_of_ours_is_refused(harness: Harness) -> None:
    from common.errors import FrameError

    other = Harness()
    session = other.sessions["0001"]
    opened = other.guard.open(session.hello(1, T0), KEY["0001"], T0)
    assert opened.answer is not None
    with pytest.raises(FrameError, match="does not answer"):
        harness.sessions["0001"].accept(decode_frame(opened.answer.body))
