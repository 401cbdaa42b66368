"""Signed checkpoints of the journal: the host vouches for a stretch of entries.

A checkpoint covers the entries ``first_seq..seq`` (the first one after the previous
checkpoint up to the head at signing): it names the head's hash and the Merkle root over the
covered entries' hashes, and carries the host's Ed25519 signature over its canonical encoding
(sorted keys, compact JSON, every field but the signature). The chain makes every entry
before the head depend on it; the Merkle root lets one entry be linked to a signed checkpoint
without showing the other entries (an evidence bundle carries just the path).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ConfigDict, TypeAdapter

from common.identity import verify
from common.merkle import leaf_hash, merkle_path, merkle_root, verify_path

#: The identity that signs checkpoints (common.identity key name).
SIGNER = "host"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The host's signed statement that entries ``first_seq..seq`` end in ``head_hash``."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    seq: int
    head_hash: str
    first_seq: int
    entries_root: str
    epoch: int
    signed_at: dt.datetime
    signer: str
    signature: str = field(default="", compare=False)


_ADAPTER: TypeAdapter[Checkpoint] = TypeAdapter(Checkpoint)


def checkpoint_body(checkpoint: Checkpoint) -> bytes:
    """What the signature covers: the canonical encoding without the signature."""
    document = asdict(checkpoint)
    del document["signature"]
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return orjson.dumps(asdict(checkpoint), option=orjson.OPT_SORT_KEYS)


def decode_checkpoint(raw: bytes | str) -> Checkpoint:
    """A checkpoint from :func:`encode_checkpoint`'s bytes (signature not yet verified).

    Raises:
        pydantic.ValidationError: not a checkpoint.
    """
    return _ADAPTER.validate_json(raw)


def entry_leaves(hashes: Sequence[str]) -> list[bytes]:
    """The Merkle leaves of entry hashes (hex), in sequence order."""
    return [leaf_hash(bytes.fromhex(h)) for h in hashes]


def entries_root(hashes: Sequence[str]) -> str:
    return merkle_root(entry_leaves(hashes)).hex()


def sign_checkpoint(
    key: Ed25519PrivateKey,
    hashes: Sequence[str],
    *,
    first_seq: int,
    epoch: int,
    signed_at: dt.datetime,
) -> Checkpoint:
    """A signed checkpoint over the entry hashes ``hashes`` (``first_seq`` onwards)."""
    if not hashes:
        raise ValueError("a checkpoint covers at least one entry")
    unsigned = Checkpoint(
        seq=first_seq + len(hashes) - 1,
        head_hash=hashes[-1],
        first_seq=first_seq,
        entries_root=entries_root(hashes),
        epoch=epoch,
        signed_at=signed_at,
        signer=SIGNER,
    )
    signature = key.sign(checkpoint_body(unsigned)).hex()
    return Checkpoint(**{**asdict(unsigned), "signature": signature})


def signature_valid(key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    try:
        signature = bytes.fromhex(checkpoint.signature)
    except ValueError:
        return False
    return verify(key, signature, checkpoint_body(checkpoint))


def entry_link(hashes: Sequence[str], index: int) -> list[tuple[str, str]]:
    """The Merkle path (side, hex sibling) from entry ``index`` of a checkpoint to its root."""
    return [(side, sibling.hex()) for side, sibling in merkle_path(entry_leaves(hashes), index)]


def link_valid(entry_hash: str, path: Sequence[tuple[str, str]], checkpoint: Checkpoint) -> bool:
    """True when ``path`` leads from the entry hash to the checkpoint's root."""
    try:
        leaf = leaf_hash(bytes.fromhex(entry_hash))
        steps = [(side, bytes.fromhex(sibling)) for side, sibling in path]
        return verify_path(leaf, steps, bytes.fromhex(checkpoint.entries_root))
    except ValueError:
        return False


class Segment:
    """The entries committed since the last checkpoint, and whether one is due.

    A checkpoint is due once ``every`` entries wait, or once the oldest has waited
    ``interval_s`` seconds.
    """

    def __init__(self, first_seq: int, *, every: int, interval_s: float) -> None:
        self.first_seq = first_seq
        self.hashes: list[str] = []
        self.every = every
        self.interval_s = interval_s
        self._since: float | None = None

    def extend(self, hashes: Sequence[str]) -> None:
        if hashes and self._since is None:
            self._since = time.monotonic()
        self.hashes.extend(hashes)

    def due(self) -> bool:
        if not self.hashes or self._since is None:
            return False
        return len(self.hashes) >= self.every or time.monotonic() - self._since >= self.interval_s

    def take(self) -> tuple[int, list[str]]:
        """The waiting hashes and their first sequence number; the segment starts afresh."""
        taken = (self.first_seq, self.hashes)
        self.first_seq += len(self.hashes)
        self.hashes = []
        self._since = None
        return taken

    def put_back(self, first_seq: int, hashes: list[str]) -> None:
        """Return hashes :meth:`take` gave out when their checkpoint was not written."""
        self.first_seq = first_seq
        self.hashes = hashes + self.hashes
        self._since = self._since or time.monotonic()
