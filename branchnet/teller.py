"""``branchnet teller``: one transaction at a counter of a running network, keyed by a person.

A subcommand per request kind (``open_account`` or ``open-account``, ``withdraw``, ``freeze``,
...) with flags for its fields; amounts in yuan. The customer's PIN is typed without echo
(``getpass``) or, for scripts, read from stdin with ``--pin-stdin`` (one line per PIN: the PIN,
then the new PIN for ``change_pin``), and encrypted on the terminal's PIN pad exactly as the
simulated terminals do. The reply prints as a line, or as JSON with ``--json``.

Where a teller alone may not act (freeze, unfreeze, deduct, PIN unlock, large cash, a teller's
customer query), ``--supervisor ID`` has that supervisor sign the request with their staff key
from the data directory (``keys/identity/staff-<ID>.key``); the host verifies the signature.
``--staff`` and ``--role`` key the request as another staff member (e.g. an auditor's query);
a supervisor or auditor signs their own request with their staff key (unless ``--supervisor``
signs it).

The console works a terminal of a branch whose workload is not running at the same time: it
uses the branch's counters (``branches/<id>.json``), PIN pad keys and reply queue.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.authorisation import StaffKey
from common.money import format_fen, parse_yuan
from common.requests import PIN_KINDS, IdDocument
from common.settings import Settings

_ID_TYPES = ("resident_id", "military_officer", "passport")
ROLES = ("teller", "supervisor", "auditor")


def register_teller(commands: Any) -> None:
    """Add ``branchnet teller KIND ...``."""
    teller = commands.add_parser(
        "teller", help="run one transaction at a counter of a running network"
    )
    teller.add_argument("--amqp-url", help="RabbitMQ URL (env BRANCHNET_AMQP_URL)")
    teller.add_argument("--data-dir", help="the network's data directory (env BRANCHNET_DATA_DIR)")
    teller.add_argument("--branch", default="0001", help="branch id (default 0001)")
    teller.add_argument("--terminal", default="01", help="terminal id (default 01)")
    teller.add_argument("--json", action="store_true", help="print the reply as JSON")
    teller.add_argument("--pin-stdin", action="store_true", help="read PINs from stdin lines")
    teller.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per send")
    teller.add_argument("--staff", help="the acting staff id (default: the terminal's teller)")
    teller.add_argument(
        "--role", choices=ROLES, default="teller", help="the acting staff member's role"
    )
    kinds = teller.add_subparsers(title="kinds", metavar="KIND", required=True)
    for kind, add_fields in _KINDS.items():
        dashed = kind.replace("_", "-")
        aliases = [kind] if dashed != kind else []
        parser = kinds.add_parser(dashed, aliases=aliases, help=_HELP[kind])
        add_fields(parser)
        parser.set_defaults(run=_teller, kind=kind)


def _account(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", required=True, help="card (account) number")


def _amount(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--amount", required=required, type=parse_yuan, help="yuan, e.g. 1234.50")


def _document(parser: argparse.ArgumentParser, who: str, *, required: bool = False) -> None:
    parser.add_argument(f"--{who}-id", required=required, help=f"the {who}'s document number")
    parser.add_argument(f"--{who}-id-type", choices=_ID_TYPES, default="resident_id")


def _supervisor(parser: argparse.ArgumentParser, *, authority: bool = True) -> None:
    parser.add_argument(
        "--supervisor", help="the authorising supervisor's id (their staff key signs)"
    )
    if authority:
        parser.add_argument(
            "--authority", required=True, help="legal authority reference (court document no.)"
        )


def _open_account(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", help="card number (default: the next from stock)")
    parser.add_argument("--name", required=True, help="the customer's name")
    _document(parser, "customer", required=True)
    parser.add_argument("--deposit", type=parse_yuan, default=0, help="opening deposit, yuan")
    parser.add_argument("--no-pin", action="store_true", help="a passbook account without PIN")


def _withdraw(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _amount(parser)
    _document(parser, "withdrawer")
    _document(parser, "holder")
    _supervisor(parser, authority=False)


def _query(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--purpose", required=True, help="why the customer's data is queried")
    _supervisor(parser, authority=False)


def _transfer(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--to", required=True, help="the target account")
    _amount(parser)


def _appointment(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _amount(parser)
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")


def _freeze(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _amount(parser, required=False)
    _supervisor(parser)


def _deduct(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _amount(parser)
    _supervisor(parser)


def _unfreeze(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _supervisor(parser)


def _unlock(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _supervisor(parser, authority=False)


def _deposit(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    _amount(parser)


_HELP = {
    "open_account": "open an account (a card with a PIN, or a passbook with --no-pin)",
    "deposit": "cash in",
    "withdraw": "cash out (over 50,000: IDs; 200,000 or more: an appointment and a supervisor)",
    "transfer": "a card transfer to another account",
    "balance": "a balance inquiry",
    "change_pin": "change the PIN (old PIN, then new PIN)",
    "close_account": "close the account and pay out the balance",
    "make_appointment": "book a large cash withdrawal for a later day",
    "freeze": "freeze the whole balance or --amount (legal authority + supervisor)",
    "unfreeze": "release every freeze (legal authority + supervisor)",
    "deduct": "deduct for a legal authority (with a supervisor)",
    "unlock_pin": "unlock a PIN locked after three wrong tries (supervisor)",
    "customer_query": "look a customer's account up (a stated purpose; a teller: supervisor)",
}
_KINDS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "open_account": _open_account,
    "deposit": _deposit,
    "withdraw": _withdraw,
    "transfer": _transfer,
    "balance": _account,
    "change_pin": _account,
    "close_account": _account,
    "make_appointment": _appointment,
    "freeze": _freeze,
    "unfreeze": _unfreeze,
    "deduct": _deduct,
    "unlock_pin": _unlock,
    "customer_query": _query,
}


def _shown(args: argparse.Namespace, who: str) -> IdDocument | None:
    number = getattr(args, f"{who}_id", None)
    if not number:
        return None
    return IdDocument(id_type=getattr(args, f"{who}_id_type"), number=number)


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request's fields from the parsed flags (PINs apart)."""
    kind = args.kind
    fields: dict[str, Any] = {}
    if getattr(args, "account", None):
        fields["account"] = args.account
    if getattr(args, "amount", None) is not None:
        fields["amount"] = args.amount
    if kind == "open_account":
        fields.update(
            customer_name=args.name,
            id_document=_shown(args, "customer"),
            initial_deposit=args.deposit,
        )
    elif kind == "withdraw":
        fields.update(withdrawer=_shown(args, "withdrawer"), holder=_shown(args, "holder"))
    elif kind == "transfer":
        fields["to_account"] = args.to
    elif kind == "make_appointment":
        fields["date"] = args.date
    elif kind == "customer_query":
        fields["purpose"] = args.purpose
    if getattr(args, "authority", None):
        fields["authority_ref"] = args.authority
    return fields


