"""Durable branch state: per terminal, the numbers that must never be handed out twice.

A terminal draws request sequence numbers, card serials (account numbers from the branch's
card stock) and PIN pad KSN counters. A crash must never let a restarted branch reuse one:
the host would answer a reused request id with another request's reply, open a card twice, or
the crypto node would refuse a replayed KSN. So numbers are *reserved in blocks*: before the
first number of a block is used, ``data_dir/branches/<branch_id>.json`` is rewritten to say
"everything below ``next + block`` may have been used". A reload without a clean close starts
from that mark (skipping the unused rest of the block); :meth:`BranchState.close` writes the
exact positions so a clean restart skips nothing. Writes are atomic (tmp + fsync + rename +
directory fsync) and happen once per block, so calling from the event loop costs one fsync
per ``block`` numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from branch_node.errors import StateError
from common.durable import replace_durably

STATE_VERSION = 1
#: Numbers reserved per write.
DEFAULT_BLOCK = 1000


class Counter(StrEnum):
    """The per-terminal counters the state keeps."""

    SEQUENCE = "sequence"
    CARD_SERIAL = "card_serial"
    KSN = "ksn"
    #: The branch's request frame sequence (kept under :data:`BRANCH_WIDE`).
    FRAME = "frame"


#: The pseudo terminal under which branch-wide counters are kept.
BRANCH_WIDE = "branch"


#: The first value of each counter at a brand-new terminal. The KSN position is a PIN pad's
#: *last used* DUKPT counter (0: none yet), which is what a pad resumes from.
FIRST_VALUES: dict[Counter, int] = {
    Counter.SEQUENCE: 1,
    Counter.CARD_SERIAL: 1,
    Counter.KSN: 0,
    Counter.FRAME: 1,
}


@dataclass(slots=True)
class _Position:
    next: int  # the next value to hand out
    reserved: int  # values below this are covered by the file on disk


def state_path(data_dir: Path, branch_id: str) -> Path:
    """Where a branch's state lives."""
    return data_dir / "branches" / f"{branch_id}.json"


class BranchState:
    """The counters of one branch's terminals, reserved durably in blocks."""

    def __init__(
        self, path: Path, branch_id: str, marks: dict[str, dict[Counter, int]], block: int
    ) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.path = path
        self.branch_id = branch_id
        self.block = block
        self._positions = {
            terminal: {c: _Position(value, value) for c, value in counters.items()}
            for terminal, counters in marks.items()
        }
        self.writes = 0

    @classmethod
    def open(cls, data_dir: Path, branch_id: str, *, block: int = DEFAULT_BLOCK) -> BranchState:
        """Load the branch's state, or start it empty when there is no file yet.

        Raises:
            StateError: the file is unreadable, malformed, or names another branch.
        """
        path = state_path(data_dir, branch_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path, branch_id, {}, block)
        except OSError as error:
            raise StateError(f"cannot read branch state {path}: {error.strerror}") from None
        return cls(path, branch_id, _parse_marks(text, branch_id, path), block)

    def peek(self, terminal_id: str, counter: Counter) -> int:
        """The next value :meth:`take` would return; for :attr:`Counter.KSN`, the highest
        counter that may have been used (what a PIN pad resumes from)."""
        return self._position(terminal_id, counter).next

    def take(self, terminal_id: str, counter: Counter) -> int:
        """Hand out the next value of ``counter``, reserving a new block first if needed."""
        position = self._position(terminal_id, counter)
        value = position.next
        self.cover(terminal_id, counter, value)
        position.next = value + 1
        return value

    def cover(self, terminal_id: str, counter: Counter, value: int) -> None:
        """Make sure ``value`` (and everything below it) is reserved on disk.

        For counters advanced elsewhere (a PIN pad's KSN counter): call it with the highest
        value about to be used, before using it.
        """
        position = self._position(terminal_id, counter)
        position.next = max(position.next, value)
        if value >= position.reserved:
            position.reserved = value + self.block
            self._write(lambda p: p.reserved)

    def advance(self, terminal_id: str, counter: Counter, value: int) -> None:
        """Record that values below ``value`` were used (they must already be covered)."""
        position = self._position(terminal_id, counter)
        if value > position.reserved:
            raise ValueError(f"{counter} {value} at terminal {terminal_id} was never reserved")
        position.next = max(position.next, value)

    def close(self) -> None:
        """Write the exact positions, so a clean restart skips no numbers."""
        self._write(lambda p: p.next)

    def _position(self, terminal_id: str, counter: Counter) -> _Position:
        counters = self._positions.setdefault(terminal_id, {})
        if counter not in counters:
            first = FIRST_VALUES[counter]
            counters[counter] = _Position(first, first)
        return counters[counter]

    def _write(self, mark: Callable[[_Position], int]) -> None:
        document = {
            "version": STATE_VERSION,
            "branch_id": self.branch_id,
            "terminals": {
                terminal: {str(c): mark(p) for c, p in sorted(counters.items())}
                for terminal, counters in sorted(self._positions.items())
            },
        }
        replace_durably(self.path, json.dumps(document, indent=1).encode() + b"\n")
        self.writes += 1


def _parse_marks(text: str, branch_id: str, path: Path) -> dict[str, dict[Counter, int]]:
    try:
        document = json.loads(text)
        if document["version"] != STATE_VERSION:
            raise StateError(f"branch state {path} has unsupported version {document['version']}")
        if document["branch_id"] != branch_id:
            raise StateError(f"branch state {path} belongs to branch {document['branch_id']}")
        marks: dict[str, dict[Counter, int]] = {}
        for terminal, counters in document["terminals"].items():
            marks[str(terminal)] = {}
            for name, value in counters.items():
                if type(value) is not int or value < 0:
                    raise StateError(f"branch state {path}: bad {name} for terminal {terminal}")
                marks[str(terminal)][Counter(name)] = value
        return marks
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StateError(f"branch state {path} is malformed: {type(error).__name__}") from None
