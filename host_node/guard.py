"""The host's gate for sealed frames: sign-on, signatures, routing, epochs, replay, decryption.

Every frame off ``host.requests`` passes :meth:`Guard.open` before anything else looks at it.
In order, a frame is refused (:class:`~host_node.errors.FrameRefused`, with a
:class:`Refusal`) when it is malformed or too large, not a request or sign-on, from a branch
the host does not know, sent with a routing key that is not the signer's own branch, not
signed by that branch's identity key, sealed under an epoch that is not the branch's current
one (or its previous one within the grace period after a re-key), a frame sequence already
seen or below the replay window, a record block that does not decrypt, or records that
disagree with the header's count or Merkle root. Signatures are checked before the replay
window is touched, so nobody but the branch can move its window.

A sign-on (common.signon) creates the branch's next session and returns the host's signed
welcome. Sessions live in memory only: after a host restart every branch signs on again (the
host asks them to, :meth:`Guard.rekey_notice`). Frames handed back to the queue unprocessed
are :meth:`Guard.forget`-ten, so their redelivery is not taken for a replay.

Pure apart from the clock the caller passes in; the service does the I/O.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from common.bus import Message
from common.envelope import (
    FrameEvidence,
    Sealed,
    SessionKey,
    open_records_and_leaves,
    read_sealed,
    seal,
    sign_header,
    verify_header,
)
from common.errors import FrameError
from common.frames import Frame, FrameKind, build_frame, decode_frame, encode_frame
from common.identity import HOST_IDENTITY, branch_registry, load_identity
from common.logs import get_logger
from common.signon import (
    SIGN_ON_ADAPTER,
    Hello,
    Rekey,
    Welcome,
    derive_key,
    encode,
    new_ephemeral,
    next_epoch,
)
from common.topology import REPLIES_EXCHANGE, branch_key
from host_node.errors import FrameRefused

_log = get_logger(__name__)
SENDER = "host"


class Refusal(StrEnum):
    """Why a frame was refused: the kind of a security alert."""

    MALFORMED = "malformed"
    WRONG_KIND = "wrong_kind"
    UNKNOWN_BRANCH = "unknown_branch"
    WRONG_ROUTE = "wrong_route"
    BAD_SIGNATURE = "bad_signature"
    STALE_EPOCH = "stale_epoch"
    REPLAYED = "replayed"
    OUTSIDE_WINDOW = "outside_window"
    UNDECRYPTABLE = "undecryptable"
    COUNT_MISMATCH = "count_mismatch"
    STALE_SIGN_ON = "stale_sign_on"


@dataclass(frozen=True, slots=True)
class SecurityAlert:
    """One refused frame, for the events stream (no record content, ever)."""

    refusal: Refusal
    reason: str
    sender: str | None
    routing_key: str
    sequence: int | None
    at: dt.datetime


#: Receives every security alert; must not block (queue it and return).
SecurityHook = Callable[[SecurityAlert], None]


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Attributes:
    replay_window: frame sequences below the highest seen minus this are refused.
    session_ttl_s: a session older than this is stale (branches re-key well before).
    grace_s: how long the previous epoch stays valid after a re-key (frames in flight).
    sign_on_skew_s: a hello whose time is further than this from the host's is refused.
    notice_interval_s: at most one re-key notice per branch in this interval.
    """

    replay_window: int = 4096
    session_ttl_s: float = 3600.0
    grace_s: float = 60.0
    sign_on_skew_s: float = 300.0
    notice_interval_s: float = 1.0


@dataclass(slots=True)
class _Window:
    """A branch's frame sequences: the highest seen and every one seen within the window."""

    size: int
    top: int = -1
    seen: set[int] = field(default_factory=set)

    def check(self, sequence: int) -> Refusal | None:
        if sequence <= self.top - self.size:
            return Refusal.OUTSIDE_WINDOW
        if sequence in self.seen:
            return Refusal.REPLAYED
        return None

    def admit(self, sequence: int) -> None:
        self.seen.add(sequence)
        if sequence > self.top:
            self.top = sequence
            if len(self.seen) > 2 * self.size:
                floor = self.top - self.size
                self.seen = {s for s in self.seen if s > floor}


@dataclass(slots=True)
class _Sessions:
    current: SessionKey
    established: dt.datetime
    previous: SessionKey | None = None
    previous_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    """A frame that passed the gate.

    For a request: its decrypted ``frame`` and the ``evidence`` to prove any record later.
    For a sign-on: ``answer``, the host's welcome to publish (``frame`` is the hello).
    """

    branch_id: str
    frame: Frame
    evidence: FrameEvidence | None = None
    answer: Message | None = None


