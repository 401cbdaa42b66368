"""``branchnet audit``: list the personal-information queries the host recorded (auditors only)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``audit`` command."""
    audit = subparsers.add_parser(
        "audit", help="list customer queries: who, when, which customer, why (auditors only)"
    )
    audit.add_argument("--staff-id", required=True, help="your staff id (the read is recorded)")
    audit.add_argument("--role", required=True, choices=["teller", "supervisor", "auditor"])
    audit.add_argument("--customer", help="only queries about this account")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument(
        "--data-dir",
        type=Path,
        help="the host's data directory (default ./var; env BRANCHNET_DATA_DIR)",
    )
    audit.set_defaults(run=_audit)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from host_node.query_trail import AuditDenied, read_trail

    data_dir = settings.data_dir or Path("var")
    try:
        records = read_trail(
            data_dir, staff_id=args.staff_id, role=args.role, customer=args.customer
        )
    except AuditDenied as error:
        print(f"refused: {error}")
        return 4
    for record in records:
        if args.json:
            print(json.dumps({**asdict(record), "at": record.at.isoformat()}))
        else:
            print(
                f"{record.at:%Y-%m-%d %H:%M:%S}  {record.staff_id} ({record.role}) "
                f"at {record.branch_id}-{record.terminal_id} queried {record.customer}: "
                f"{record.purpose!r} -> {record.result}"
            )
    if not args.json:
        print(f"{len(records)} queries")
    return 0
