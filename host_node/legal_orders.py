"""Acts that are not a teller's decision: freeze, unfreeze, deduct (扣划) and PIN unlock.

DOMAIN.md: the bank refuses to freeze or deduct a personal deposit unless the law provides
for it, so a freeze, an unfreeze or a deduction needs a legal authority reference (a court or
enforcement document number) and a supervisor's authorisation. A freeze without an amount
holds the whole balance; with one it holds that amount; deposits still come in. An unfreeze
releases every hold. A deduction pays the amount out over the counter to the authority, taking
held money first. A PIN locked after three wrong tries is unlocked by a supervisor.

Refusals: ``63`` (no valid signed supervisor authorisation: :mod:`host_node.maker_checker`),
``64`` (no usable legal authority reference), ``51`` (deduction beyond the balance), ``12``
(nothing to unfreeze or unlock).
"""

from __future__ import annotations

import re
from dataclasses import replace

from common.requests import Deduct, Freeze, Unfreeze, UnlockPin
from common.results import ResultCode
from host_node import maker_checker
from host_node.ledger import AccountState, Decision, Ledger, cash_out, decline

AUTHORITY_RULE = "legal_authority"
FREEZE_RULE = "freeze"
#: A legal document number: some text with a number in it, e.g. ``(2026)京0101执123号``.
_AUTHORITY = re.compile(r"^(?=.*\d)\S(?:.*\S)?$")


def authorised(request: Freeze | Unfreeze | Deduct | UnlockPin, ledger: Ledger) -> Decision | None:
    """The refusal when the supervisor (and, for court orders, the authority) is not valid."""
    refusal = maker_checker.check(request, ledger.staff, f"a {request.kind.replace('_', ' ')}")
    if refusal is not None:
        return refusal
    if isinstance(request, UnlockPin):
        return None
    if len(request.authority_ref) < 4 or _AUTHORITY.match(request.authority_ref) is None:
        return decline(
            ResultCode.LEGAL_AUTHORITY_REQUIRED,
            "a legal authority reference names the document (with its number)",
            rule=AUTHORITY_RULE,
        )
    return None


def _cited(request: Freeze | Unfreeze | Deduct, what: str) -> str:
    return f"{what} under {request.authority_ref} authorised by {maker_checker.checker(request)}"


def freeze(request: Freeze, account: AccountState) -> Decision:
    if request.amount is None:
        changed = replace(account, frozen=True)
        what = "whole balance frozen"
    else:
        changed = replace(account, held=account.held + request.amount)
        what = f"{request.amount} fen held"
    return Decision(
        ResultCode.APPROVED,
        _cited(request, what),
        changes=(changed,),
        report=account.number,
        amount=request.amount,
        rule=FREEZE_RULE,
    )


def unfreeze(request: Unfreeze, account: AccountState) -> Decision:
    if not account.frozen and account.held == 0:
        return decline(ResultCode.INVALID_TRANSACTION, "nothing is frozen", rule=FREEZE_RULE)
    return Decision(
        ResultCode.APPROVED,
        _cited(request, "every hold released"),
        changes=(replace(account, frozen=False, held=0),),
        report=account.number,
        rule=FREEZE_RULE,
    )


def deduct(request: Deduct, account: AccountState) -> Decision:
    if request.amount > account.balance:
        return decline(
            ResultCode.INSUFFICIENT_FUNDS, "deduction beyond the balance", rule="deduct_funds"
        )
    changed = replace(account, held=max(0, account.held - request.amount))
    return Decision(
        ResultCode.APPROVED,
        _cited(request, f"{request.amount} fen deducted"),
        postings=cash_out(account.number, request.branch_id, request.amount),
        changes=(changed,) if changed != account else (),
        report=account.number,
        amount=request.amount,
        rule="deduct",
    )


def unlock(request: UnlockPin, account: AccountState, max_tries: int) -> Decision:
    if account.pin is None or account.pin_tries < max_tries:
        return decline(ResultCode.INVALID_TRANSACTION, "the PIN is not locked", rule="pin_lockout")
    return Decision(
        ResultCode.APPROVED,
        f"PIN unlocked, authorised by {maker_checker.checker(request)}",
        changes=(replace(account, pin_tries=0),),
        report=account.number,
        rule="pin_lockout",
    )
