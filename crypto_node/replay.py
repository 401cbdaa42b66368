"""Replay refusal: each PIN pad's KSN counters are used once, by one transaction.

Per pad (initial key id) the guard keeps the highest counter used and a window bitmap of the
:data:`WINDOW` counters below it, as IPsec's anti-replay window does: blocks may arrive a little
out of order, but a counter already used, or too far below the mark to tell, is refused.
A counter is recorded only after its PIN block deciphered, so garbage with a high counter
cannot push a pad's mark forward.

A used counter may come again only as a *retransmission* of the same transaction: the host
retries a request whose crypto round trip it made but never committed (it crashed, or its
store failed). Each counter recorded with a binding (the request id) keeps a fingerprint of
the binding, the block's role in the command and the PIN block (a keyed hash: the PIN block
itself is never kept); a later use of the counter is accepted only with the same fingerprint.
Any other use of a seen counter is a replay.

:class:`ReplayMarks` persists the guard (``data_dir/crypto/ksn-marks.json``, written
atomically after each batch that used a KSN) so a restarted crypto node still refuses replays
and still recognises retransmissions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.dukpt import Ksn
from common.errors import ConfigError

WINDOW = 64
MARKS_FORMAT = "branchnet-ksn-marks/2"
_OLD_FORMAT = "branchnet-ksn-marks/1"
FINGERPRINT_BYTES = 16
_MASK = (1 << WINDOW) - 1
_PERSON = b"branchnet-ksn"
#: A pad's fingerprint table is pruned to its window when it reaches this size.
_PRUNE_AT = 2 * WINDOW


def fingerprint(binding: str, role: str, ksn: Ksn, pin_block: str) -> bytes:
    """What identifies one transaction's use of a KSN: binding, role, KSN and PIN block.

    BLAKE2b, personalised; the PIN block cannot be read back from it.
    """
    digest = hashlib.blake2b(digest_size=FINGERPRINT_BYTES, person=_PERSON)
    digest.update(f"{binding}\x1f{role}\x1f{ksn}\x1f{pin_block.upper()}".encode())
    return digest.digest()


@dataclass(slots=True)
class _Mark:
    high: int
    seen: int  # bit i: counter high - i was used
    uses: dict[int, bytes] = field(default_factory=dict)  # counter -> fingerprint


class ReplayGuard:
    """The counters each PIN pad has used (pure; see :class:`ReplayMarks` for the file)."""

    def __init__(
        self,
        marks: dict[bytes, tuple[int, int]] | None = None,
        uses: dict[bytes, dict[int, bytes]] | None = None,
    ) -> None:
        self._marks = {
            pad: _Mark(high, seen & _MASK, dict((uses or {}).get(pad, {})))
            for pad, (high, seen) in (marks or {}).items()
        }
        self.dirty = False
        self._changed: dict[bytes, list[int]] = {}

    def __repr__(self) -> str:
        return f"ReplayGuard(pads={len(self._marks)})"

    def is_used(self, ksn: Ksn, fingerprint: bytes | None = None) -> bool:
        """True when ``ksn`` may not be used now.

        That is: its counter was used by another transaction (or with no fingerprint), or
        is too far below the pad's mark to tell. A counter used with the same ``fingerprint``
        is a retransmission and is not refused.
        """
        mark = self._marks.get(ksn.initial_key_id)
        if mark is None or ksn.counter > mark.high:
            return False
        age = mark.high - ksn.counter
        if age >= WINDOW:
            return True
        if not mark.seen >> age & 1:
            return False
        return fingerprint is None or mark.uses.get(ksn.counter) != fingerprint

    def record(self, ksn: Ksn, fingerprint: bytes | None = None) -> None:
        """Mark ``ksn``'s counter used (by the transaction ``fingerprint`` names, if any)."""
        mark = self._marks.get(ksn.initial_key_id)
        counter = ksn.counter
        if mark is None:
            mark = self._marks[ksn.initial_key_id] = _Mark(counter, 1)
        elif counter > mark.high:
            mark.seen = ((mark.seen << (counter - mark.high)) | 1) & _MASK
            mark.high = counter
            if len(mark.uses) >= _PRUNE_AT:  # amortised: fingerprints below the window
                floor = counter - WINDOW  # are never consulted, only dropped now and then
                mark.uses = {c: f for c, f in mark.uses.items() if c > floor}
        else:
            age = mark.high - counter
            if mark.seen >> age & 1:
                return  # a retransmission: already recorded
            mark.seen |= 1 << age
        if fingerprint is not None:
            mark.uses[counter] = fingerprint
        self.dirty = True
        self._changed.setdefault(ksn.initial_key_id, []).append(counter)

    def high_water_mark(self, initial_key_id: bytes) -> int:
        """The highest counter the pad has used (0 for a pad never seen)."""
        mark = self._marks.get(initial_key_id)
        return 0 if mark is None else mark.high

    def snapshot(self) -> dict[bytes, tuple[int, int]]:
        return {pad: (mark.high, mark.seen) for pad, mark in self._marks.items()}

    def uses(self) -> dict[bytes, dict[int, bytes]]:
        """The fingerprints of the counters in each pad's window."""
        in_window = {
            pad: {c: f for c, f in mark.uses.items() if c > mark.high - WINDOW}
            for pad, mark in self._marks.items()
        }
        return {pad: uses for pad, uses in in_window.items() if uses}

    def mark_of(self, initial_key_id: bytes) -> tuple[int, int, dict[int, bytes]]:
        """One pad's mark: highest counter, window bitmap, fingerprints (do not modify)."""
        mark = self._marks[initial_key_id]
        return mark.high, mark.seen, mark.uses

    def take_changed(self) -> dict[bytes, list[int]]:
        """The counters recorded since the last call, by pad (what a save must rewrite)."""
        changed, self._changed = self._changed, {}
        return changed


