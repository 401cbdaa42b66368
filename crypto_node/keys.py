"""The crypto node's keys: the key store file, generations, PIN pad issue, and :class:`CryptoKeys`.

``data_dir/keys/crypto.json`` (mode 0600) is the *key store*: every key as a TR-31 version D
key block wrapped under the LMK (:mod:`crypto_node.lmk`), with its KCV, plus the non-secret
parameters (decimalization table, which generations are current). Nothing in it is a clear
key; ``branchnet keys list`` reads it without the LMK. Keys, by name:

================== ===== ====== =====================================================
name               usage  alg.   what for
================== ===== ====== =====================================================
``bdk/<id>``       B0    AES    AES DUKPT base derivation key, one per generation
``pvk-ibm/<v>``    V1    TDES   IBM 3624 offsets, generation ``v``
``pvk-visa/<v>``   V2    TDES   Visa PVVs, generation ``v`` (PVKI = ``v`` mod 10)
``kek/main``       K0    AES    wraps keys exported to / imported from a partner
``zpk/legacy``     P0    TDES   zone PIN key of a legacy branch (formats 0 and 3)
================== ===== ====== =====================================================

Rotation (:func:`rotate_keys`) adds a generation and makes it current; older generations
stay, so accounts whose verification value records an older key version still verify, and
PIN pads of an older BDK still work until reissued.

``data_dir/keys/pinpads-<branch>.json`` gives each terminal's PIN pad its initial key id
(BDK id + branch + terminal) and initial key, derived from the current BDK: the branch never
sees the BDK.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from common import dukpt
from common.errors import ConfigError
from crypto_node.errors import CryptoNodeError
from crypto_node.kcv import aes_kcv, has_odd_parity, tdes_kcv, with_odd_parity
from crypto_node.keyring import KeyRing, StoredKey, open_block, seal
from crypto_node.lmk import Component, Lmk, component_document, component_path, load_lmk
from crypto_node.tr31 import KeyBlockHeader

__all__ = [
    "CryptoKeys",
    "aes_kcv",
    "has_odd_parity",
    "init_keys",
    "issue_pinpads",
    "load_crypto_keys",
    "rotate_keys",
    "tdes_kcv",
    "with_odd_parity",
]

KEYS_FORMAT = "branchnet-keys/2"
PINPADS_FORMAT = "branchnet-pinpads/1"
DEFAULT_DECIMALIZATION_TABLE = "0123456789012345"
_BDK_ID = re.compile(r"[0-9A-F]{8}")
_TABLE = re.compile(r"[0-9]{16}")
_BRANCH = re.compile(r"[0-9]{4}")
Kind = Literal["bdk", "pvk"]


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def crypto_keys_path(data_dir: Path) -> Path:
    return keys_dir(data_dir) / "crypto.json"


def pinpads_path(data_dir: Path, branch_id: str) -> Path:
    return keys_dir(data_dir) / f"pinpads-{branch_id}.json"


def bdk_name(bdk_id: str) -> str:
    return f"bdk/{bdk_id}"


def pvk_name(method: str, version: int) -> str:
    """The key name of a PVK generation; ``method`` is ``ibm3624`` or ``visa_pvv``."""
    return f"pvk-{'visa' if method == 'visa_pvv' else 'ibm'}/{version}"


def random_tdes_key() -> bytes:
    """A two-key TDES key with odd parity and distinct halves (K1 = K2 would be single DES)."""
    key = with_odd_parity(secrets.token_bytes(16))
    while key[:8] == key[8:]:
        key = with_odd_parity(secrets.token_bytes(16))
    return key


# ---- the keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CryptoKeys:
    """Every key the crypto node holds, opened under the LMK. The repr shows ids, never keys.

    ``home`` is the data directory the keys came from (None for keys made in memory); the HSM
    keeps its KSN replay marks there. ``bdk_id`` and ``key_version`` name the current BDK and
    PVK generations.
    """

    ring: KeyRing = field(repr=False)
    lmk: Lmk = field(repr=False, compare=False)
    bdk_id: str
    key_version: int = 1
    decimalization_table: str = field(default=DEFAULT_DECIMALIZATION_TABLE, repr=False)
    home: Path | None = None

    @property
    def bdk(self) -> bytes:
        """The current BDK."""
        return self.ring.use(bdk_name(self.bdk_id), "B0", "derive")

    @property
    def pvk(self) -> bytes:
        """The current IBM 3624 PVK."""
        return self.ring.get(pvk_name("ibm3624", self.key_version)).key

    @property
    def pvki(self) -> str:
        """The Visa PVK index of the current generation."""
        return pvki_of(self.key_version)

    @property
    def bdk_kcv(self) -> str:
        return aes_kcv(self.bdk)

    @property
    def pvk_kcv(self) -> str:
        return tdes_kcv(self.pvk)

    @classmethod
    def generate(cls, *, home: Path | None = None, lmk: Lmk | None = None) -> CryptoKeys:
        """Fresh random keys (generation 1) under ``lmk`` (a random LMK when None)."""
        if lmk is None:
            lmk = Lmk([Component.generate(), Component.generate()])
        kbpk = lmk.key
        bdk_id = secrets.token_hex(4).upper()
        keys = [
            seal(kbpk, bdk_name(bdk_id), KeyBlockHeader("B0", "A", "X", "01", "N"),
                 secrets.token_bytes(16)),
            seal(kbpk, "kek/main", KeyBlockHeader("K0", "A", "B", "01", "N"),
                 secrets.token_bytes(32)),
            seal(kbpk, "zpk/legacy", KeyBlockHeader("P0", "T", "B", "01", "E"),
                 random_tdes_key()),
            *_pvks(kbpk, 1),
        ]  # fmt: skip
        ring = KeyRing({stored.name: stored for stored in keys})
        return cls(ring=ring, lmk=lmk, bdk_id=bdk_id, home=home)

    def rotated(self, kind: Kind) -> CryptoKeys:
        """These keys with a new generation of ``kind`` added and made current."""
        kbpk = self.lmk.key
        if kind == "pvk":
            version = self.key_version + 1
            ring = self.ring
            for stored in _pvks(kbpk, version):
                ring = ring.with_key(stored)
            return replace(self, ring=ring, key_version=version)
        bdk_id = secrets.token_hex(4).upper()
        while bdk_name(bdk_id) in self.ring:
            bdk_id = secrets.token_hex(4).upper()
        generations = sum(stored.header.usage == "B0" for stored in self.ring)
        header = KeyBlockHeader("B0", "A", "X", f"{(generations + 1) % 100:02d}", "N")
        stored = seal(kbpk, bdk_name(bdk_id), header, secrets.token_bytes(16))
        return replace(self, ring=self.ring.with_key(stored), bdk_id=bdk_id)

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
        """The key store: key blocks and KCVs, never a clear key."""
        return {
            "format": KEYS_FORMAT,
            "lmk_kcv": self.lmk.kcv,
            "current": {"bdk": self.bdk_id, "pvk": self.key_version},
            "decimalization_table": self.decimalization_table,
            "keys": [
                {"name": stored.name, "block": stored.block, "kcv": stored.kcv}
                for stored in sorted(self.ring, key=lambda stored: stored.name)
            ],
        }

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], lmk: Lmk, *, home: Path | None = None
    ) -> CryptoKeys:
        """Open and check a key store; every problem is a :class:`ConfigError` without keys."""
        try:
            if document["format"] != KEYS_FORMAT:
                raise ConfigError(f"key store format is not {KEYS_FORMAT}")
            if str(document["lmk_kcv"]).upper() != lmk.kcv:
                raise ConfigError("the key store was made under another LMK (LMK KCV differs)")
            entries = [(str(e["name"]), str(e["block"]), str(e["kcv"])) for e in document["keys"]]
            current = document["current"]
            bdk_id, version = str(current["bdk"]), int(current["pvk"])
            table = str(document["decimalization_table"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"key store is malformed ({type(error).__name__})") from None
        keys: dict[str, StoredKey] = {}
        for name, block, kcv in entries:
            try:
                stored = open_block(lmk.key, block, name)
            except CryptoNodeError as error:
                raise ConfigError(f"key {name}: {error}") from None
            if stored.kcv != kcv.upper():
                raise ConfigError(f"key {name} does not match its key check value")
            if stored.header.algorithm == "T" and not has_odd_parity(stored.key):
                raise ConfigError(f"key {name} does not have odd parity")
            keys[name] = stored
        if _BDK_ID.fullmatch(bdk_id) is None or bdk_name(bdk_id) not in keys:
            raise ConfigError("the current BDK is missing from the key store")
        if any(pvk_name(m, version) not in keys for m in ("ibm3624", "visa_pvv")):
            raise ConfigError("the current PVK generation is missing from the key store")
        if _TABLE.fullmatch(table) is None:
            raise ConfigError("the decimalization table is 16 decimal digits")
        return cls(KeyRing(keys), lmk, bdk_id, version, table, home)


def pvki_of(version: int) -> str:
    """The one-digit Visa PVK index of a PVK generation."""
    return str(version % 10)


def _pvks(kbpk: bytes, version: int) -> list[StoredKey]:
    label = f"{version % 100:02d}"
    return [
        seal(kbpk, pvk_name("ibm3624", version), KeyBlockHeader("V1", "T", "C", label, "N"),
             random_tdes_key()),
        seal(kbpk, pvk_name("visa_pvv", version), KeyBlockHeader("V2", "T", "C", label, "N"),
             random_tdes_key()),
    ]  # fmt: skip


# ---- files --------------------------------------------------------------------------------


def init_keys(
    data_dir: Path, branch_ids: Sequence[str], terminals: int, *, force: bool = False
) -> None:
    """The training setup: two LMK component files, the key store, PIN pad key files.

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
    components = [Component.generate(), Component.generate()]
    directory = keys_dir(data_dir)
    for folder in (directory, directory / "lmk"):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    for stale in [*directory.glob("pinpads-*.json"), *(directory / "lmk").glob("component-*")]:
        stale.unlink()
    for number, component in enumerate(components, start=1):
        write_private(component_path(data_dir, number), component_document(number, component))
    keys = CryptoKeys.generate(home=data_dir, lmk=Lmk(components))
    save_keys(data_dir, keys)
    issue_pinpads(data_dir, keys, branch_ids, terminals)


