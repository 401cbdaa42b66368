"""Fixtures the crypto node's tests share: fresh keys, an HSM over them, one PIN pad."""

from __future__ import annotations

import pytest

from branch_node.pinpad import PinPad
from crypto_node import CryptoKeys, Hsm


@pytest.fixture
def keys() -> CryptoKeys:
    return CryptoKeys.generate()


@pytest.fixture
def hsm(keys: CryptoKeys) -> Hsm:
    return Hsm(keys, persist=False)


@pytest.fixture
def pad(keys: CryptoKeys) -> PinPad:
    return PinPad(*keys.pinpad_key("0001", "01"))
