"""Replication to the standby on the embedded bus: sync, async, a silent standby, a wiped one,
promotion and the epoch fence — with the real crypto node and PIN pads."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace as dc_replace
from pathlib import Path

import pytest

from branch_node.pinpad import load_pinpads
from common.bus import Message
from common.clock import SimulationClock
from common.embedded_bus import EmbeddedBroker
from common.frames import FrameKind, build_frame, encode_frame
from common.identity import ensure_identity, identity_dir, load_public
from common.topology import DEAD_QUEUE, DEFAULT_EXCHANGE, DR_REPLICATION
from crypto_node import CryptoService, init_keys
from host_node import HostConfig, HostService
from host_node.audit import audit_store
from host_node.checkpoint import SIGNER
from host_node.policy import Policy
from host_node.replication import FencedError
from host_node.standby import StandbyService, promote
from host_node.store import copy_store, ledger_path
from tests.host_node.conftest import connected
from tests.host_node.fakes import BranchDesk, Teller, account_no, now

BRANCHES = ("0001",)
PIN = "975319"
SYNC = HostConfig(crypto_timeout_s=2.0, replication="sync", standby_timeout_s=0.5)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("keys")
    init_keys(home, BRANCHES, 1)
    return home


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A primary's and a standby's data directories sharing the host identity key."""
    primary, standby = tmp_path / "primary", tmp_path / "standby"
    ensure_identity(primary, SIGNER)
    shutil.copytree(identity_dir(primary), identity_dir(standby))
    return primary, standby


