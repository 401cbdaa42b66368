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

:class:`ReplayMarks` persists the guard so a restarted crypto node still refuses replays and
still recognises retransmissions: each batch that used a KSN appends the counters it recorded
to a log (``data_dir/crypto/ksn-marks.log``, one checksummed line, ``fdatasync``-ed before the
batch is answered), and now and then the whole guard is written atomically as a snapshot
(``ksn-marks.json``) and the log emptied. Loading replays the log over the snapshot.
A batch costs one small append, however many pads and fingerprints the guard holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from common.dukpt import DukptError, Ksn
from common.durable import replace_durably
from common.errors import ConfigError

WINDOW = 64
MARKS_FORMAT = "branchnet-ksn-marks/2"
_OLD_FORMAT = "branchnet-ksn-marks/1"
FINGERPRINT_BYTES = 16
_MASK = (1 << WINDOW) - 1
_PERSON = b"branchnet-ksn"
#: A pad's fingerprint table is pruned to its window when it reaches this size.
_PRUNE_AT = 2 * WINDOW
LOG_FORMAT = b"branchnet-ksn-log/1\n"
#: The log is folded into a new snapshot once it is this long and longer than the snapshot.
COMPACT_AT_BYTES = 1 << 20


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
            if age >= WINDOW or mark.seen >> age & 1:
                return  # a retransmission, or too old to tell (refused anyway): nothing new
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
        """The counters recorded since the last call, by pad (what a save must append)."""
        changed, self._changed = self._changed, {}
        return changed