def save_keys(data_dir: Path, keys: CryptoKeys) -> None:
    """Write the key store (key blocks only)."""
    write_private(crypto_keys_path(data_dir), keys.to_document())


def rotate_keys(
    data_dir: Path, kind: Kind, branch_ids: Sequence[str] = (), terminals: int = 0
) -> CryptoKeys:
    """Add a generation of the BDK or PVKs; a new BDK reissues the branches' PIN pads."""
    keys = load_crypto_keys(data_dir).rotated(kind)
    save_keys(data_dir, keys)
    if kind == "bdk" and branch_ids:
        issue_pinpads(data_dir, keys, branch_ids, terminals)
    return keys


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
        write_private(pinpads_path(data_dir, branch_id), document)


def read_key_store(data_dir: Path) -> dict[str, Any]:
    """The key store document (key blocks, KCVs), without opening any key.

    Raises:
        ConfigError: no key store, or one that is unreadable or not a JSON object.
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
    return document


def load_crypto_keys(data_dir: Path, lmk: Lmk | None = None) -> CryptoKeys:
    """The keys of ``data_dir``'s key store, opened under ``lmk``.

    Args:
        lmk: the master key entered at start; None combines the component files of
            ``data_dir/keys/lmk`` (the training setup).

    Raises:
        ConfigError: no key store, or one that is unreadable, malformed, altered or made
            under another LMK; LMK components missing or not matching their KCVs.
    """
    document = read_key_store(data_dir)
    if lmk is None:
        try:
            lmk = load_lmk(data_dir)
        except CryptoNodeError as error:
            raise ConfigError(str(error)) from None
    return CryptoKeys.from_document(document, lmk, home=data_dir)


def write_private(path: Path, document: Mapping[str, Any]) -> None:
    """Write JSON readable by the owner only, atomically (temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(json.dumps(document, indent=1).encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
