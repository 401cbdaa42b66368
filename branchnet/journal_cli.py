"""``branchnet journal ...``: verify, show, evidence bundles and archives of the host's journal."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import ConfigError
from common.identity import load_public
from common.ids import mask_pan
from common.settings import Settings
from host_node.audit import Audit
from host_node.checkpoint import SIGNER
from host_node.journal import JournalEntry
from host_node.ledger import is_cash_account
from host_node.store import ledger_path


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journal`` and its actions to the top-level parser's commands."""
    journal = commands.add_parser("journal", help="verify, inspect and archive the host journal")
    actions = journal.add_subparsers(title="actions", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify", help="recompute the chain, checkpoint signatures and balances"
    )
    _data_dir_flag(verify)
    _public_key_flag(verify)
    verify.add_argument("--archive", type=Path, help="verify this archive directory instead")
    verify.add_argument("--json", action="store_true", help="print one JSON document")
    verify.set_defaults(run=_verify)

    show = actions.add_parser("show", help="list journal entries, filtered")
    _data_dir_flag(show)
    show.add_argument("--account", help="entries posting to or about this account")
    show.add_argument("--branch", help="entries from this branch id")
    show.add_argument("--since", type=_timestamp, help="processed at or after (ISO 8601)")
    show.add_argument("--until", type=_timestamp, help="processed before (ISO 8601)")
    show.add_argument("--result", help="result code, e.g. 00 or 51")
    show.add_argument("--kind", help="request kind, e.g. withdraw")
    show.add_argument("--request-id", help="one request id")
    show.add_argument("--limit", type=int, default=None, help="show at most this many")
    show.add_argument("--json", action="store_true", help="one JSON document per line")
    show.set_defaults(run=_show)

    evidence = actions.add_parser(
        "evidence", help="write the evidence bundle of one request, signed by the host"
    )
    evidence.add_argument("request_id", help="the disputed request's id")
    evidence.add_argument("--out", type=Path, required=True, help="the bundle file to write")
    evidence.add_argument("--seq", type=int, help="a particular journal entry of that request")
    _data_dir_flag(evidence)
    evidence.set_defaults(run=_evidence)

    check = actions.add_parser(
        "verify-evidence", help="check an evidence bundle offline with public keys only"
    )
    check.add_argument("file", type=Path, help="the bundle")
    _public_key_flag(check)
    check.add_argument(
        "--branch-key",
        action="append",
        default=[],
        metavar="BRANCH=PEM",
        help="a branch's public key, for signed frames (repeatable)",
    )
    check.add_argument("--data-dir", type=Path, help="take the host's public key from here")
    check.set_defaults(run=_verify_evidence)

    archive = actions.add_parser(
        "archive", help="copy closed segments to another directory, compressed and checksummed"
    )
    _data_dir_flag(archive)
    archive.add_argument("--to", type=Path, required=True, help="the archive directory")
    archive.set_defaults(run=_archive)


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the host's data directory (default ./var; env BRANCHNET_DATA_DIR)",
    )


def _public_key_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-key",
        type=Path,
        help="the host's public identity key (PEM); default: the one in the data directory",
    )


def _data_dir(settings: Settings) -> Path:
    return settings.data_dir or Path("var")


