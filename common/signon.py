"""Branch sign-on: agreeing a session key by a signed ephemeral X25519 exchange.

The messages travel as ``SIGN_ON`` frames of one record on the ordinary exchanges (branch →
``bn.requests`` with its own routing key, host → ``bn.replies``), signed by the sender's
identity key (common.envelope.sign_header) and never encrypted: there is nothing secret in
them. The exchange::

    branch → host   hello    {branch_id, ephemeral (X25519 public, hex), nonce, at}
    host → branch   welcome  {branch_id, epoch, ephemeral, nonce (echoed), expires_at}
    host → branch   rekey    {branch_id, reason}    (after a host restart or a stale epoch)

Both sides then derive the session key with HKDF-SHA256 over the X25519 shared secret, salted
with both ephemeral keys and bound to the branch id and the epoch (:func:`derive_key`). The
ephemeral private keys are dropped at once (forward secrecy). The host numbers epochs so they
only grow, across host restarts too (milliseconds since 1970 or the last epoch + 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Annotated, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from common.envelope import KEY_BYTES, SessionKey

_HEX32 = r"^[0-9a-f]{64}$"
KDF_INFO = b"branchnet/session/v1"


class _SignOnRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    branch_id: str = Field(pattern=r"^[0-9]{4}$")


class Hello(_SignOnRecord):
    type: Literal["hello"] = "hello"
    ephemeral: str = Field(pattern=_HEX32)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    at: AwareDatetime


class Welcome(_SignOnRecord):
    type: Literal["welcome"] = "welcome"
    epoch: int = Field(ge=1)
    ephemeral: str = Field(pattern=_HEX32)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    expires_at: AwareDatetime


class Rekey(_SignOnRecord):
    type: Literal["rekey"] = "rekey"
    reason: str = Field(max_length=80)


SignOnRecord = Annotated[Hello | Welcome | Rekey, Field(discriminator="type")]
SIGN_ON_ADAPTER: TypeAdapter[Hello | Welcome | Rekey] = TypeAdapter(SignOnRecord)


def encode(record: Hello | Welcome | Rekey) -> bytes:
    return record.__pydantic_serializer__.to_json(record)


def new_ephemeral() -> tuple[X25519PrivateKey, str]:
    """A fresh X25519 key pair: the private key and the public key as hex."""
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private, public.hex()


def new_nonce() -> str:
    return secrets.token_hex(16)


def derive_key(
    own: X25519PrivateKey,
    peer_ephemeral: str,
    *,
    branch_id: str,
    epoch: int,
    branch_ephemeral: str,
    host_ephemeral: str,
) -> SessionKey:
    """The session key both sides derive from one exchange.

    Raises:
        ValueError: the peer's key is not a usable X25519 public key.
    """
    shared = own.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(peer_ephemeral)))
    salt = hashlib.sha256(bytes.fromhex(branch_ephemeral) + bytes.fromhex(host_ephemeral)).digest()
    info = KDF_INFO + f"|{branch_id}|{epoch}".encode()
    key = HKDF(hashes.SHA256(), KEY_BYTES, salt, info).derive(shared)
    return SessionKey(epoch, key)


def next_epoch(previous: int, now: dt.datetime) -> int:
    """An epoch above ``previous`` and above any a host started earlier could have used."""
    return max(previous + 1, int(now.timestamp() * 1000))
