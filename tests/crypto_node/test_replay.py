from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from common.dukpt import Ksn
from common.errors import ConfigError
from crypto_node.replay import WINDOW, ReplayGuard, ReplayMarks, encode_snapshot

PAD = bytes.fromhex("A1B2C3D400010001")
OTHER = bytes.fromhex("A1B2C3D400010002")


def _ksn(counter: int, pad: bytes = PAD) -> Ksn:
    return Ksn(pad, counter)


def test_a_used_counter_is_refused_per_pad() -> None:
    guard = ReplayGuard()
    assert not guard.is_used(_ksn(5))
    guard.record(_ksn(5))
    assert guard.is_used(_ksn(5))
    assert not guard.is_used(_ksn(5, OTHER))
    assert not guard.is_used(_ksn(6))


def test_late_counters_inside_the_window_are_accepted_once() -> None:
    guard = ReplayGuard()
    guard.record(_ksn(100))
    assert not guard.is_used(_ksn(99))
    guard.record(_ksn(99))
    assert guard.is_used(_ksn(99))
    assert not guard.is_used(_ksn(100 - WINDOW + 1))
    assert guard.is_used(_ksn(100 - WINDOW))  # too old to tell: refused
    guard.record(_ksn(100 + WINDOW + 5))
    assert guard.is_used(_ksn(100)) and guard.is_used(_ksn(99))
    assert guard.high_water_mark(PAD) == 100 + WINDOW + 5


def test_marks_survive_a_restart(tmp_path: Path) -> None:
    marks = ReplayMarks(tmp_path / "crypto" / "ksn-marks.json")
    guard = marks.load()
    for counter in (1, 2, 3, 10):
        guard.record(_ksn(counter))
    guard.record(_ksn(7, OTHER))
    assert guard.dirty
    marks.save(guard)
    assert not guard.dirty
    restored = ReplayMarks(marks.path).load()
    for counter in (1, 2, 3, 10):
        assert restored.is_used(_ksn(counter))
    assert not restored.is_used(_ksn(4)) and not restored.is_used(_ksn(11))
    assert restored.is_used(_ksn(7, OTHER))
    assert restored.snapshot() == guard.snapshot()