class ReplayMarks:
    """The files a :class:`ReplayGuard` is kept in: a snapshot and the log of what came since.

    Log line: ``PAD:COUNTER[:FINGERPRINT],...`` (hex) and a CRC-32 of it. A last line cut
    short or failing its check is a save that never returned (its batch was not answered):
    it is dropped, and the next save starts afresh with a snapshot. A damaged line before
    the last one stops the node.
    """

    def __init__(self, path: Path, *, compact_at_bytes: int = COMPACT_AT_BYTES) -> None:
        self.path = path
        self.log_path = path.with_suffix(".log")
        self._compact_at = compact_at_bytes
        self._owner: ReplayGuard | None = None  # the guard the log continues
        self._log_bytes = 0
        self._snapshot_bytes = 0
        self.snapshots = 0  # written by this instance
        self.appends = 0

    def __repr__(self) -> str:
        return f"ReplayMarks({str(self.path)!r})"

    def load(self) -> ReplayGuard:
        """The guard saved in the files, or an empty one when there are none yet.

        A snapshot of the first format (no fingerprints) still loads: its counters are
        refused to every transaction.

        Raises:
            ConfigError: a file is unreadable or malformed (refusing to start is safer than
                forgetting which counters were used).
        """
        guard, self._snapshot_bytes = self._load_snapshot()
        log = self._read(self.log_path)
        intact = True
        if log is not None:
            intact = self._replay_log(guard, log)
        guard.take_changed()
        guard.dirty = False
        # A snapshot (and an empty log) is written first when either file is missing, or
        # the log's tail is torn: appends go only after whole lines of a log that exists.
        self._owner = guard if intact and log is not None and self._snapshot_bytes else None
        self._log_bytes = len(log) if log is not None else 0
        return guard

    def save(self, guard: ReplayGuard) -> None:
        """Make what ``guard`` recorded since the last save durable, then mark it clean.

        One ``fdatasync``-ed append to the log; a whole snapshot instead for a guard this
        instance did not load or save last, or once the log is long. After a failure, the
        next save writes a snapshot (a half-written line must not be followed by others).
        """
        changed = guard.take_changed()
        try:
            if self._owner is not guard or self._log_bytes > max(
                self._compact_at, self._snapshot_bytes
            ):
                self._snapshot(guard)
            elif changed:
                self._append(self._line(guard, changed))
        except OSError:
            self._owner = None
            raise
        guard.dirty = False

    # -- snapshot -----------------------------------------------------------------------------

    def _load_snapshot(self) -> tuple[ReplayGuard, int]:
        text = self._read(self.path)
        if text is None:
            return ReplayGuard(), 0
        try:
            document = json.loads(text)
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
        return ReplayGuard(marks, uses), len(text)

    def _snapshot(self, guard: ReplayGuard) -> None:
        """Write the whole guard atomically and durably, then start an empty log after it."""
        document = encode_snapshot(guard)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_durably(self.path, document)
        # A crash before the log is emptied replays lines the snapshot holds: harmless.
        replace_durably(self.log_path, LOG_FORMAT)
        self._owner, self._snapshot_bytes, self._log_bytes = guard, len(document), 0
        self.snapshots += 1

    # -- log ----------------------------------------------------------------------------------

    @staticmethod
    def _line(guard: ReplayGuard, changed: dict[bytes, list[int]]) -> bytes:
        records = []
        for pad, counters in changed.items():
            uses = guard.mark_of(pad)[2]
            name = pad.hex()
            for counter in counters:
                use = uses.get(counter)
                tail = b"" if use is None else b":" + use.hex().encode()
                records.append(b"%s:%x%s" % (name.encode(), counter, tail))
        payload = b",".join(records)
        return b"%s %08x\n" % (payload, zlib.crc32(payload))

    def _append(self, line: bytes) -> None:
        log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(log, view) :]
            os.fdatasync(log)
        finally:
            os.close(log)
        self._log_bytes += len(line)
        self.appends += 1

    def _replay_log(self, guard: ReplayGuard, log: bytes) -> bool:
        """Record the log's lines in ``guard``; False when its last line was torn."""
        if not log.startswith(LOG_FORMAT):
            if LOG_FORMAT.startswith(log.rstrip(b"\0")):
                return False  # torn while being created
            raise ConfigError(f"{self.log_path} is not {LOG_FORMAT.decode().strip()}")
        *lines, tail = log[len(LOG_FORMAT) :].split(b"\n")  # tail: after the last newline
        for number, line in enumerate(lines):
            records = _parse_line(line)
            if records is None:
                if any(rest.strip(b"\0") for rest in (*lines[number + 1 :], tail)):
                    raise ConfigError(f"{self.log_path} is damaged (line {number + 2})")
                return False
            for ksn, use in records:
                guard.record(ksn, use)
        return not tail  # anything after the last newline (even zeros) is a torn save

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from None


def _parse_line(line: bytes) -> list[tuple[Ksn, bytes | None]] | None:
    """A log line's records, or None when it is not a whole, intact line."""
    payload, _, check = line.rpartition(b" ")
    try:
        if len(check) != 8 or int(check, 16) != zlib.crc32(payload):
            return None
        records = []
        for record in payload.split(b","):
            pad, counter, *use = record.split(b":")
            fingerprint = bytes.fromhex(use[0].decode()) if use else None
            if len(use) > 1 or (fingerprint is not None and len(fingerprint) != FINGERPRINT_BYTES):
                return None
            records.append((Ksn(bytes.fromhex(pad.decode()), int(counter, 16)), fingerprint))
    except (ValueError, UnicodeDecodeError, DukptError):
        return None
    return records


def encode_snapshot(guard: ReplayGuard) -> bytes:
    """The snapshot document of ``guard``: its pads sorted, each with its window's fingerprints."""
    uses = guard.uses()
    entries = []
    for pad, (high, seen) in sorted(guard.snapshot().items()):
        fingerprints = ",".join(
            f'"{counter}":"{use.hex()}"' for counter, use in sorted(uses.get(pad, {}).items())
        )
        entries.append(f'"{pad.hex().upper()}":[{high},"{seen:x}",{{{fingerprints}}}]')
    return f'{{"format":"{MARKS_FORMAT}","pads":{{{",".join(entries)}}}}}'.encode()
