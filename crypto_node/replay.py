"""Replay refusal: each PIN pad's KSN counters are used once.

Per pad (initial key id) the guard keeps the highest counter used and a window bitmap of the
:data:`WINDOW` counters below it, as IPsec's anti-replay window does: blocks may arrive a little
out of order, but a counter already used, or too far below the mark to tell, is refused.
A counter is recorded only after its PIN block deciphered, so garbage with a high counter
cannot push a pad's mark forward.

:class:`ReplayMarks` persists the guard (``data_dir/crypto/ksn-marks.json``, written
atomically after each batch that used a KSN) so a restarted crypto node still refuses replays.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from common.dukpt import Ksn
from common.errors import ConfigError

WINDOW = 64
MARKS_FORMAT = "branchnet-ksn-marks/1"
_MASK = (1 << WINDOW) - 1


@dataclass(slots=True)
class _Mark:
    high: int
    seen: int  # bit i: counter high - i was used


class ReplayGuard:
    """The counters each PIN pad has used (pure; see :class:`ReplayMarks` for the file)."""

    def __init__(self, marks: dict[bytes, tuple[int, int]] | None = None) -> None:
        self._marks = {
            pad: _Mark(high, seen & _MASK) for pad, (high, seen) in (marks or {}).items()
        }
        self.dirty = False

    def __repr__(self) -> str:
        return f"ReplayGuard(pads={len(self._marks)})"

    def is_used(self, ksn: Ksn) -> bool:
        """True when ``ksn``'s counter was used, or is too far below the pad's mark to tell."""
        mark = self._marks.get(ksn.initial_key_id)
        if mark is None or ksn.counter > mark.high:
            return False
        age = mark.high - ksn.counter
        return age >= WINDOW or bool(mark.seen >> age & 1)

    def record(self, ksn: Ksn) -> None:
        """Mark ``ksn``'s counter used."""
        mark = self._marks.get(ksn.initial_key_id)
        if mark is None:
            self._marks[ksn.initial_key_id] = _Mark(ksn.counter, 1)
        elif ksn.counter > mark.high:
            mark.seen = ((mark.seen << (ksn.counter - mark.high)) | 1) & _MASK
            mark.high = ksn.counter
        else:
            mark.seen |= 1 << (mark.high - ksn.counter)
        self.dirty = True

    def high_water_mark(self, initial_key_id: bytes) -> int:
        """The highest counter the pad has used (0 for a pad never seen)."""
        mark = self._marks.get(initial_key_id)
        return 0 if mark is None else mark.high

    def snapshot(self) -> dict[bytes, tuple[int, int]]:
        return {pad: (mark.high, mark.seen) for pad, mark in self._marks.items()}


class ReplayMarks:
    """The file a :class:`ReplayGuard` is kept in."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"ReplayMarks({str(self.path)!r})"

    def load(self) -> ReplayGuard:
        """The guard saved in the file, or an empty one when there is no file yet.

        Raises:
            ConfigError: the file is unreadable or malformed (refusing to start is safer than
                forgetting which counters were used).
        """
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return ReplayGuard()
        except OSError as error:
            raise ConfigError(f"cannot read {self.path}: {error.strerror}") from None
        except ValueError:
            raise ConfigError(f"{self.path} is not JSON") from None
        try:
            if document["format"] != MARKS_FORMAT:
                raise ConfigError(f"{self.path} is not {MARKS_FORMAT}")
            marks = {
                bytes.fromhex(pad): (int(high), int(seen, 16))
                for pad, (high, seen) in document["pads"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"{self.path} is malformed") from None
        return ReplayGuard(marks)

    def save(self, guard: ReplayGuard) -> None:
        """Write the guard atomically and durably, then mark it clean."""
        document = {
            "format": MARKS_FORMAT,
            "pads": {
                pad.hex().upper(): [high, f"{seen:x}"]
                for pad, (high, seen) in sorted(guard.snapshot().items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(json.dumps(document, separators=(",", ":")).encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        guard.dirty = False
