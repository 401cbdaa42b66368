"""How the host protects PINs: Visa PVV when configured, and the software PIN mode."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from branch_node.pinpad import load_pinpads
from common.embedded_bus import EmbeddedBroker, EmbeddedBus
from common.errors import ConfigError
from crypto_node import CryptoService, Hsm, init_keys, load_crypto_keys, rotate_keys
from host_node import HostConfig, HostService, ledger_path
from host_node.pin_local import local_marks_path
from tests.host_node.fakes import BranchDesk, Teller, account_no

BRANCHES = ("0001",)
A = account_no(1)
PIN, WRONG = "975319", "864208"


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    init_keys(home, BRANCHES, 1)
    return home


async def _connected(broker: EmbeddedBroker) -> EmbeddedBus:
    bus = broker.connect()
    await bus.connect()
    return bus


def _stored_method(data_dir: Path, number: str) -> tuple[str, int]:
    db = sqlite3.connect(ledger_path(data_dir))
    try:
        query = "SELECT pin_method, pin_key_version FROM accounts WHERE number = ?"
        method, version = db.execute(query, (number,)).fetchone()
    finally:
        db.close()
    return method, version


async def _a_customer_day(desk: BranchDesk, teller: Teller) -> list[str]:
    opening = teller.open_account(A, deposit=5_000, pin=teller.pin(PIN, A), id_number="X1")
    requests = [
        opening,
        teller.withdraw(A, 1_000, teller.pin(PIN, A)),
        teller.withdraw(A, 1_000, teller.pin(WRONG, A)),
        teller.balance(A, teller.pin(PIN, A)),
    ]
    replies = [(await desk.ask([request]))[0] for request in requests]
    return [reply.result.value for reply in replies]


@pytest.fixture
async def crypto(keys_dir: Path) -> AsyncIterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    service = CryptoService(await _connected(broker), Hsm(load_crypto_keys(keys_dir)))
    await service.start()
    yield broker
    await service.stop()


async def test_the_host_records_visa_pvvs_when_configured(
    crypto: EmbeddedBroker, keys_dir: Path, tmp_path: Path
) -> None:
    config = HostConfig(crypto_timeout_s=2.0, pin_method="visa_pvv")
    host = HostService(await _connected(crypto), tmp_path, branch_ids=BRANCHES, config=config)
    await host.start()
    desk = BranchDesk(await _connected(crypto))
    await desk.start()
    try:
        teller = Teller(pad=load_pinpads(keys_dir, "0001")["01"])
        assert await _a_customer_day(desk, teller) == ["00", "00", "55", "00"]
    finally:
        await host.stop()
    assert _stored_method(tmp_path, A) == ("visa_pvv", 1)


async def test_software_pin_mode_needs_no_crypto_node(keys_dir: Path, tmp_path: Path) -> None:
    broker = EmbeddedBroker()  # no crypto node on this bus
    data_dir = tmp_path / "host"
    data_dir.mkdir()
    (data_dir / "keys").symlink_to(keys_dir / "keys")  # the host's own copy of the key files
    config = HostConfig(crypto_timeout_s=0.5, pin_mode="host")
    host = HostService(await _connected(broker), data_dir, branch_ids=BRANCHES, config=config)
    await host.start()
    desk = BranchDesk(await _connected(broker))
    await desk.start()
    try:
        teller = Teller(pad=load_pinpads(keys_dir, "0001")["01"])
        assert await _a_customer_day(desk, teller) == ["00", "00", "55", "00"]
        assert host.statistics().pin_pending == 0
    finally:
        await host.stop()
    assert _stored_method(data_dir, A) == ("ibm3624", 1)
    assert local_marks_path(data_dir).exists()


async def test_software_pin_mode_without_a_key_file_refuses_to_start(tmp_path: Path) -> None:
    broker = EmbeddedBroker()
    config = HostConfig(pin_mode="host")
    host = HostService(await _connected(broker), tmp_path, branch_ids=BRANCHES, config=config)
    with pytest.raises(ConfigError, match="keys init"):
        await host.start()
    await host.store.close()


async def test_accounts_keep_verifying_across_a_pvk_and_bdk_rotation(
    keys_dir: Path, tmp_path: Path
) -> None:
    broker = EmbeddedBroker()
    config = HostConfig(crypto_timeout_s=2.0)
    host = HostService(await _connected(broker), tmp_path, branch_ids=BRANCHES, config=config)
    await host.start()
    desk = BranchDesk(await _connected(broker))
    await desk.start()
    crypto_bus = await _connected(broker)
    crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(keys_dir)))
    await crypto.start()
    try:
        old_pad = load_pinpads(keys_dir, "0001")["01"]
        teller = Teller(pad=old_pad)
        opening = teller.open_account(A, deposit=5_000, pin=teller.pin(PIN, A), id_number="X1")
        assert (await desk.ask([opening]))[0].result.value == "00"
        await crypto.stop()
        rotate_keys(keys_dir, "pvk")
        rotate_keys(keys_dir, "bdk", BRANCHES, 1)
        crypto = CryptoService(crypto_bus, Hsm(load_crypto_keys(keys_dir)))
        await crypto.start()
        new_teller = Teller(start=100, pad=load_pinpads(keys_dir, "0001")["01"])
        # the old account (PVK generation 1) verifies with an old pad and a reissued one
        for someone in (teller, new_teller):
            withdrawal = someone.withdraw(A, 100, someone.pin(PIN, A))
            assert (await desk.ask([withdrawal]))[0].result.value == "00"
        change = new_teller.change_pin(A, new_teller.pin(PIN, A), new_teller.pin(WRONG, A))
        assert (await desk.ask([change]))[0].result.value == "00"
        withdrawal = new_teller.withdraw(A, 100, new_teller.pin(WRONG, A))
        assert (await desk.ask([withdrawal]))[0].result.value == "00"
    finally:
        await crypto.stop()
        await host.stop()
    assert _stored_method(tmp_path, A) == ("ibm3624", 2)  # the new PIN's value is generation 2