def _signer(args: argparse.Namespace, data_dir: Path) -> StaffKey | None:
    """Who signs the request: the authorising ``--supervisor``, else a supervisor or auditor
    acting (``--staff`` with ``--role``) signs their own; a teller signs nothing.

    Raises:
        ConfigError: the signer has no staff key in ``data_dir``.
    """
    supervisor = getattr(args, "supervisor", None)
    if supervisor:
        return StaffKey.load(data_dir, supervisor)
    if args.role != "teller":
        if not args.staff:
            raise SystemExit(f"--role {args.role} needs --staff (whose key signs the request)")
        return StaffKey.load(data_dir, args.staff)
    return None


def _pins(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The PIN (and new PIN) the customer types, without echo or from stdin."""
    kind = args.kind
    wanted = ["PIN"] if kind in PIN_KINDS else []
    if kind == "open_account" and not args.no_pin:
        wanted = ["PIN"]
    if kind == "change_pin":
        wanted.append("new PIN")
    typed: list[str] = []
    for prompt in wanted:
        if args.pin_stdin:
            typed.append(sys.stdin.readline().strip())
        else:
            typed.append(getpass.getpass(f"customer, type the {prompt}: "))
    typed += [None] * (2 - len(typed))  # type: ignore[list-item]
    return typed[0], typed[1]


def _teller(args: argparse.Namespace, settings: Settings) -> int:
    if settings.amqp_url is None:
        raise SystemExit(
            "the teller works a running network: give --amqp-url or BRANCHNET_AMQP_URL"
        )
    data_dir = settings.data_dir or Path("var")
    fields = request_fields(args)
    supervisor = _signer(args, data_dir)
    pin, new_pin = _pins(args)
    reply = asyncio.run(
        _ask(settings.amqp_url.get_secret_value(), data_dir, args, fields, pin, new_pin, supervisor)
    )
    if args.json:
        print(json.dumps(reply, ensure_ascii=False))
    else:
        print(_line(reply))
    return 0


async def _ask(
    amqp_url: str,
    data_dir: Any,
    args: argparse.Namespace,
    fields: dict[str, Any],
    pin: str | None,
    new_pin: str | None,
    supervisor: StaffKey | None,
) -> dict[str, Any]:
    from branch_node import Branch, ClientConfig
    from branch_node.session import BranchSession
    from branchnet.buses import open_bus

    bus = open_bus(amqp_url, embedded=None, name=f"teller-{args.branch}-{args.terminal}")
    await bus.connect()
    try:
        branch = Branch(
            bus,
            args.branch,
            data_dir=data_dir,
            terminals=int(args.terminal),
            client_config=ClientConfig(timeout_s=args.timeout, retries=1),
            state_block=1,
            # the host opens sealed frames only, from a branch that signed on
            session=BranchSession.load(data_dir, args.branch),
        )
        await branch.start()
        try:
            desk = branch.desk(args.terminal, teller=args.staff, role=args.role)
            if args.kind == "open_account" and "account" not in fields:
                fields["account"] = desk.issue_card()
            reply = await desk.ask(
                args.kind, pin=pin, new_pin=new_pin, supervisor=supervisor, **fields
            )
        finally:
            await branch.stop()
    finally:
        await bus.close()
    document: dict[str, Any] = reply.model_dump(mode="json")
    document["kind"] = args.kind
    document["meaning"] = reply.result.meaning
    if args.kind == "open_account":
        document.setdefault("account", fields["account"])
        document["account"] = document["account"] or fields["account"]
    return document


def _line(reply: dict[str, Any]) -> str:
    parts = [f"{reply['result']} {reply['meaning']}: {reply['reason']}"]
    if reply.get("account"):
        parts.append(f"account {reply['account']}")
    if reply.get("balance") is not None:
        parts.append(f"balance {format_fen(reply['balance'])} CNY")
    if reply.get("amount"):
        parts.append(f"amount {format_fen(reply['amount'])} CNY")
    if reply.get("rule"):
        parts.append(f"rule {reply['rule']}")
    return "  ".join(parts)
