"""The crypto node's keys: generation, the key files, and the one class that holds them.

``data_dir/keys/crypto.json`` (mode 0600) holds the AES-128 base derivation key (BDK) with its
4-byte id, the PIN verification key (two-key TDES, odd parity), the decimalization table and
the key check values. ``data_dir/keys/pinpads-<branch>.json`` gives each terminal's PIN pad its
initial key id (BDK id + branch + terminal) and initial key, derived from the BDK: the branch
never sees the BDK.

Key check values (KCV), 6 hex digits: TDES keys encrypt a block of zeros (the classic
method); AES keys take the AES-CMAC of a 16-byte block of zeros, as ANSI X9.24-1-2017 requires
for AES (and as AWS Payment Cryptography reports it), cut to 3 bytes.

This is the first key setup, with keys in clear in a protected file. :class:`CryptoKeys` is the
only way the rest of the node reaches key material, so a later key store (TR-31 key blocks
under an LMK) replaces its loading, not its users.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from common import dukpt
from common.errors import ConfigError

KEYS_FORMAT = "branchnet-keys/1"
PINPADS_FORMAT = "branchnet-pinpads/1"
DEFAULT_DECIMALIZATION_TABLE = "0123456789012345"
_BDK_ID = re.compile(r"[0-9A-F]{8}")
_TABLE = re.compile(r"[0-9]{16}")
_BRANCH = re.compile(r"[0-9]{4}")


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def crypto_keys_path(data_dir: Path) -> Path:
    return keys_dir(data_dir) / "crypto.json"


def pinpads_path(data_dir: Path, branch_id: str) -> Path:
    return keys_dir(data_dir) / f"pinpads-{branch_id}.json"


# ---- key check values and parity ---------------------------------------------------------


def tdes_kcv(key: bytes) -> str:
    """KCV of a two- or three-key TDES key: encrypt 8 zero bytes, keep 3 bytes."""
    full = key + key[:8] if len(key) == 16 else key
    encrypted = Cipher(TripleDES(full), modes.ECB()).encryptor().update(bytes(8))
    return encrypted[:3].hex().upper()


def aes_kcv(key: bytes) -> str:
    """KCV of an AES key: AES-CMAC of 16 zero bytes, keep 3 bytes (X9.24-1-2017)."""
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def with_odd_parity(key: bytes) -> bytes:
    """``key`` with each byte's low bit set so the byte has an odd number of one-bits."""
    return bytes((b & 0xFE) | ((b >> 1).bit_count() + 1) % 2 for b in key)


def has_odd_parity(key: bytes) -> bool:
    return all(b.bit_count() % 2 == 1 for b in key)


