"""A branch's secure session with the host: sign-on, sealing requests, opening replies.

The branch holds its own identity key and the host's public key, nothing else. A sign-on
(common.signon) sends a signed hello with a fresh X25519 key; the host's signed welcome must
echo the hello's nonce, and then both derive the session key under the host's epoch. The
previous session is kept so replies sealed just before a re-key still open. Pure: the request
client does the I/O.

A reply frame is authenticated twice: its AES-GCM tag (under a session key only this branch and
the host hold, agreed in a welcome the host signed) and the host's Ed25519 signature on its
header, which is what would let the branch prove to a third party what the host answered. A
branch checks both. A load generator, which keeps no evidence, may leave the signature
unchecked (``check_reply_signatures=False``): an Ed25519 verification costs more CPU than the
rest of a reply frame's way through the client, and on the machine it shares with the host
that CPU is taken from the system it measures. The GCM tag still refuses any frame the host
did not seal for this session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from common.envelope import (
    SessionKey,
    open_records,
    read_sealed,
    seal,
    sign_header,
    verify_header,
)
from common.errors import FrameError
from common.frames import Frame, FrameKind, build_frame, decode_frame, encode_frame
from common.identity import HOST_IDENTITY, branch_identity, load_identity, load_public
from common.signon import (
    SIGN_ON_ADAPTER,
    Hello,
    Rekey,
    Welcome,
    derive_key,
    encode,
    new_ephemeral,
    new_nonce,
)

HOST_SENDER = "host"


@dataclass(slots=True)
class _Hello:
    private: X25519PrivateKey
    public: str
    nonce: str


class BranchSession:
    """The branch's side of the sessions with the host.

    Args:
        branch_id: this branch.
        identity: the branch's private identity key.
        host_key: the host's public identity key.
        check_reply_signatures: verify the host's signature on every reply frame (sign-on
            frames are always verified); see the module docstring before turning it off.
    """

    def __init__(
        self,
        branch_id: str,
        identity: Ed25519PrivateKey,
        host_key: Ed25519PublicKey,
        *,
        check_reply_signatures: bool = True,
    ) -> None:
        self.branch_id = branch_id
        self._identity = identity
        self._host_key = host_key
        self.check_reply_signatures = check_reply_signatures
        self._hello: _Hello | None = None
        self.current: SessionKey | None = None
        self.previous: SessionKey | None = None

    @classmethod
    def load(
        cls, data_dir: Path, branch_id: str, *, check_reply_signatures: bool = True
    ) -> BranchSession:
        """The session keys of ``branch_id`` from the identity files under ``data_dir``.

        Raises:
            ConfigError: the branch's private key or the host's public key is missing.
        """
        identity = load_identity(data_dir, branch_identity(branch_id))
        return cls(
            branch_id,
            identity,
            load_public(data_dir, HOST_IDENTITY),
            check_reply_signatures=check_reply_signatures,
        )

    @property
    def ready(self) -> bool:
        return self.current is not None

    def hello(self, sequence: int, now: dt.datetime) -> bytes:
        """A signed sign-on frame with a fresh ephemeral key (replacing any hello pending)."""
        private, public = new_ephemeral()
        self._hello = _Hello(private, public, new_nonce())
        record = encode(
            Hello(branch_id=self.branch_id, ephemeral=public, nonce=self._hello.nonce, at=now)
        )
        frame = build_frame(FrameKind.SIGN_ON, self.branch_id, sequence, [record])
        return encode_frame(Frame(sign_header(frame.header, self._identity), frame.records))

    def accept(self, frame: Frame) -> Welcome | Rekey:
        """Take a host's sign-on frame: a welcome answering our hello starts the new session.

        Raises:
            FrameError: not signed by the host, not for this branch, or a welcome that does
                not answer the pending hello.
        """
        if frame.header.sender != HOST_SENDER or not verify_header(frame.header, self._host_key):
            raise FrameError("sign-on frame not signed by the host")
        try:
            record = SIGN_ON_ADAPTER.validate_json(frame.records[0])
        except ValidationError:
            raise FrameError("sign-on record not understood") from None
        if record.branch_id != self.branch_id or isinstance(record, Hello):
            raise FrameError("sign-on record not for this branch")
        if isinstance(record, Welcome):
            pending = self._hello
            if pending is None or record.nonce != pending.nonce:
                raise FrameError("welcome does not answer our hello")
            try:
                session = derive_key(
                    pending.private,
                    record.ephemeral,
                    branch_id=self.branch_id,
                    epoch=record.epoch,
                    branch_ephemeral=pending.public,
                    host_ephemeral=record.ephemeral,
                )
            except ValueError:
                raise FrameError("welcome carries an unusable key") from None
            self._hello = None
            self.previous, self.current = self.current, session
        return record

    def seal(self, sequence: int, records: list[bytes]) -> bytes:
        """A sealed request frame under the current session.

        Raises:
            RuntimeError: not signed on.
        """
        if self.current is None:
            raise RuntimeError("no session: sign on first")
        return seal(
            FrameKind.REQUEST, self.branch_id, sequence, records, self.current, self._identity
        )

    def open(self, body: bytes) -> Frame:
        """A reply or sign-on frame from the host, checked (and decrypted for a reply).

        Raises:
            FrameError: malformed, not signed by the host (unless reply signatures go
                unchecked), or not sealed under a session this branch holds.
        """
        sealed = read_sealed(body)
        header = sealed.header
        if header.kind is FrameKind.SIGN_ON:
            return decode_frame(body, expect=FrameKind.SIGN_ON)
        if header.kind is not FrameKind.REPLY:
            raise FrameError(f"expected a reply frame, got {header.kind}")
        if header.sender != HOST_SENDER or (
            self.check_reply_signatures and not verify_header(header, self._host_key)
        ):
            raise FrameError("reply frame not signed by the host")
        for session in (self.current, self.previous):
            if session is not None and session.epoch == header.epoch:
                return Frame(header, open_records(sealed, session))
        raise FrameError(f"reply sealed under unknown epoch {header.epoch}")
