"""The teller console as a subprocess against a network (crypto node + host over RabbitMQ)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from branchnet.buses import open_bus
from branchnet.network import ensure_keys
from branchnet.scenarios import CHEN, STRANGER, ZHANG
from common.bus import Bus
from crypto_node import CryptoService, Hsm, load_crypto_keys
from host_node import HostService
from host_node.guard import Guard

pytestmark = pytest.mark.rabbitmq
BRANCHNET = str(Path(sys.executable).parent / "branchnet")


@pytest.fixture
async def network(tmp_path: Path, amqp_url: str) -> AsyncIterator[Path]:
    """A crypto node and a host for branch 0001 on RabbitMQ; no branch workload."""
    ensure_keys(tmp_path, ["0001"], 2)
    buses: list[Bus] = [open_bus(amqp_url, embedded=None, name=n) for n in ("crypto", "host")]
    for bus in buses:
        await bus.connect()
    crypto = CryptoService(buses[0], Hsm(load_crypto_keys(tmp_path)))
    guard = Guard.load(tmp_path, ["0001"])  # as `branchnet host` runs: sealed frames only
    host = HostService(buses[1], tmp_path, branch_ids=["0001"], guard=guard)
    await crypto.start()
    await host.start()
    try:
        yield tmp_path
    finally:
        await host.stop()
        await crypto.stop()
        for bus in buses:
            await bus.close()


async def teller(
    data_dir: Path, amqp_url: str, *args: str, pins: str = "", plain: bool = False
) -> Any:
    env = {**os.environ, "BRANCHNET_AMQP_URL": amqp_url, "BRANCHNET_DATA_DIR": str(data_dir)}
    flags = ["--pin-stdin"] + ([] if plain else ["--json"])
    process = await asyncio.create_subprocess_exec(
        BRANCHNET, "teller", *flags, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(pins.encode()), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode() if plain else json.loads(out)


async def test_a_trainer_shows_the_large_cash_rules(network: Path, amqp_url: str) -> None:
    opened = await teller(
        network, amqp_url, "open-account", "--name", "陈某", "--customer-id", CHEN.number,
        "--deposit", "600000", pins="135790\n",
    )  # fmt: skip
    assert opened["result"] == "00" and opened["balance"] == 60_000_000
    account = opened["account"]
    taken = await teller(
        network, amqp_url, "withdraw", "--account", account, "--amount", "300000",
        "--withdrawer-id", ZHANG.number, "--holder-id", STRANGER.number, pins="135790\n",
    )  # fmt: skip
    assert (taken["result"], taken["rule"]) == ("77", "large_cash_identity")
    line = await teller(
        network, amqp_url, "balance", "--account", account, pins="135790\n", plain=True
    )
    assert line.startswith("00 approved") and "balance 600,000.00 CNY" in line
    frozen = await teller(
        network, amqp_url, "freeze", "--account", account, "--amount", "1000",
        "--supervisor", "S000101", "--authority", "(2002)京0101执1号",
    )  # fmt: skip
    assert frozen["result"] == "00" and frozen["available"] == 59_900_000
    refused = await teller(
        network, amqp_url, "unfreeze", "--account", account, "--authority", "(2002)京0101执1号",
    )  # fmt: skip
    assert (refused["result"], refused["rule"]) == ("63", "supervisor_authorisation")
    alone = await teller(
        network, amqp_url, "customer-query", "--account", account, "--purpose", "对账",
    )  # fmt: skip
    assert (alone["result"], alone["rule"]) == ("63", "supervisor_authorisation")
    queried = await teller(
        network, amqp_url, "--staff", "A000101", "--role", "auditor",
        "customer-query", "--account", account, "--purpose", "annual audit",
    )  # fmt: skip
    assert (queried["result"], queried["balance"]) == ("00", 60_000_000)
    claimed = await teller(
        network, amqp_url, "--staff", "A000101", "--role", "supervisor", "deposit",
        "--account", account, "--amount", "1",
    )  # fmt: skip
    assert (claimed["result"], claimed["rule"]) == ("58", "staff_role")


async def test_a_teller_cannot_sign_as_supervisor_without_a_staff_key(
    network: Path, amqp_url: str
) -> None:
    env = {**os.environ, "BRANCHNET_AMQP_URL": amqp_url, "BRANCHNET_DATA_DIR": str(network)}
    process = await asyncio.create_subprocess_exec(
        BRANCHNET, "teller", "unlock-pin", "--account", "6200010100000011",
        "--supervisor", "T000101",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(b""), 60)
    assert process.returncode != 0
    assert b"staff-T000101.key" in err and b"PRIVATE KEY" not in err


async def test_a_pin_that_the_pad_refuses_is_an_error_not_a_request(
    network: Path, amqp_url: str
) -> None:
    env = {**os.environ, "BRANCHNET_AMQP_URL": amqp_url, "BRANCHNET_DATA_DIR": str(network)}
    process = await asyncio.create_subprocess_exec(
        BRANCHNET, "teller", "--pin-stdin", "balance", "--account", "6200010100000011",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(b"12\n"), 60)
    assert process.returncode == 1
    assert b"PIN not accepted" in err and b"12\n" not in err