def _timestamp(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def host_public_key(data_dir: Path, given: Path | None) -> Ed25519PublicKey:
    """The host's public key from ``given`` (a PEM file), else from the data directory.

    Raises:
        ConfigError: missing or not an Ed25519 key.
    """
    if given is None:
        return load_public(data_dir, SIGNER)
    try:
        key = serialization.load_pem_public_key(given.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read public key {given}: {type(error).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{given} is not an Ed25519 key")
    return key


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from host_node.audit import audit_store

    data_dir = _data_dir(settings)
    key = host_public_key(data_dir, args.public_key)
    if args.archive is not None:
        from host_node.archive import audit_archive

        audit = audit_archive(args.archive, key)
        where = str(args.archive)
    else:
        audit = audit_store(ledger_path(data_dir), key)
        where = str(ledger_path(data_dir))
    _print_audit(audit, where, as_json=args.json)
    return 0 if audit.ok else 4


def _print_audit(audit: Audit, where: str, *, as_json: bool) -> None:
    document: dict[str, Any] = {
        "ok": audit.ok,
        "where": where,
        "entries": audit.entries,
        "checkpoints": audit.checkpoints,
        "signed_to": audit.signed_to,
        "unsigned_tail": audit.unsigned_tail,
        "first_broken_entry": audit.first_broken,
        "findings": [{"seq": f.seq, "problem": f.problem} for f in audit.findings],
    }
    if as_json:
        print(json.dumps(document))
        return
    verdict = "OK" if audit.ok else "TAMPERED"
    print(f"{verdict}: {where}")
    print(
        f"  {audit.entries} entries, {audit.checkpoints} checkpoints, signed to {audit.signed_to}"
    )
    if audit.unsigned_tail:
        print(
            f"  {audit.unsigned_tail} entries after the last checkpoint (chained, not yet signed)"
        )
    if audit.first_broken is not None:
        print(f"  first broken entry: {audit.first_broken}")
    for finding in audit.findings:
        print(f"  - {finding.problem}")


def _evidence(args: argparse.Namespace, settings: Settings) -> int:
    from common.identity import load_identity
    from host_node.bundle import build_bundle, encode_bundle

    data_dir = _data_dir(settings)
    key = load_identity(data_dir, SIGNER)
    bundle = build_bundle(ledger_path(data_dir), args.request_id, key, seq=args.seq)
    args.out.write_bytes(encode_bundle(bundle))
    print(f"evidence for {args.request_id} (entry {bundle['entry']['seq']}) written to {args.out}")
    return 0


def _verify_evidence(args: argparse.Namespace, settings: Settings) -> int:
    from common.identity import known_branch_keys
    from host_node.bundle import verify_bundle

    try:
        raw = args.file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {args.file}: {type(error).__name__}") from None
    if args.public_key is None and args.data_dir is None:
        key = _embedded_key(raw)
        print("warning: checked against the host key the bundle carries; pass --public-key")
    else:
        key = host_public_key(args.data_dir or Path("var"), args.public_key)
    branch_keys = known_branch_keys(args.data_dir) if args.data_dir is not None else {}
    for given in args.branch_key:
        branch_id, _, pem = given.partition("=")
        branch_keys[branch_id] = host_public_key(Path("."), Path(pem))
    checks = verify_bundle(raw, key, branch_keys)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    holds = all(check.ok for check in checks)
    print("the evidence holds" if holds else "the evidence does NOT hold")
    return 0 if holds else 4


def _embedded_key(raw: bytes) -> Ed25519PublicKey:
    try:
        pem = json.loads(raw)["host_public_key"].encode()
        key = serialization.load_pem_public_key(pem)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"the bundle carries no usable key: {type(error).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the bundle's key is not an Ed25519 key")
    return key


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    from host_node.archive import archive_journal

    segment = archive_journal(ledger_path(_data_dir(settings)), args.to)
    if segment is None:
        print("nothing new to archive: no checkpoint since the last segment")
    else:
        print(f"archived entries {segment.first_seq}..{segment.last_seq} to {segment.path}")
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from host_node.inquiry import EntryFilter, find_entries

    where = EntryFilter(
        account=args.account,
        branch_id=args.branch,
        since=args.since,
        until=args.until,
        result=args.result,
        kind=args.kind,
        request_id=args.request_id,
    )
    for entry in find_entries(ledger_path(_data_dir(settings)), where, limit=args.limit):
        print(json.dumps(entry_view(entry)) if args.json else _entry_line(entry))
    return 0


def entry_view(entry: JournalEntry) -> dict[str, Any]:
    """An entry for people to read: customer card numbers in postings masked."""
    return {
        "seq": entry.seq,
        "request_id": entry.request_id,
        "branch_id": entry.branch_id,
        "teller_id": entry.teller_id,
        "terminal_id": entry.terminal_id,
        "origin_time": entry.origin_time.isoformat() if entry.origin_time else None,
        "received_at": entry.received_at.isoformat(),
        "unpacked_at": entry.unpacked_at.isoformat(),
        "processed_at": entry.processed_at.isoformat(),
        "kind": entry.kind,
        "subject": entry.subject,
        "result": entry.result.value,
        "reason": entry.reason,
        "postings": [[_masked(p.account), p.amount] for p in entry.postings],
        "record_hash": entry.record_hash,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _masked(account: str) -> str:
    return account if is_cash_account(account) else mask_pan(account)


def _entry_line(entry: JournalEntry) -> str:
    postings = " ".join(f"{_masked(p.account)}:{p.amount:+d}" for p in entry.postings)
    return (
        f"{entry.seq:>8} {entry.processed_at.isoformat(timespec='milliseconds')} "
        f"{entry.branch_id} {entry.request_id} {entry.kind:<13} {entry.result.value} "
        f"{entry.subject or '-'} {postings}".rstrip()
    )
