"""Durable branch state: no request id, card serial or KSN is ever handed out twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from branch_node.errors import StateError
from branch_node.state import BranchState, Counter, state_path


def test_values_are_consecutive_and_survive_a_clean_close(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001", block=10)
    taken = [state.take("01", Counter.SEQUENCE) for _ in range(25)]
    assert taken == list(range(1, 26))
    state.close()
    again = BranchState.open(tmp_path, "0001", block=10)
    assert again.take("01", Counter.SEQUENCE) == 26  # nothing skipped after a clean close


def test_a_crash_skips_to_the_reserved_mark_and_never_reuses(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001", block=100)
    used = {state.take("01", Counter.CARD_SERIAL) for _ in range(150)}
    # no close(): the process died
    revived = BranchState.open(tmp_path, "0001", block=100)
    after = revived.take("01", Counter.CARD_SERIAL)
    assert after not in used and after > max(used)
    assert after == 201  # the rest of the reserved block is skipped


def test_a_write_happens_once_per_block(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001", block=50)
    for _ in range(500):
        state.take("01", Counter.SEQUENCE)
    assert state.writes == 10


def test_terminals_and_counters_are_independent(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001")
    assert state.take("01", Counter.SEQUENCE) == 1
    assert state.take("02", Counter.SEQUENCE) == 1
    assert state.take("01", Counter.CARD_SERIAL) == 1
    assert state.take("01", Counter.SEQUENCE) == 2


def test_a_pin_pad_counter_covered_before_use_is_not_reused_after_a_crash(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001", block=20)
    counter = state.peek("03", Counter.KSN)
    used = []
    for _ in range(45):  # the pad advances its own counter; the state covers it first
        state.cover("03", Counter.KSN, counter + 2)
        used.append(counter)
        counter += 1
    revived = BranchState.open(tmp_path, "0001", block=20)
    assert revived.peek("03", Counter.KSN) > max(used)


def test_advance_refuses_a_value_that_was_never_reserved(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001", block=5)
    state.cover("01", Counter.KSN, 3)
    state.advance("01", Counter.KSN, 6)
    with pytest.raises(ValueError):
        state.advance("01", Counter.KSN, 100)


def test_the_file_is_replaced_atomically_and_readable(tmp_path: Path) -> None:
    state = BranchState.open(tmp_path, "0001", block=10)
    state.take("01", Counter.SEQUENCE)
    path = state_path(tmp_path, "0001")
    assert path == tmp_path / "branches" / "0001.json"
    assert not path.with_name(path.name + ".tmp").exists()
    document = json.loads(path.read_text())
    assert document["terminals"]["01"]["sequence"] == 11


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"version": 1, "branch_id": "0002", "terminals": {}}',
        '{"version": 9, "branch_id": "0001", "terminals": {}}',
        '{"version": 1, "branch_id": "0001", "terminals": {"01": {"sequence": -4}}}',
        '{"version": 1, "branch_id": "0001", "terminals": {"01": {"sequence": 1.5}}}',
        '{"version": 1, "branch_id": "0001", "terminals": {"01": {"colour": 3}}}',
    ],
)
def test_a_corrupt_or_foreign_file_is_refused_not_reset(tmp_path: Path, content: str) -> None:
    # Starting over at 1 would reuse request ids, so a bad file must stop the branch.
    path = state_path(tmp_path, "0001")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(StateError):
        BranchState.open(tmp_path, "0001")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.booleans()), min_size=1, max_size=8
    ),
    block=st.integers(min_value=3, max_value=25),
)
def test_no_value_repeats_across_any_mix_of_crashes_and_clean_closes(
    tmp_path_factory: pytest.TempPathFactory, runs: list[tuple[int, bool]], block: int
) -> None:
    data_dir = tmp_path_factory.mktemp("state")
    seen: list[int] = []
    for takes, clean in runs:
        state = BranchState.open(data_dir, "0001", block=block)
        seen += [state.take("01", Counter.SEQUENCE) for _ in range(takes)]
        if clean:
            state.close()
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
