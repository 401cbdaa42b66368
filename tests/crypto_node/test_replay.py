from __future__ import annotations

from pathlib import Path

import pytest

from common.dukpt import Ksn
from common.errors import ConfigError
from crypto_node.replay import WINDOW, ReplayGuard, ReplayMarks

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


def test_saves_that_rewrite_only_the_used_pads_write_the_whole_guard(tmp_path: Path) -> None:
    guard = ReplayGuard()
    marks = ReplayMarks(tmp_path / "marks.json")
    pads = [bytes([pad]) * 8 for pad in range(1, 6)]
    for counter in range(1, 200):
        pad = pads[counter % len(pads)] if counter % 7 else pads[0]
        guard.record(Ksn(pad, counter), counter.to_bytes(16, "big"))
        if counter % 11 == 0:
            marks.save(guard)
    guard.record(Ksn(pads[2], 1000), b"F" * 16)  # one pad moves far: its old uses drop out
    marks.save(guard)
    written = (tmp_path / "marks.json").read_bytes()
    restored = marks.load()
    assert restored.snapshot() == guard.snapshot() and restored.uses() == guard.uses()
    assert all(counter > 1000 - WINDOW for counter in restored.uses()[pads[2]])
    fresh = ReplayMarks(tmp_path / "again.json")  # a new file: every pad encoded afresh
    fresh.save(guard)
    assert (tmp_path / "again.json").read_bytes() == written
