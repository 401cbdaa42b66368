"""Fixtures of the host tests: an embedded broker and a real crypto node on it.

A module provides ``keys_dir`` (its branches and terminals differ).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.embedded_bus import EmbeddedBroker, EmbeddedBus
from crypto_node import CryptoService, Hsm, load_crypto_keys


async def connected(broker: EmbeddedBroker) -> EmbeddedBus:
    """A connected bus on ``broker``."""
    bus = broker.connect()
    await bus.connect()
    return bus


@pytest.fixture
def broker() -> EmbeddedBroker:
    return EmbeddedBroker()


@pytest.fixture
async def crypto(broker: EmbeddedBroker, keys_dir: Path) -> AsyncIterator[CryptoService]:
    """The crypto node with ``keys_dir``'s keys, on ``broker``."""
    bus = await connected(broker)
    service = CryptoService(bus, Hsm(load_crypto_keys(keys_dir), persist=False))
    await service.start()
    yield service
    await service.stop()
    await bus.close()