class Site:
    """Starts and stops hosts and standbys on one broker, closing everything at the end."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.running: list[HostService | StandbyService] = []

    async def host(
        self, data_dir: Path, config: HostConfig = SYNC, clock: Callable[[], dt.datetime] = now
    ) -> HostService:
        host = HostService(
            await connected(self.broker), data_dir, branch_ids=BRANCHES, config=config, clock=clock
        )
        await host.start()
        self.running.append(host)
        return host

    async def standby(self, data_dir: Path) -> StandbyService:
        standby = StandbyService(await connected(self.broker), data_dir)
        await standby.start()
        self.running.append(standby)
        return standby

    async def stop(self, node: HostService | StandbyService) -> None:
        await node.stop()
        await node.bus.close()
        self.running.remove(node)


@pytest.fixture
async def site(broker: EmbeddedBroker, crypto: CryptoService) -> AsyncIterator[Site]:
    site = Site(broker)
    yield site
    for node in reversed(site.running):
        await node.stop()
        await node.bus.close()


@pytest.fixture
async def desk(broker: EmbeddedBroker) -> BranchDesk:
    desk = BranchDesk(await connected(broker))
    await desk.start()
    await desk.watch_dead_letters()
    return desk


@pytest.fixture
def teller(keys_dir: Path) -> Teller:
    return Teller(pad=load_pinpads(keys_dir, "0001")["01"])


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def rows(data_dir: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(ledger_path(data_dir))
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def same_books(primary: Path, standby: Path) -> None:
    for query in (
        "SELECT seq, body, hash FROM journal ORDER BY seq",
        "SELECT number, balance, status, pin_value, pin_tries, interest_units FROM accounts "
        "ORDER BY number",
        "SELECT key, value FROM host_state ORDER BY key",
        "SELECT customer_id, old_tier, new_tier, assets, at FROM tier_changes ORDER BY id",
        "SELECT request_id, reply FROM idempotency ORDER BY request_id",
        "SELECT journal_seq, record, pin_outcome, documents FROM evidence ORDER BY journal_seq",
    ):
        assert rows(primary, query) == rows(standby, query), query


async def day(desk: BranchDesk, teller: Teller, serial: int = 1) -> None:
    account = account_no(serial)
    replies = await desk.ask(
        [teller.open_account(account, deposit=10_000, pin=teller.pin(PIN, account))]
    )
    assert [r.result.value for r in replies] == ["00"]
    replies = await desk.ask(
        [teller.deposit(account, 500), teller.withdraw(account, 700, teller.pin(PIN, account))]
    )
    assert [r.result.value for r in replies] == ["00", "00"]


async def test_in_sync_mode_the_standby_holds_every_answered_entry(
    site: Site, desk: BranchDesk, teller: Teller, dirs: tuple[Path, Path]
) -> None:
    primary_dir, standby_dir = dirs
    standby = await site.standby(standby_dir)
    host = await site.host(primary_dir)
    await day(desk, teller)
    # the replies came only after the standby held the entries: RPO 0
    assert standby.store.head == host.store.head and host.store.head.seq == 3
    assert host.replicator is not None and host.replicator.lag == 0
    await site.stop(host)  # ships the shutdown checkpoint
    await until(lambda: standby._last_checkpoint == 3)
    await site.stop(standby)
    same_books(primary_dir, standby_dir)
    audit = audit_store(ledger_path(standby_dir), load_public(standby_dir, SIGNER))
    assert audit.ok and audit.signed_to == 3, audit.findings


async def test_the_standby_closes_the_books_with_the_primary_before_the_next_batch(
    site: Site, broker: EmbeddedBroker, desk: BranchDesk, teller: Teller, dirs: tuple[Path, Path]
) -> None:
    primary_dir, standby_dir = dirs
    standby = await site.standby(standby_dir)
    clock = SimulationClock(dt.datetime(2026, 3, 2, 2, tzinfo=dt.UTC), rate=0)
    config = dc_replace(SYNC, policy=Policy(interest_rate_bp=10_000))
    host = await site.host(primary_dir, config, clock)
    await day(desk, teller)  # the first batch marks where the books close from
    clock.advance(dt.timedelta(days=30))  # across the posting day, 20 March
    await day(desk, teller, serial=2)  # its first batch closes the books, then goes on
    # answered in sync mode: the standby held the interest entry and the batches after it
    assert standby.store.head == host.store.head and host.store.head.seq == 7
    assert host.replicator is not None and not host.replicator.degraded and standby.in_sync
    await site.stop(host)  # ships the shutdown checkpoint
    await until(lambda: standby._last_checkpoint == 7)
    await site.stop(standby)
    same_books(primary_dir, standby_dir)
    assert rows(standby_dir, "SELECT seq FROM journal WHERE kind = 'interest'") == [(4,)]
    for data_dir in (primary_dir, standby_dir):
        audit = audit_store(ledger_path(data_dir), load_public(data_dir, SIGNER))
        assert audit.ok and audit.signed_to == 7, audit.findings

    bus = await connected(broker)
    assert await promote(bus, standby_dir, settle_s=0.05) == 2
    await bus.close()
    clock.advance(dt.timedelta(days=1))
    promoted = HostConfig(policy=config.policy)  # no standby of its own here
    new_primary = await site.host(standby_dir, promoted, clock)  # checks the store at start
    await day(desk, teller, serial=3)
    assert new_primary.store.head.seq == 10


async def test_a_silent_standby_stops_a_stop_mode_primary_until_it_returns(
    site: Site, desk: BranchDesk, teller: Teller, dirs: tuple[Path, Path]
) -> None:
    primary_dir, standby_dir = dirs
    await site.host(
        primary_dir, HostConfig(replication="sync", standby_lost="stop", standby_timeout_s=0.3)
    )
    account = account_no(1)
    request = teller.open_account(account, deposit=100)
    await desk.send([request])
    with pytest.raises(TimeoutError):
        await desk.answers([request.request_id], timeout=1.5)
    standby = await site.standby(standby_dir)
    (reply,) = await desk.answers([request.request_id], timeout=10)
    assert reply.result.value == "00" and standby.store.head.seq == 1


async def test_a_silent_standby_degrades_an_async_fallback_primary_and_it_catches_up(
    site: Site, desk: BranchDesk, teller: Teller, dirs: tuple[Path, Path]
) -> None:
    primary_dir, standby_dir = dirs
    host = await site.host(primary_dir)
    await day(desk, teller)  # answered after the timeout, with an alert
    assert host.replicator is not None and host.statistics().replication_degraded
    assert host.replicator.lag == 3
    behind = host.replicator.status()  # what the ops stats summary carries
    assert (behind.mode, behind.lag_entries, behind.standby_up) == ("async", 3, False)
    standby = await site.standby(standby_dir)
    await until(lambda: standby.store.head.seq == 3)
    await day(desk, teller, serial=2)
    assert not host.replicator.degraded and host.replicator.lag == 0
    caught_up = host.replicator.status()
    assert (caught_up.mode, caught_up.lag_entries, caught_up.lag_s) == ("sync", 0, 0.0)


async def test_async_mode_answers_at_once_and_reports_the_lag(
    site: Site, desk: BranchDesk, teller: Teller, dirs: tuple[Path, Path]
) -> None:
    primary_dir, standby_dir = dirs
    host = await site.host(primary_dir, HostConfig(replication="async", standby_timeout_s=30))
    await day(desk, teller)  # would take 30 s per batch if it waited
    assert host.statistics().replication_lag == 3
    standby = await site.standby(standby_dir)
    await until(lambda: host.statistics().replication_lag == 0)
    assert standby.store.head == host.store.head


async def test_a_wiped_standby_acks_nothing_until_resynchronised_then_promotes(
    site: Site, broker: EmbeddedBroker, desk: BranchDesk, teller: Teller, dirs: tuple[Path, Path]
) -> None:
    primary_dir, standby_dir = dirs
    standby = await site.standby(standby_dir)
    host = await site.host(primary_dir, HostConfig(replication="async"))
    await day(desk, teller)
    await until(lambda: standby.store.head.seq == 3)
    await site.stop(standby)
    ledger_path(standby_dir).unlink()
    wiped = await site.standby(standby_dir)
    await day(desk, teller, serial=2)
    await until(lambda: not wiped.in_sync)
    assert wiped.store.head.seq == 0 and host.replicator is not None and host.replicator.lag > 0
    await site.stop(wiped)
    bus = await connected(broker)
    with pytest.raises(Exception, match="out of sync"):
        await promote(bus, standby_dir, settle_s=0.05)

    await site.stop(host)
    copy_store(ledger_path(primary_dir), ledger_path(standby_dir))
    epoch = await promote(bus, standby_dir, settle_s=0.05)
    assert epoch == 2
    await bus.close()
    same_books(primary_dir, standby_dir)

    with pytest.raises(FencedError, match="refuses to process"):
        await site.host(primary_dir)
    new_primary = await site.host(standby_dir, HostConfig())
    assert new_primary.epoch == 2
    await day(desk, teller, serial=3)
    assert new_primary.store.head.seq == 9


async def test_a_forged_replication_frame_is_dead_lettered_not_applied(
    site: Site, broker: EmbeddedBroker, desk: BranchDesk, dirs: tuple[Path, Path]
) -> None:
    _, standby_dir = dirs
    standby = await site.standby(standby_dir)
    forged = build_frame(FrameKind.JOURNAL, "host", 1, [b'{"batch":{}}'], epoch=1)
    bus = await connected(broker)
    await bus.publish([Message(DEFAULT_EXCHANGE, DR_REPLICATION, encode_frame(forged))])
    (dead,) = await desk.dead_letters(1)
    assert dead.queue == DEAD_QUEUE and standby.store.head.seq == 0
    await bus.close()
