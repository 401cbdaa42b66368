"""The journal's second medium: closed segments as compressed, checksummed files.

A segment is every entry up to the last signed checkpoint that no earlier segment holds. Each
is written as ``segment-<first>-<last>.jsonl.gz`` (one JSON document a line: the covering
checkpoints, then the entries as stored: ``seq``, ``hash``, ``body``) with a ``.sha256``
file beside it in ``sha256sum`` form. Files are written to a temporary name, synced and
renamed, so a crash never leaves half a segment under a segment's name. :func:`audit_archive`
verifies the checksums, then the chain and checkpoints across all segments as
:func:`~host_node.audit.audit_rows` does for a store.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from host_node.audit import Audit, Finding, audit_rows
from host_node.errors import StoreError
from host_node.store import connect_read_only

_SEGMENT = re.compile(r"^segment-(\d{12})-(\d{12})\.jsonl\.gz$")


@dataclass(frozen=True, slots=True)
class Segment:
    """One archived segment file and the entries it holds."""

    path: Path
    first_seq: int
    last_seq: int


def segment_name(first_seq: int, last_seq: int) -> str:
    return f"segment-{first_seq:012d}-{last_seq:012d}.jsonl.gz"


def segments(directory: Path) -> list[Segment]:
    """The segment files in ``directory``, in sequence order."""
    found = []
    for path in directory.glob("segment-*.jsonl.gz"):
        match = _SEGMENT.match(path.name)
        if match:
            found.append(Segment(path, int(match[1]), int(match[2])))
    return sorted(found, key=lambda s: s.first_seq)


def archive_journal(store_path: Path, directory: Path) -> Segment | None:
    """Write the closed entries not yet archived as one new segment; None when there are none.

    Raises:
        StoreError: the store cannot be read or the segment not written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    done = segments(directory)
    after = done[-1].last_seq if done else 0
    connection = connect_read_only(store_path)
    try:
        checkpoints = connection.execute(
            "SELECT seq, body FROM checkpoints WHERE seq > ? ORDER BY seq", (after,)
        ).fetchall()
        if not checkpoints:
            return None
        last = checkpoints[-1][0]
        lines = [orjson.dumps({"checkpoint": orjson.loads(body)}) for _, body in checkpoints]
        lines += [
            orjson.dumps({"seq": seq, "hash": hash_, "body": bytes(body).decode()})
            for seq, body, hash_ in connection.execute(
                "SELECT seq, body, hash FROM journal WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, last),
            )
        ]
    finally:
        connection.close()
    segment = Segment(directory / segment_name(after + 1, last), after + 1, last)
    try:
        _write_atomically(segment.path, gzip.compress(b"\n".join(lines) + b"\n", mtime=0))
    except OSError as error:
        raise StoreError(f"segment not written: {error}") from None
    return segment


def _write_atomically(path: Path, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    for target, content in (
        (path, data),
        (_checksum_path(path), f"{digest}  {path.name}\n".encode()),
    ):
        temporary = target.with_name(f".{target.name}.tmp")
        with temporary.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def audit_archive(directory: Path, key: Ed25519PublicKey) -> Audit:
    """Verify every segment in ``directory``: checksums, then chain and checkpoints."""
    rows: list[tuple[int, bytes, str]] = []
    checkpoints: list[tuple[int, bytes]] = []
    problems: list[Finding] = []
    found = segments(directory)
    if not found:
        problems.append(Finding(f"no journal segments in {directory}"))
    for segment in found:
        problem = _read_segment(segment, rows, checkpoints)
        if problem is not None:
            problems.append(Finding(problem, segment.first_seq))
    audit = audit_rows(rows, checkpoints, key)
    audit.findings[:0] = problems
    return audit


def _read_segment(
    segment: Segment, rows: list[tuple[int, bytes, str]], checkpoints: list[tuple[int, bytes]]
) -> str | None:
    name = segment.path.name
    try:
        data = segment.path.read_bytes()
        recorded = _checksum_path(segment.path).read_text().split()[0]
    except (OSError, IndexError):
        return f"{name}: file or checksum unreadable"
    if hashlib.sha256(data).hexdigest() != recorded:
        return f"{name}: checksum does not match"
    try:
        documents = [orjson.loads(line) for line in gzip.decompress(data).splitlines()]
        for document in documents:
            if "checkpoint" in document:
                checkpoint = document["checkpoint"]
                checkpoints.append((checkpoint["seq"], orjson.dumps(checkpoint)))
            else:
                rows.append((document["seq"], document["body"].encode(), document["hash"]))
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, KeyError, TypeError) as error:
        return f"{name}: cannot be read ({type(error).__name__})"
    return None
