"""The LMK: components with KCVs, dual control, and the training setup's component files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import ConfigError
from crypto_node import init_keys, load_crypto_keys
from crypto_node.errors import LmkError
from crypto_node.kcv import aes_kcv
from crypto_node.lmk import Component, Lmk, component_path, load_lmk


def test_the_lmk_is_the_xor_of_its_components_and_needs_two() -> None:
    first, second, third = (Component.generate() for _ in range(3))
    lmk = Lmk([first, second, third])
    xor = bytes(a ^ b ^ c for a, b, c in zip(first.value, second.value, third.value, strict=True))
    assert lmk.key == xor and lmk.kcv == aes_kcv(xor)
    assert Lmk([third, first, second]).kcv == lmk.kcv  # order does not matter
    with pytest.raises(LmkError, match="at least 2"):
        Lmk([first])
    with pytest.raises(LmkError, match="twice"):
        Lmk([first, first])


def test_a_component_is_entered_with_its_kcv() -> None:
    component = Component.generate()
    text = component.value.hex()
    spaced = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    assert Component.entered(spaced, component.kcv.lower()) == component
    with pytest.raises(LmkError, match="KCV"):
        Component.entered(text, "000000")
    with pytest.raises(LmkError, match="64 hex"):
        Component.entered(text[:-2], component.kcv)


def test_the_crypto_node_can_be_given_the_lmk_instead_of_component_files(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    documents = [json.loads(component_path(tmp_path, n).read_text()) for n in (1, 2)]
    components = [Component.entered(d["component"], d["kcv"]) for d in documents]
    for n in (1, 2):
        component_path(tmp_path, n).unlink()
    with pytest.raises(LmkError, match="no LMK components"):
        load_lmk(tmp_path)
    keys = load_crypto_keys(tmp_path, Lmk(components))
    assert keys.lmk.kcv == Lmk(components).kcv
    with pytest.raises(ConfigError, match="another LMK"):
        load_crypto_keys(tmp_path, Lmk([Component.generate(), Component.generate()]))
