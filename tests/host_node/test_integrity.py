"""The host's start-up check: a store damaged at rest is refused, naming the first bad entry;
an intact one, and a log a killed process left, are accepted."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from branchnet.chaos.damage import flip_bit, tear_wal, truncate_store
from common.embedded_bus import EmbeddedBroker
from common.ids import branch_ids
from host_node import HostService
from host_node.errors import StoreCorrupt
from host_node.integrity import FRAME_HEADER, check_wal, scan_wal, wal_path
from host_node.store import ledger_path
from tests.host_node.recording import private_copy, record_network


@pytest.fixture(scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return await record_network(tmp_path_factory.mktemp("recorded"))


@pytest.fixture
def data_dir(recorded: Path, tmp_path: Path) -> Path:
    return private_copy(recorded, tmp_path / "data")


async def start_host(data_dir: Path) -> None:
    """Start and stop a host on ``data_dir`` (raises what its start raises)."""
    bus = EmbeddedBroker().connect()
    await bus.connect()
    host = HostService(bus, data_dir, branch_ids=list(branch_ids(2)))
    try:
        await host.start()
        await host.stop()
    finally:
        await bus.close()


def crashed_with_a_log(data_dir: Path, target: Path, writes: int = 20) -> Path:
    """A copy of the store as a process killed mid-run leaves it: the newest transactions
    still in the write-ahead log (copied while the writer holds it open)."""
    store = ledger_path(data_dir)
    connection = sqlite3.connect(store, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        for n in range(writes):
            connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"k{n}", "x" * 3000))
        copy = ledger_path(target)
        copy.parent.mkdir(parents=True)
        shutil.copyfile(store, copy)
        shutil.copyfile(wal_path(store), wal_path(copy))
    finally:
        connection.close()
    return copy


async def test_an_intact_store_starts(data_dir: Path) -> None:
    await start_host(data_dir)


async def test_a_flipped_bit_in_an_entry_is_refused_naming_it(data_dir: Path) -> None:
    done = flip_bit(ledger_path(data_dir), random.Random(3))
    assert done.applied and done.first_bad is not None
    with pytest.raises(StoreCorrupt, match=f"first bad entry is {done.first_bad}") as refused:
        await start_host(data_dir)
    assert refused.value.first_bad == done.first_bad


async def test_a_store_cut_inside_a_journal_page_is_refused_naming_an_entry(
    data_dir: Path,
) -> None:
    assert truncate_store(ledger_path(data_dir), random.Random(4)).applied
    with pytest.raises(StoreCorrupt, match="first bad entry is") as refused:
        await start_host(data_dir)
    assert refused.value.first_bad is not None


async def test_a_store_missing_whole_pages_at_its_end_is_refused(data_dir: Path) -> None:
    store = ledger_path(data_dir)
    page_size = int.from_bytes(store.read_bytes()[16:18], "big")
    with store.open("r+b") as file:  # a page boundary: SQLite itself may not notice
        file.truncate(store.stat().st_size - page_size)
    with pytest.raises(StoreCorrupt, match="cut short"):
        await start_host(data_dir)


def test_a_torn_log_is_refused_naming_the_first_entry_sqlite_would_drop(
    data_dir: Path, tmp_path: Path
) -> None:
    store = crashed_with_a_log(data_dir, tmp_path / "crashed")
    check_wal(store)  # as the crash left it: intact
    done = tear_wal(store, random.Random(5))
    assert done.applied
    with pytest.raises(StoreCorrupt, match="cut short") as refused:
        check_wal(store)
    assert refused.value.first_bad is not None


def test_a_lone_frame_header_left_by_a_kill_is_not_damage(data_dir: Path, tmp_path: Path) -> None:
    store = crashed_with_a_log(data_dir, tmp_path / "crashed")
    wal = wal_path(store)
    data = wal.read_bytes()
    scan = scan_wal(data)
    assert scan.commits >= 20 and scan.damage is None
    # killed between SQLite's write of a frame's header and of its page
    wal.write_bytes(data + data[scan.frames[-1] : scan.frames[-1] + FRAME_HEADER])
    check_wal(store)
    # the same frame cut inside its page is a torn write of what may have been answered
    wal.write_bytes(data + data[scan.frames[-1] : scan.frames[-1] + FRAME_HEADER + 100])
    with pytest.raises(StoreCorrupt):
        check_wal(store)


def test_a_flipped_bit_in_a_logged_frame_before_a_commit_is_damage(
    data_dir: Path, tmp_path: Path
) -> None:
    wal = wal_path(crashed_with_a_log(data_dir, tmp_path / "crashed"))
    data = bytearray(wal.read_bytes())
    scan = scan_wal(bytes(data))
    data[scan.frames[scan.commits // 2] + FRAME_HEADER + 7] ^= 0x10
    assert (
        scan_wal(bytes(data)).damage
        == f"WAL frame {scan.commits // 2 + 1} does not verify and committed frames follow it"
    )