# ---- the keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CryptoKeys:
    """Every key the crypto node holds. The repr shows ids and check values, never keys.

    ``home`` is the data directory the keys came from (None for keys made in memory); the HSM
    keeps its KSN replay marks there.
    """

    bdk_id: str
    bdk: bytes = field(repr=False)
    pvk: bytes = field(repr=False)
    decimalization_table: str = field(repr=False)
    key_version: int = 1
    pvki: str = "1"
    home: Path | None = None

    @property
    def bdk_kcv(self) -> str:
        return aes_kcv(self.bdk)

    @property
    def pvk_kcv(self) -> str:
        return tdes_kcv(self.pvk)

    @classmethod
    def generate(cls, *, home: Path | None = None) -> CryptoKeys:
        """Fresh random keys: a BDK and its id, a PVK with odd parity and distinct halves."""
        pvk = with_odd_parity(secrets.token_bytes(16))
        while pvk[:8] == pvk[8:]:  # K1 = K2 would be single DES
            pvk = with_odd_parity(secrets.token_bytes(16))
        return cls(
            bdk_id=secrets.token_hex(4).upper(),
            bdk=secrets.token_bytes(16),
            pvk=pvk,
            decimalization_table=DEFAULT_DECIMALIZATION_TABLE,
            home=home,
        )

    def initial_key_id(self, branch_id: str, terminal_id: str) -> bytes:
        """The initial key id of a terminal's PIN pad: BDK id, branch, terminal (8 bytes)."""
        if _BRANCH.fullmatch(branch_id) is None or not re.fullmatch(r"[0-9]{1,4}", terminal_id):
            raise ConfigError("a branch id is 4 digits and a terminal id 1 to 4 digits")
        return bytes.fromhex(self.bdk_id + branch_id + terminal_id.rjust(4, "0"))

    def pinpad_key(self, branch_id: str, terminal_id: str) -> tuple[bytes, bytes]:
        """The initial key id and initial key to load into a terminal's PIN pad."""
        initial_key_id = self.initial_key_id(branch_id, terminal_id)
        return initial_key_id, dukpt.initial_key(self.bdk, initial_key_id)

    def to_document(self) -> dict[str, Any]:
        return {
            "format": KEYS_FORMAT,
            "bdk": {
                "algorithm": "AES-128",
                "id": self.bdk_id,
                "key": self.bdk.hex().upper(),
                "kcv": self.bdk_kcv,
            },
            "pvk": {
                "algorithm": "TDES-2KEY",
                "version": self.key_version,
                "pvki": self.pvki,
                "key": self.pvk.hex().upper(),
                "kcv": self.pvk_kcv,
            },
            "decimalization_table": self.decimalization_table,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, home: Path | None = None) -> CryptoKeys:
        """Read and check keys; every problem is a :class:`ConfigError` without key bytes."""
        try:
            if document["format"] != KEYS_FORMAT:
                raise ConfigError(f"key file format is not {KEYS_FORMAT}")
            bdk_part, pvk_part = document["bdk"], document["pvk"]
            keys = cls(
                bdk_id=str(bdk_part["id"]),
                bdk=_key_bytes(bdk_part["key"], "BDK"),
                pvk=_key_bytes(pvk_part["key"], "PVK"),
                decimalization_table=str(document["decimalization_table"]),
                key_version=int(pvk_part["version"]),
                pvki=str(pvk_part["pvki"]),
                home=home,
            )
            bdk_kcv, pvk_kcv = str(bdk_part["kcv"]), str(pvk_part["kcv"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"key file is malformed ({type(error).__name__})") from None
        if _BDK_ID.fullmatch(keys.bdk_id) is None:
            raise ConfigError("the BDK id is 8 upper-case hex digits")
        if _TABLE.fullmatch(keys.decimalization_table) is None:
            raise ConfigError("the decimalization table is 16 decimal digits")
        if not re.fullmatch(r"[0-9]", keys.pvki):
            raise ConfigError("the PVK index is one decimal digit")
        if not has_odd_parity(keys.pvk):
            raise ConfigError("the PVK does not have odd parity")
        if keys.bdk_kcv != bdk_kcv.upper():
            raise ConfigError("the BDK does not match its key check value")
        if keys.pvk_kcv != pvk_kcv.upper():
            raise ConfigError("the PVK does not match its key check value")
        return keys


def _key_bytes(text: object, name: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[0-9A-Fa-f]{32}", text):
        raise ConfigError(f"the {name} is 32 hex digits")
    return bytes.fromhex(text)


# ---- files --------------------------------------------------------------------------------


def init_keys(
    data_dir: Path, branch_ids: Sequence[str], terminals: int, *, force: bool = False
) -> None:
    """Generate the crypto node's keys and each branch's PIN pad key file.

    Args:
        data_dir: where ``keys/`` is created (mode 0700; files 0600).
        branch_ids: the branches to issue PIN pads to.
        terminals: PIN pads per branch (terminal ids ``01``..).
        force: replace existing keys (old PIN pad files are removed: they no longer work).

    Raises:
        ConfigError: keys exist and ``force`` is not set.
    """
    path = crypto_keys_path(data_dir)
    if path.exists() and not force:
        raise ConfigError(
            f"keys already exist in {path.parent}; replace them with --force (force=True)"
        )
    if not 1 <= terminals <= 99:
        raise ConfigError("a branch has 1 to 99 terminals")
    keys = CryptoKeys.generate(home=data_dir)
    directory = keys_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for stale in directory.glob("pinpads-*.json"):
        stale.unlink()
    _write_private(path, keys.to_document())
    issue_pinpads(data_dir, keys, branch_ids, terminals)


def issue_pinpads(
    data_dir: Path, keys: CryptoKeys, branch_ids: Sequence[str], terminals: int
) -> None:
    """Write ``pinpads-<branch>.json`` for each branch (same keys each time: derived)."""
    for branch_id in branch_ids:
        pads: dict[str, dict[str, str]] = {}
        for number in range(1, terminals + 1):
            terminal_id = f"{number:02d}"
            initial_key_id, initial_key = keys.pinpad_key(branch_id, terminal_id)
            pads[terminal_id] = {
                "initial_key_id": initial_key_id.hex().upper(),
                "initial_key": initial_key.hex().upper(),
            }
        document = {"format": PINPADS_FORMAT, "branch_id": branch_id, "pads": pads}
        _write_private(pinpads_path(data_dir, branch_id), document)


def load_crypto_keys(data_dir: Path) -> CryptoKeys:
    """The keys in ``data_dir/keys/crypto.json``, checked against their KCVs and parity.

    Raises:
        ConfigError: no key file, or one that is unreadable, malformed or inconsistent.
    """
    path = crypto_keys_path(data_dir)
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no keys in {path.parent}; run `branchnet keys init`") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not JSON") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return CryptoKeys.from_document(document, home=data_dir)


def _write_private(path: Path, document: Mapping[str, Any]) -> None:
    """Write JSON readable by the owner only, atomically (temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(json.dumps(document, indent=1).encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