class ReplayMarks:
    """The file a :class:`ReplayGuard` is kept in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Each pad's encoded entry, kept so a save re-encodes only the pads a batch used.
        self._owner: ReplayGuard | None = None
        self._entries: dict[bytes, bytes] = {}
        self._uses_text: dict[bytes, dict[int, bytes]] = {}  # pad -> counter -> JSON member
        self._order: list[bytes] = []  # the pads, sorted

    def __repr__(self) -> str:
        return f"ReplayMarks({str(self.path)!r})"

    def load(self) -> ReplayGuard:
        """The guard saved in the file, or an empty one when there is no file yet.

        A file of the first format (no fingerprints) still loads: its counters are refused
        to every transaction.

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
            if document["format"] not in (MARKS_FORMAT, _OLD_FORMAT):
                raise ConfigError(f"{self.path} is not {MARKS_FORMAT}")
            marks: dict[bytes, tuple[int, int]] = {}
            uses: dict[bytes, dict[int, bytes]] = {}
            for pad, entry in document["pads"].items():
                key = bytes.fromhex(pad)
                marks[key] = (int(entry[0]), int(entry[1], 16))
                if len(entry) > 2:
                    uses[key] = {int(c): bytes.fromhex(f) for c, f in entry[2].items()}
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            raise ConfigError(f"{self.path} is malformed") from None
        return ReplayGuard(marks, uses)

    def save(self, guard: ReplayGuard) -> None:
        """Write the guard atomically and durably, then mark it clean.

        Only the pads recorded since the last save of this guard are encoded again, and of
        those only the new fingerprints; the file is the same as a whole encoding would be.
        """
        changed = guard.take_changed()
        if self._owner is not guard:
            self._owner, self._entries, self._uses_text = guard, {}, {}
            changed = {pad: list(uses) for pad, uses in guard.uses().items()}
            changed.update({pad: [] for pad in guard.snapshot() if pad not in changed})
        for pad, counters in changed.items():
            self._entries[pad] = self._entry(guard, pad, counters)
        if len(self._order) != len(self._entries):
            self._order = sorted(self._entries)
        pads = b",".join(map(self._entries.__getitem__, self._order))
        document = b'{"format":"' + MARKS_FORMAT.encode() + b'","pads":{' + pads + b"}}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(document)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        guard.dirty = False

    def _entry(self, guard: ReplayGuard, pad: bytes, counters: list[int]) -> bytes:
        """A pad's ``"PAD":[high,"seen",{"counter":"fingerprint",...}]`` JSON member."""
        high, seen, uses = guard.mark_of(pad)
        floor = high - WINDOW
        texts = self._uses_text.setdefault(pad, {})
        for counter in counters:
            use = uses.get(counter)
            if use is not None:
                texts[counter] = b'"%d":"%s"' % (counter, use.hex().encode())
        window = sorted(c for c in texts if c > floor)
        if len(texts) > len(window) + WINDOW:  # forget old fingerprints now and then
            self._uses_text[pad] = {c: texts[c] for c in window}
        fingerprints = b",".join(map(texts.__getitem__, window))
        return b'"%s":[%d,"%x",{%s}]' % (pad.hex().upper().encode(), high, seen, fingerprints)
