"""The host's rules: one pure decision per request kind.

Given a request, the accounts as of now (a :class:`~host_node.ledger.Ledger`) and the crypto
node's answer to the request's PIN command, :func:`decide` returns the result code, reason,
postings and account changes. No I/O, no clock: the caller passes ``now``.

PIN kinds need the crypto node's ``00`` before the host acts. ``01`` is a wrong PIN, counted;
the third wrong PIN in a row locks the PIN (``75`` then and for every later PIN request); a
right PIN before that resets the count. An account opened without a PIN (a passbook account)
refuses PIN kinds with ``57``. No answer from the crypto node is ``91`` and moves nothing.

The regulations (DOMAIN.md) on top: an account is opened only on a valid identity document
(``77``); a withdrawal over 50,000 CNY checks identities and one of 200,000 CNY or more needs
an appointment (:mod:`host_node.large_cash`, ``77``/``76``); frozen money does not leave
(``62``); daily limits (``61``); freeze, unfreeze, deduct and PIN unlock need a supervisor and,
for court orders, a legal authority (:mod:`host_node.legal_orders`); large-cash exceptions need
a supervisor too (:func:`host_node.large_cash.exception`). Before any of that, the maker's role
must match the staff table and be allowed the kind (:mod:`host_node.permissions`, ``58``);
supervisor authorisations are signed and verified (:mod:`host_node.maker_checker`, ``63``).
Every decision names its ``rule``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from common.id_documents import document_problem, masked_document
from common.pin_commands import (
    ChangePinCommand,
    GenerateOffset,
    HsmError,
    PinCommand,
    PinResponse,
    VerifyPin,
)
from common.requests import (
    PIN_KINDS,
    Balance,
    ChangePin,
    CloseAccount,
    CustomerQuery,
    Deduct,
    Deposit,
    Freeze,
    MakeAppointment,
    OpenAccount,
    Request,
    Transfer,
    Unfreeze,
    UnlockPin,
    Withdraw,
)
from common.results import ResultCode
from host_node import large_cash, legal_orders, maker_checker, permissions
from host_node.immutable import immutable
from host_node.ledger import (
    AccountState,
    Customer,
    Decision,
    Ledger,
    PinMethod,
    PinRecord,
    cash_in,
    cash_out,
    decline,
    move,
)
from host_node.policy import DEFAULT_POLICY, Policy, bank_day

#: Wrong PINs in a row that lock an account's PIN.
MAX_PIN_TRIES = 3
APPROVED = "approved"
NOT_IMPLEMENTED = "not implemented yet"


def decide(
    request: Request,
    ledger: Ledger,
    pin: PinResponse | None,
    now: dt.datetime,
    policy: Policy = DEFAULT_POLICY,
) -> Decision:
    """Decide ``request`` against the accounts in ``ledger``.

    Args:
        request: a validated request.
        ledger: the accounts as of now, including earlier decisions of the same batch.
        pin: the crypto node's answer to this request's PIN command; None when it did not
            answer (or was not asked, which only happens when the answer is not needed).
        now: the processing time: a new account's opening time, and the bank day for
            appointments and daily limits.
        policy: thresholds and limits.
    """
    rule = _RULES.get(request.kind)
    if rule is None:
        return decline(ResultCode.INVALID_TRANSACTION, NOT_IMPLEMENTED, rule="kind")
    refusal = permissions.role_refusal(request, ledger.staff)
    if refusal is not None:
        return refusal
    return rule(request, ledger, pin, _Context(now, bank_day(now), policy))


def pin_command(
    request: Request,
    account: AccountState | None,
    command_id: str,
    method: PinMethod = "ibm3624",
) -> PinCommand | None:
    """The command to send the crypto node for ``request``, or None when none is needed.

    ``account`` is the request's account as stored before the batch; ``method`` is how a new
    PIN is recorded (IBM 3624 offset or Visa PVV; a PIN is verified by its record's method).
    Accounts whose PIN may change inside the batch are the caller's to hold back (see
    :func:`changes_pin`).
    """
    if isinstance(request, OpenAccount):
        if request.pin is None or account is not None:
            return None
        return GenerateOffset(
            command_id=command_id,
            pan=request.account,
            pin=request.pin,
            method=method,
            binding=request.request_id,
        )
    if request.kind not in PIN_KINDS or account is None:
        return None
    if account.kind != "customer" or account.status != "open" or account.pin is None:
        return None
    if account.pin_tries >= MAX_PIN_TRIES:
        return None
    check: dict[str, Any] = {
        "command_id": command_id,
        "pan": account.number,
        "pin": request.pin,  # type: ignore[union-attr]
        "method": account.pin.method,
        "verification_value": account.pin.value,
        "key_version": account.pin.key_version,
        "binding": request.request_id,
    }
    if isinstance(request, ChangePin):
        return ChangePinCommand(new_pin=request.new_pin, **check)
    return VerifyPin(**check)


def needs_crypto(request: Request) -> bool:
    """True when ``request`` cannot be decided without the crypto node."""
    if isinstance(request, OpenAccount):
        return request.pin is not None
    return request.kind in PIN_KINDS


def changes_pin(request: Request) -> bool:
    """True when ``request`` may give its account a new PIN verification value."""
    return isinstance(request, OpenAccount | ChangePin)


def accounts_named(request: Request) -> tuple[str, ...]:
    """The customer accounts ``request`` names."""
    if isinstance(request, Transfer):
        return (request.account, request.to_account)
    account: str = request.account
    return (account,)


def crypto_refusal(error: HsmError) -> Decision:
    """The decline for a crypto node error other than a wrong PIN."""
    if error is HsmError.FORMAT_ERROR:
        return decline(ResultCode.FORMAT_ERROR, "PIN block rejected by the crypto node")
    return decline(ResultCode.SYSTEM_ERROR, f"crypto node error {error.value}")


@immutable
class _Context:
    now: dt.datetime
    today: dt.date
    policy: Policy


def _usable(ledger: Ledger, number: str, role: str = "account") -> AccountState | Decision:
    account = ledger.get(number)
    if account is None or account.kind != "customer":
        return decline(ResultCode.NO_SUCH_ACCOUNT, f"no such {role}", rule="account")
    if account.status == "closed":
        return decline(ResultCode.RESTRICTED, f"{role} closed", rule="closed")
    return account


def _verify(account: AccountState, pin: PinResponse | None) -> AccountState | Decision:
    """A refusal, or ``account`` with its wrong-PIN count reset after a right PIN."""
    if account.pin is None:
        return decline(ResultCode.NOT_PERMITTED, "account has no PIN", rule="passbook")
    if account.pin_tries >= MAX_PIN_TRIES:
        return decline(ResultCode.PIN_TRIES_EXCEEDED, "PIN locked", rule="pin_lockout")
    if pin is None:
        return decline(ResultCode.UNAVAILABLE, "crypto node unavailable")
    if pin.error is HsmError.VERIFICATION_FAILED:
        counted = replace(account, pin_tries=account.pin_tries + 1)
        if counted.pin_tries >= MAX_PIN_TRIES:
            return decline(
                ResultCode.PIN_TRIES_EXCEEDED,
                "PIN locked: third wrong PIN",
                counted,
                rule="pin_lockout",
            )
        return decline(ResultCode.WRONG_PIN, "wrong PIN", counted, rule="pin")
    if pin.error is not HsmError.OK:
        return crypto_refusal(pin.error)
    return account if account.pin_tries == 0 else replace(account, pin_tries=0)


def _holder(
    ledger: Ledger, number: str, pin: PinResponse | None
) -> tuple[AccountState, tuple[AccountState, ...]] | Decision:
    """The account behind a PIN request, verified, and the change verifying it made."""
    account = _usable(ledger, number)
    if isinstance(account, Decision):
        return account
    verified = _verify(account, pin)
    if isinstance(verified, Decision):
        return verified
    return verified, (() if verified is account else (verified,))


def _open_account(
    request: OpenAccount, ledger: Ledger, pin: PinResponse | None, context: _Context
) -> Decision:
    if ledger.get(request.account) is not None:
        return decline(ResultCode.ACCOUNT_EXISTS, "account number already in use", rule="account")
    document = request.id_document
    shown = (masked_document(document.id_type, document.number),)
    problem = document_problem(document.id_type, document.number, context.today)
    if problem is not None:
        return decline(
            ResultCode.IDENTITY_CHECK_FAILED, problem, rule="id_document", identities=shown
        )
    record = None
    if request.pin is not None:
        if pin is None:
            return decline(ResultCode.UNAVAILABLE, "crypto node unavailable")
        if pin.error is not HsmError.OK:
            return crypto_refusal(pin.error)
        if pin.verification_value is None:
            return decline(ResultCode.SYSTEM_ERROR, "crypto node gave no verification value")
        method = pin.method or "ibm3624"
        record = PinRecord(pin.verification_value, method, pin.key_version or 1)
    customer = Customer(request.customer_name, document.id_type, document.number)
    account = AccountState(
        request.account, request.branch_id, "customer", context.now, pin=record, holder=customer
    )
    deposit = request.initial_deposit
    return Decision(
        ResultCode.APPROVED,
        APPROVED if record else "approved: passbook account without a PIN (no card transfers)",
        postings=cash_in(account.number, request.branch_id, deposit) if deposit else (),
        changes=(account,),
        customer=customer,
        report=account.number,
        amount=deposit,
        account=account.number,
        rule="id_document",
        identities=shown,
    )


def _deposit(
    request: Deposit, ledger: Ledger, _pin: PinResponse | None, _context: _Context
) -> Decision:
    account = _usable(ledger, request.account)
    if isinstance(account, Decision):
        return account
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=cash_in(account.number, request.branch_id, request.amount),
        report=account.number,
        amount=request.amount,
    )


def _within_funds(
    account: AccountState, amount: int, verified: tuple[AccountState, ...]
) -> Decision | None:
    """The refusal when ``amount`` exceeds the balance (``51``) or what freezes leave (``62``)."""
    if amount > account.balance:
        return decline(ResultCode.INSUFFICIENT_FUNDS, "insufficient funds", *verified, rule="funds")
    if amount > account.available:
        reason = "the account is frozen" if account.frozen else "the amount is held by a freeze"
        return decline(ResultCode.RESTRICTED, reason, *verified, rule="freeze")
    return None


def _over_limit(
    used: int, amount: int, limit: int | None, what: str, verified: tuple[AccountState, ...]
) -> Decision | None:
    if limit is None or used + amount <= limit:
        return None
    rule = f"daily_{what.replace(' ', '_')}_limit"
    return decline(ResultCode.OVER_LIMIT, f"over the daily {what} limit", *verified, rule=rule)


def _withdraw(
    request: Withdraw, ledger: Ledger, pin: PinResponse | None, context: _Context
) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    policy = context.policy
    checked = large_cash.identity_check(request, account, policy, context.today)
    if isinstance(checked, Decision):
        return replace(checked, changes=verified)
    remaining = large_cash.use_appointment(request, account, policy, context.today)
    if isinstance(remaining, Decision):
        return replace(remaining, changes=verified, identities=checked)
    exception = large_cash.exception(request, account, policy)
    if exception is not None:
        refused = maker_checker.check(request, ledger.staff, exception)
        if refused is not None:
            return replace(refused, changes=verified, identities=checked)
    usage = account.usage.on(context.today)
    refusal = _within_funds(account, request.amount, verified) or _over_limit(
        usage.cash_out, request.amount, policy.daily_cash_out_limit, "cash out", verified
    )
    if refusal is not None:
        return replace(refusal, identities=checked)
    changed = account.with_usage(usage.plus(cash_out=request.amount), remaining)
    large = request.amount >= policy.appointment_from
    rule = large_cash.IDENTITY_RULE if checked else ""
    return Decision(
        ResultCode.APPROVED,
        "approved: appointment used" if large else APPROVED,
        postings=cash_out(account.number, request.branch_id, request.amount),
        changes=(changed,),
        report=account.number,
        amount=request.amount,
        rule=large_cash.APPOINTMENT_RULE if large else rule,
        identities=checked,
    )


def _transfer(
    request: Transfer, ledger: Ledger, pin: PinResponse | None, context: _Context
) -> Decision:
    if request.to_account == request.account:
        return decline(ResultCode.NOT_PERMITTED, "transfer to the same account", rule="transfer")
    source = _usable(ledger, request.account)
    if isinstance(source, Decision):
        return source
    if source.pin is None:
        return decline(
            ResultCode.NOT_PERMITTED,
            "an account without a PIN may not make card transfers",
            rule="passbook",
        )
    target = _usable(ledger, request.to_account, "target account")
    if isinstance(target, Decision):
        return target
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    usage = account.usage.on(context.today)
    refusal = _within_funds(account, request.amount, verified) or _over_limit(
        usage.transferred,
        request.amount,
        context.policy.daily_transfer_limit,
        "transfer",
        verified,
    )
    if refusal is not None:
        return refusal
    changed = account.with_usage(usage.plus(transferred=request.amount))
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=move(account.number, target.number, request.amount),
        changes=(changed,),
        report=account.number,
        amount=request.amount,
    )


def _balance(
    request: Balance, ledger: Ledger, pin: PinResponse | None, _context: _Context
) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    return Decision(ResultCode.APPROVED, APPROVED, changes=verified, report=account.number)


def _change_pin(
    request: ChangePin, ledger: Ledger, pin: PinResponse | None, _context: _Context
) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    if pin is None or pin.verification_value is None or account.pin is None:
        return decline(ResultCode.SYSTEM_ERROR, "crypto node gave no verification value", *verified)
    record = PinRecord(pin.verification_value, account.pin.method, pin.key_version or 1)
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        changes=(replace(account, pin=record),),
        report=account.number,
    )


def _close_account(
    request: CloseAccount, ledger: Ledger, pin: PinResponse | None, _context: _Context
) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    if account.frozen or account.held:
        return decline(
            ResultCode.RESTRICTED, "a frozen account cannot be closed", *verified, rule="freeze"
        )
    payout = account.balance
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=cash_out(account.number, request.branch_id, payout) if payout else (),
        changes=(replace(account, status="closed", pin_tries=0),),
        report=account.number,
        amount=payout,
        rule="closed",
    )


def _make_appointment(
    request: MakeAppointment, ledger: Ledger, _pin: PinResponse | None, context: _Context
) -> Decision:
    account = _usable(ledger, request.account)
    if isinstance(account, Decision):
        return account
    return large_cash.book(request, account, context.policy, context.today)


def _supervised(
    request: Freeze | Unfreeze | Deduct | UnlockPin,
    ledger: Ledger,
    _pin: PinResponse | None,
    _context: _Context,
) -> Decision:
    refusal = legal_orders.authorised(request, ledger)
    if refusal is not None:
        return refusal
    account = _usable(ledger, request.account)
    if isinstance(account, Decision):
        return account
    if isinstance(request, Freeze):
        return legal_orders.freeze(request, account)
    if isinstance(request, Unfreeze):
        return legal_orders.unfreeze(request, account)
    if isinstance(request, Deduct):
        return legal_orders.deduct(request, account)
    return legal_orders.unlock(request, account, MAX_PIN_TRIES)


def _customer_query(
    request: CustomerQuery, ledger: Ledger, _pin: PinResponse | None, _context: _Context
) -> Decision:
    return permissions.customer_query(request, ledger)


_Rule = Callable[[Any, Ledger, PinResponse | None, _Context], Decision]
_RULES: dict[str, _Rule] = {
    "open_account": _open_account,
    "deposit": _deposit,
    "withdraw": _withdraw,
    "transfer": _transfer,
    "balance": _balance,
    "change_pin": _change_pin,
    "close_account": _close_account,
    "make_appointment": _make_appointment,
    "freeze": _supervised,
    "unfreeze": _supervised,
    "deduct": _supervised,
    "unlock_pin": _supervised,
    "customer_query": _customer_query,
}