@pytest.mark.parametrize(
    "content",
    ["not json", '{"format": "other", "pads": {}}', '{"format": "branchnet-ksn-marks/1"}'],
)
def test_a_damaged_marks_file_stops_the_node(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ksn-marks.json"
    path.write_text(content)
    with pytest.raises(ConfigError):
        ReplayMarks(path).load()


def test_a_seen_counter_is_accepted_again_only_with_its_fingerprint(tmp_path: Path) -> None:
    guard = ReplayGuard()
    guard.record(_ksn(5), b"A" * 16)
    guard.record(_ksn(6))
    assert not guard.is_used(_ksn(5), b"A" * 16)
    assert guard.is_used(_ksn(5), b"B" * 16) and guard.is_used(_ksn(5))
    assert guard.is_used(_ksn(6), b"A" * 16)  # recorded without a fingerprint
    marks = ReplayMarks(tmp_path / "marks.json")
    marks.save(guard)
    restored = marks.load()
    assert not restored.is_used(_ksn(5), b"A" * 16) and restored.is_used(_ksn(5), b"B" * 16)
    # out of the window, a fingerprint no longer helps and is forgotten
    restored.record(_ksn(5 + WINDOW), b"C" * 16)
    assert restored.is_used(_ksn(5), b"A" * 16)
    assert 5 not in restored.uses()[PAD]


def test_a_first_format_marks_file_still_refuses_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "marks.json"
    path.write_text('{"format": "branchnet-ksn-marks/1", "pads": {"A1B2C3D400010001": [9, "3"]}}')
    guard = ReplayMarks(path).load()
    assert guard.is_used(_ksn(9), b"A" * 16) and guard.is_used(_ksn(8))
    assert not guard.is_used(_ksn(7))


def _busy_guard(marks: ReplayMarks, pads: list[bytes], counters: range) -> ReplayGuard:
    """A guard whose pads take turns (pad 0 more often), saved every 11 counters."""
    guard = marks.load()
    for counter in counters:
        pad = pads[counter % len(pads)] if counter % 7 else pads[0]
        guard.record(Ksn(pad, counter), counter.to_bytes(16, "big"))
        if counter % 11 == 0:
            marks.save(guard)
    return guard


PADS = [bytes([pad]) * 8 for pad in range(1, 6)]


def test_saves_append_to_the_log_and_a_restart_replays_it(tmp_path: Path) -> None:
    marks = ReplayMarks(tmp_path / "marks.json")
    guard = marks.load()
    marks.save(guard)  # the first save of a new guard writes the snapshot
    snapshot = marks.path.read_bytes()
    guard = _busy_guard(marks, PADS, range(1, 200))
    guard.record(Ksn(PADS[2], 1000), b"F" * 16)  # one pad moves far: its old uses drop out
    marks.save(guard)
    assert marks.path.read_bytes() == snapshot  # no batch rewrote the snapshot
    assert (marks.snapshots, marks.appends) == (1, 199 // 11 + 1)
    restored = ReplayMarks(marks.path).load()
    assert restored.snapshot() == guard.snapshot() and restored.uses() == guard.uses()
    assert all(counter > 1000 - WINDOW for counter in restored.uses()[PADS[2]])
    assert restored.is_used(_ksn(5, PADS[0])) and not restored.is_used(_ksn(1001, PADS[2]))


def test_a_long_log_is_folded_into_a_snapshot(tmp_path: Path) -> None:
    marks = ReplayMarks(tmp_path / "marks.json", compact_at_bytes=512)
    guard = _busy_guard(marks, PADS, range(1, 400))
    marks.save(guard)
    assert marks.snapshots > 2  # each once the log outgrew the snapshot
    assert marks.log_path.stat().st_size < 2 * marks.path.stat().st_size
    restored = ReplayMarks(marks.path).load()
    assert restored.snapshot() == guard.snapshot() and restored.uses() == guard.uses()
    fresh = ReplayMarks(tmp_path / "again.json")  # a snapshot encodes the whole guard
    fresh.save(guard)
    assert fresh.snapshots == 1 and fresh.path.read_bytes() == encode_snapshot(guard)
    assert json.loads(fresh.path.read_bytes())["format"] == "branchnet-ksn-marks/2"


def test_a_log_replayed_over_the_snapshot_it_was_folded_into_changes_nothing(
    tmp_path: Path,
) -> None:
    """A crash after a snapshot and before its log was emptied replays the old log."""
    marks = ReplayMarks(tmp_path / "marks.json")
    guard = _busy_guard(marks, PADS, range(1, 300))
    marks.save(guard)
    old_log = marks.log_path.read_bytes()
    ReplayMarks(marks.path).save(guard)  # another instance: a whole snapshot, an empty log
    marks.log_path.write_bytes(old_log)
    restored = ReplayMarks(marks.path).load()
    assert restored.snapshot() == guard.snapshot() and restored.uses() == guard.uses()


def test_a_torn_last_line_is_dropped_and_the_next_save_writes_a_snapshot(
    tmp_path: Path,
) -> None:
    marks = ReplayMarks(tmp_path / "marks.json")
    guard = marks.load()
    guard.record(_ksn(1), b"A" * 16)
    marks.save(guard)
    guard.record(_ksn(2), b"B" * 16)
    marks.save(guard)
    guard.record(_ksn(3), b"C" * 16)
    marks.save(guard)
    whole = marks.log_path.read_bytes()
    for torn in (whole[:-5], whole[:-1], whole[:-10] + b"\0" * 9 + b"\n", whole + b"\0" * 64):
        marks.log_path.write_bytes(torn)
        reloaded = ReplayMarks(marks.path)
        restored = reloaded.load()
        assert restored.is_used(_ksn(2)) and not restored.is_used(_ksn(2), b"B" * 16)
        if torn != whole + b"\0" * 64:  # the last save never returned: not recorded
            assert not restored.is_used(_ksn(3))
    restored.record(_ksn(4), b"D" * 16)
    reloaded.save(restored)
    assert reloaded.snapshots == 1  # nothing is appended after a torn line
    again = ReplayMarks(marks.path).load()
    assert again.is_used(_ksn(4)) and again.is_used(_ksn(1))


@pytest.mark.parametrize("damage", ["checksum", "record", "header"])
def test_a_damaged_log_line_before_the_last_stops_the_node(tmp_path: Path, damage: str) -> None:
    marks = ReplayMarks(tmp_path / "marks.json")
    guard = marks.load()
    for counter in (1, 2, 3):
        guard.record(_ksn(counter), bytes([counter]) * 16)
        marks.save(guard)
    header, first, *rest = marks.log_path.read_bytes().split(b"\n", 2)
    if damage == "checksum":
        first = first[:20] + (b"1" if first[20:21] == b"0" else b"0") + first[21:]
    elif damage == "record":
        payload = first.rpartition(b" ")[0] + b":00"
        first = payload + b" %08x" % zlib.crc32(payload)
    else:
        header = b"branchnet-ksn-log/0"
    marks.log_path.write_bytes(b"\n".join([header, first, *rest]))
    with pytest.raises(ConfigError):
        ReplayMarks(marks.path).load()


def test_a_failed_save_is_made_good_by_the_next_one(tmp_path: Path) -> None:
    marks = ReplayMarks(tmp_path / "marks.json")
    guard = marks.load()
    marks.save(guard)
    guard.record(_ksn(1), b"A" * 16)
    marks.log_path.unlink()  # the append fails
    with pytest.raises(OSError):
        marks.save(guard)
    guard.record(_ksn(2), b"B" * 16)
    marks.save(guard)
    assert marks.snapshots == 2
    restored = ReplayMarks(marks.path).load()
    assert restored.is_used(_ksn(1)) and restored.is_used(_ksn(2))
    assert not restored.is_used(_ksn(1), b"A" * 16)


def test_a_snapshot_without_a_log_loads_and_the_first_save_starts_the_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "marks.json"
    path.write_text('{"format": "branchnet-ksn-marks/2", "pads": {"A1B2C3D400010001": [9, "3"]}}')
    marks = ReplayMarks(path)
    guard = marks.load()
    guard.record(_ksn(10), b"A" * 16)
    marks.save(guard)
    guard.record(_ksn(11), b"B" * 16)
    marks.save(guard)
    assert (marks.snapshots, marks.appends) == (1, 1)
    restored = ReplayMarks(path).load()
    assert restored.is_used(_ksn(8)) and restored.is_used(_ksn(11))
    assert not restored.is_used(_ksn(11), b"B" * 16) and not restored.is_used(_ksn(7))


def test_recording_a_counter_too_old_to_tell_changes_nothing() -> None:
    guard = ReplayGuard()
    guard.record(_ksn(100))
    guard.take_changed()
    guard.record(_ksn(100 - WINDOW), b"A" * 16)
    assert guard.snapshot() == {PAD: (100, 1)} and guard.take_changed() == {}
