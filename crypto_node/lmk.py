"""The local master key (LMK): AES-256, formed from components under dual control.

Key custodians each hold one *component* (32 random bytes) with its key check value (KCV).
The LMK is the XOR of two or more components; no custodian alone knows anything about it.
The crypto node combines the components at start — each entered with its KCV, which must
match — and holds the LMK in memory only. Every other key lives outside the node as a TR-31
key block wrapped under the LMK (see :mod:`crypto_node.tr31`).

Component files (``keys/lmk/component-<n>.json``) are how the *training setup* hands the
components over: ``branchnet keys init`` writes two of them next to the key store so a
simulation runs without a ceremony. In production each custodian keeps their component apart
(``branchnet keys ceremony`` prints them; ``branchnet crypto --lmk-prompt`` asks for them).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crypto_node.errors import LmkError
from crypto_node.kcv import aes_kcv

LMK_BYTES = 32
MIN_COMPONENTS = 2
COMPONENT_FORMAT = "branchnet-lmk-component/1"
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True, slots=True)
class Component:
    """One custodian's share of the LMK. The repr shows the KCV only."""

    value: bytes = field(repr=False)

    @property
    def kcv(self) -> str:
        return aes_kcv(self.value)

    @classmethod
    def generate(cls) -> Component:
        return cls(secrets.token_bytes(LMK_BYTES))

    @classmethod
    def entered(cls, text: str, kcv: str) -> Component:
        """A component as a custodian enters it: 64 hex digits and the KCV they were given.

        Raises:
            LmkError: not 64 hex digits, or the KCV does not match (a typing mistake).
        """
        text = text.strip().replace(" ", "")
        if _HEX64.fullmatch(text) is None:
            raise LmkError("an LMK component is 64 hex digits")
        component = cls(bytes.fromhex(text))
        if component.kcv != kcv.strip().upper():
            raise LmkError("the LMK component does not match its KCV")
        return component


class Lmk:
    """The combined master key; its key bytes are reachable only inside the crypto node."""

    __slots__ = ("_key",)

    def __init__(self, components: Sequence[Component]) -> None:
        if len(components) < MIN_COMPONENTS:
            raise LmkError(f"an LMK is formed from at least {MIN_COMPONENTS} components")
        if len({c.value for c in components}) != len(components):
            raise LmkError("the same LMK component was entered twice")
        key = bytes(LMK_BYTES)
        for component in components:
            key = bytes(a ^ b for a, b in zip(key, component.value, strict=True))
        self._key = key

    def __repr__(self) -> str:
        return f"Lmk(kcv={self.kcv})"

    @property
    def kcv(self) -> str:
        return aes_kcv(self._key)

    @property
    def key(self) -> bytes:
        """The LMK itself, the key block protection key of every stored key."""
        return self._key


def lmk_dir(data_dir: Path) -> Path:
    return data_dir / "keys" / "lmk"


def component_path(data_dir: Path, number: int) -> Path:
    return lmk_dir(data_dir) / f"component-{number}.json"


def component_document(number: int, component: Component) -> dict[str, object]:
    return {
        "format": COMPONENT_FORMAT,
        "number": number,
        "component": component.value.hex().upper(),
        "kcv": component.kcv,
    }


def read_component(path: Path) -> Component:
    """A component file, checked against the KCV written with it.

    Raises:
        LmkError: missing, unreadable, malformed or not matching its KCV.
    """
    try:
        document = json.loads(path.read_bytes())
        if document["format"] != COMPONENT_FORMAT:
            raise LmkError(f"{path.name} is not an LMK component file")
        return Component.entered(str(document["component"]), str(document["kcv"]))
    except FileNotFoundError:
        raise LmkError(f"no LMK component {path.name}; run `branchnet keys init`") from None
    except OSError as error:
        raise LmkError(f"cannot read {path.name}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise LmkError(f"{path.name} is not a well-formed LMK component file") from None


def load_lmk(data_dir: Path) -> Lmk:
    """The LMK combined from the component files of ``data_dir`` (the training setup)."""
    paths = sorted(lmk_dir(data_dir).glob("component-*.json"))
    if not paths:
        raise LmkError(f"no LMK components in {lmk_dir(data_dir)}; run `branchnet keys init`")
    return Lmk([read_component(path) for path in paths])