class Guard:
    """Sessions and checks for every registered branch.

    Args:
        identity: the host's identity key (signs welcomes, notices and replies).
        branch_keys: each registered branch's public identity key.
        on_alert: called with every refused frame's alert.
    """

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        branch_keys: Mapping[str, Ed25519PublicKey],
        *,
        config: GuardConfig = GuardConfig(),
        on_alert: SecurityHook | None = None,
    ) -> None:
        self.identity = identity
        self.branch_keys = dict(branch_keys)
        self.config = config
        self.on_alert = on_alert
        self._sessions: dict[str, _Sessions] = {}
        self._windows = {b: _Window(config.replay_window) for b in self.branch_keys}
        self._epoch = 0
        self._notified: dict[str, dt.datetime] = {}
        self.alerts: Counter[Refusal] = Counter()

    @classmethod
    def load(
        cls,
        data_dir: Path,
        branch_ids: list[str] | tuple[str, ...],
        *,
        config: GuardConfig = GuardConfig(),
        on_alert: SecurityHook | None = None,
    ) -> Guard:
        """The host's guard from the identity files under ``data_dir``.

        Raises:
            ConfigError: the host's private key or a branch's public key is missing.
        """
        return cls(
            load_identity(data_dir, HOST_IDENTITY),
            branch_registry(data_dir, branch_ids),
            config=config,
            on_alert=on_alert,
        )

    # -- inbound ------------------------------------------------------------------------------

    def open(self, body: bytes, routing_key: str, now: dt.datetime) -> Opened:
        """Check a frame off ``host.requests`` and open it.

        Raises:
            FrameRefused: the frame is refused; its text is the reason.
        """
        try:
            sealed = read_sealed(body)
        except FrameError as error:
            raise FrameRefused(Refusal.MALFORMED, str(error)) from None
        header = sealed.header
        sender, sequence = header.sender, header.sequence
        if header.kind not in (FrameKind.REQUEST, FrameKind.SIGN_ON):
            raise FrameRefused(Refusal.WRONG_KIND, f"a {header.kind} frame", sequence=sequence)
        public_key = self.branch_keys.get(sender)
        if public_key is None:
            raise FrameRefused(Refusal.UNKNOWN_BRANCH, f"sender {sender[:8]!r} is not registered")
        if routing_key != branch_key(sender):
            raise FrameRefused(
                Refusal.WRONG_ROUTE,
                f"signer {sender} sent with routing key {routing_key[:32]!r}",
                sender=sender,
                sequence=sequence,
            )
        if not verify_header(header, public_key):
            raise FrameRefused(
                Refusal.BAD_SIGNATURE, f"not signed by {sender}", sender=sender, sequence=sequence
            )
        if header.kind is FrameKind.SIGN_ON:
            return self._sign_on(body, sender, now)
        session = self._session(sender, header.epoch, now)
        window = self._windows[sender]
        refusal = window.check(sequence)
        if refusal is not None:
            reason = f"frame {sequence} of {sender}, highest seen {window.top}"
            raise FrameRefused(refusal, reason, sender=sender, sequence=sequence)
        window.admit(sequence)
        records, leaves = self._decrypt(sealed, session)
        evidence = FrameEvidence(sealed.header_bytes, leaves)
        return Opened(sender, Frame(header, records), evidence)

    @staticmethod
    def _decrypt(
        sealed: Sealed, session: SessionKey
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """The frame's records and their leaf hashes."""
        header = sealed.header
        try:
            return open_records_and_leaves(sealed, session)
        except FrameError as error:
            refusal = Refusal.UNDECRYPTABLE if "decrypt" in str(error) else Refusal.COUNT_MISMATCH
            raise FrameRefused(
                refusal, str(error), sender=header.sender, sequence=header.sequence
            ) from None

    def _session(self, sender: str, epoch: int, now: dt.datetime) -> SessionKey:
        sessions = self._sessions.get(sender)
        if sessions is not None:
            if epoch == sessions.current.epoch:
                age = (now - sessions.established).total_seconds()
                if age <= self.config.session_ttl_s:
                    return sessions.current
            elif (
                sessions.previous is not None
                and epoch == sessions.previous.epoch
                and sessions.previous_until is not None
                and now <= sessions.previous_until
            ):
                return sessions.previous
        current = sessions.current.epoch if sessions else None
        raise FrameRefused(
            Refusal.STALE_EPOCH,
            f"epoch {epoch} of {sender} is not current (current {current})",
            sender=sender,
        )

    def _sign_on(self, body: bytes, sender: str, now: dt.datetime) -> Opened:
        try:
            frame = decode_frame(body, expect=FrameKind.SIGN_ON)
            if frame.header.count != 1:
                raise FrameError("a sign-on frame holds one record")
            hello = SIGN_ON_ADAPTER.validate_json(frame.records[0])
        except (FrameError, ValidationError) as error:
            reason = str(error) if isinstance(error, FrameError) else "not a hello record"
            raise FrameRefused(Refusal.MALFORMED, reason, sender=sender) from None
        sequence = frame.header.sequence
        if not isinstance(hello, Hello) or hello.branch_id != sender:
            raise FrameRefused(Refusal.MALFORMED, "not this branch's hello", sender=sender)
        skew = abs((now - hello.at).total_seconds())
        if skew > self.config.sign_on_skew_s:
            raise FrameRefused(
                Refusal.STALE_SIGN_ON, f"hello {skew:.0f} s off the host's clock", sender=sender
            )
        window = self._windows[sender]
        refusal = window.check(sequence)
        if refusal is not None:
            raise FrameRefused(
                refusal, f"sign-on frame {sequence}", sender=sender, sequence=sequence
            )
        window.admit(sequence)
        self._epoch = next_epoch(self._epoch, now)
        private, public = new_ephemeral()
        try:
            session = derive_key(
                private,
                hello.ephemeral,
                branch_id=sender,
                epoch=self._epoch,
                branch_ephemeral=hello.ephemeral,
                host_ephemeral=public,
            )
        except ValueError:  # e.g. a small-order point: no shared secret (RFC 7748 §6.1)
            raise FrameRefused(
                Refusal.MALFORMED, "hello carries an unusable key", sender=sender
            ) from None
        before = self._sessions.get(sender)
        self._sessions[sender] = _Sessions(
            session,
            now,
            before.current if before else None,
            now + dt.timedelta(seconds=self.config.grace_s) if before else None,
        )
        expires = now + dt.timedelta(seconds=self.config.session_ttl_s)
        welcome = Welcome(
            branch_id=sender,
            epoch=session.epoch,
            ephemeral=public,
            nonce=hello.nonce,
            expires_at=expires,
        )
        _log.info("branch signed on", branch=sender, epoch=session.epoch)
        return Opened(sender, frame, answer=self._signed(sender, encode(welcome), sequence))

    # -- outbound -----------------------------------------------------------------------------

    def seal_reply(self, branch_id: str, sequence: int, records: list[bytes]) -> bytes | None:
        """A reply frame for ``branch_id`` sealed under its current session (None: it has
        none, e.g. before its first sign-on; the branch's retry gets the stored reply)."""
        sessions = self._sessions.get(branch_id)
        if sessions is None:
            return None
        return seal(FrameKind.REPLY, SENDER, sequence, records, sessions.current, self.identity)

    def rekey_notice(self, branch_id: str, reason: str, now: dt.datetime) -> Message | None:
        """A signed request to sign on again, at most one per branch per interval."""
        last = self._notified.get(branch_id)
        if last is not None and (now - last).total_seconds() < self.config.notice_interval_s:
            return None
        self._notified[branch_id] = now
        notice = encode(Rekey(branch_id=branch_id, reason=reason[:80]))
        return self._signed(branch_id, notice, 0)

    def _signed(self, branch_id: str, record: bytes, sequence: int) -> Message:
        frame = build_frame(FrameKind.SIGN_ON, SENDER, sequence, [record])
        signed = Frame(sign_header(frame.header, self.identity), frame.records)
        return Message(REPLIES_EXCHANGE, branch_key(branch_id), encode_frame(signed))

    # -- bookkeeping --------------------------------------------------------------------------

    def forget(self, branch_id: str, sequence: int) -> None:
        """Let a frame given back unprocessed be delivered again."""
        window = self._windows.get(branch_id)
        if window is not None:
            window.seen.discard(sequence)

    def report(self, refused: FrameRefused, routing_key: str, now: dt.datetime) -> SecurityAlert:
        """Count a refusal and hand its alert to the hook (a failing hook is logged)."""
        alert = SecurityAlert(
            refused.refusal, str(refused), refused.sender, routing_key[:64], refused.sequence, now
        )
        self.alerts[refused.refusal] += 1
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception as error:
                _log.error("security hook failed", error=type(error).__name__)
        return alert
