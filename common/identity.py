"""Node identity keys (Ed25519): who signed a frame, a checkpoint or an evidence bundle.

Each node (``host``, ``branch-0001``, ...) has a private key only it reads, and a public key
anyone may hold. Files live in ``<data_dir>/keys/identity/``: ``<name>.key`` (PEM PKCS#8,
mode 0600) and ``<name>.pub`` (PEM SubjectPublicKeyInfo).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError

#: The host's identity name; a branch's is :func:`branch_identity`.
HOST_IDENTITY = "host"


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "keys" / "identity"


def branch_identity(branch_id: str) -> str:
    return f"branch-{branch_id}"


def init_identities(data_dir: Path, branch_ids: Iterable[str], *, force: bool = False) -> None:
    """Create the host's and each branch's identity key pair (kept when present, unless
    ``force``). Deploying a branch elsewhere means copying it its own ``.key`` and the
    host's ``.pub``; the host needs its own ``.key`` and every branch's ``.pub``."""
    names = [HOST_IDENTITY, *(branch_identity(b) for b in branch_ids)]
    if force:
        for name in names:
            for suffix in (".key", ".pub"):
                (identity_dir(data_dir) / f"{name}{suffix}").unlink(missing_ok=True)
    for name in names:
        ensure_identity(data_dir, name)


def known_branch_keys(data_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every branch public key present in ``data_dir``, by branch id."""
    prefix = branch_identity("")
    return {
        path.stem.removeprefix(prefix): load_public(data_dir, path.stem)
        for path in sorted(identity_dir(data_dir).glob(f"{prefix}*.pub"))
    }


def branch_registry(data_dir: Path, branch_ids: Iterable[str]) -> Mapping[str, Ed25519PublicKey]:
    """The public identity key of each registered branch, by branch id.

    Raises:
        ConfigError: a branch's public key is missing or unusable.
    """
    return {b: load_public(data_dir, branch_identity(b)) for b in branch_ids}


def ensure_identity(data_dir: Path, name: str) -> Ed25519PrivateKey:
    """Load ``name``'s private key, creating the key pair on first use."""
    directory = identity_dir(data_dir)
    private_path = directory / f"{name}.key"
    if private_path.exists():
        return load_identity(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    (directory / f"{name}.pub").write_bytes(public_pem(key.public_key()))
    return key


def load_identity(data_dir: Path, name: str) -> Ed25519PrivateKey:
    """``name``'s private key.

    Raises:
        ConfigError: missing or not an Ed25519 key.
    """
    path = identity_dir(data_dir) / f"{name}.key"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read identity key {path.name}: {type(error).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path.name} is not an Ed25519 key")
    return key


def load_public(data_dir: Path, name: str) -> Ed25519PublicKey:
    """``name``'s public key.

    Raises:
        ConfigError: missing or not an Ed25519 key.
    """
    path = identity_dir(data_dir) / f"{name}.pub"
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read public key {path.name}: {type(error).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path.name} is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``key``'s signature over ``message``."""
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
