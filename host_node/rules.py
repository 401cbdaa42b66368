"""The host's rules: one pure decision per request kind.

Given a request, the accounts as of now (a :class:`~host_node.ledger.Ledger`) and the crypto
node's answer to the request's PIN command, :func:`decide` returns the result code, reason,
postings and account changes. No I/O, no clock: the caller passes ``now``.

PIN kinds need the crypto node's ``00`` before the host acts. ``01`` is a wrong PIN, counted;
the third wrong PIN in a row locks the PIN (``75`` then and for every later PIN request); a
right PIN before that resets the count. An account opened without a PIN (a passbook account)
refuses PIN kinds with ``57``. No answer from the crypto node is ``91`` and moves nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any

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
    Deposit,
    OpenAccount,
    Request,
    Transfer,
    Withdraw,
)
from common.results import ResultCode
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

#: Wrong PINs in a row that lock an account's PIN.
MAX_PIN_TRIES = 3
APPROVED = "approved"
NOT_IMPLEMENTED = "not implemented yet"


def decide(request: Request, ledger: Ledger, pin: PinResponse | None, now: dt.datetime) -> Decision:
    """Decide ``request`` against the accounts in ``ledger``.

    Args:
        request: a validated request.
        ledger: the accounts as of now, including earlier decisions of the same batch.
        pin: the crypto node's answer to this request's PIN command; None when it did not
            answer (or was not asked, which only happens when the answer is not needed).
        now: the processing time, used as the opening time of a new account.
    """
    rule = _RULES.get(request.kind)
    if rule is None:
        return decline(ResultCode.INVALID_TRANSACTION, NOT_IMPLEMENTED)
    return rule(request, ledger, pin, now)


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


def _usable(ledger: Ledger, number: str, role: str = "account") -> AccountState | Decision:
    account = ledger.get(number)
    if account is None or account.kind != "customer":
        return decline(ResultCode.NO_SUCH_ACCOUNT, f"no such {role}")
    if account.status == "closed":
        return decline(ResultCode.RESTRICTED, f"{role} closed")
    return account


def _verify(account: AccountState, pin: PinResponse | None) -> AccountState | Decision:
    """A refusal, or ``account`` with its wrong-PIN count reset after a right PIN."""
    if account.pin is None:
        return decline(ResultCode.NOT_PERMITTED, "account has no PIN")
    if account.pin_tries >= MAX_PIN_TRIES:
        return decline(ResultCode.PIN_TRIES_EXCEEDED, "PIN locked")
    if pin is None:
        return decline(ResultCode.UNAVAILABLE, "crypto node unavailable")
    if pin.error is HsmError.VERIFICATION_FAILED:
        counted = replace(account, pin_tries=account.pin_tries + 1)
        if counted.pin_tries >= MAX_PIN_TRIES:
            return decline(ResultCode.PIN_TRIES_EXCEEDED, "PIN locked: third wrong PIN", counted)
        return decline(ResultCode.WRONG_PIN, "wrong PIN", counted)
    if pin.error is not HsmError.OK:
        return crypto_refusal(pin.error)
    return replace(account, pin_tries=0)


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
    return verified, (() if verified == account else (verified,))


def _open_account(
    request: OpenAccount, ledger: Ledger, pin: PinResponse | None, now: dt.datetime
) -> Decision:
    if ledger.get(request.account) is not None:
        return decline(ResultCode.ACCOUNT_EXISTS, "account number already in use")
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
    account = AccountState(request.account, request.branch_id, "customer", now, pin=record)
    document = request.id_document
    deposit = request.initial_deposit
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=cash_in(account.number, request.branch_id, deposit) if deposit else (),
        changes=(account,),
        customer=Customer(request.customer_name, document.id_type, document.number),
        report=account.number,
        amount=deposit,
        account=account.number,
    )


def _deposit(request: Deposit, ledger: Ledger, _pin: PinResponse | None, _now: object) -> Decision:
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


def _withdraw(request: Withdraw, ledger: Ledger, pin: PinResponse | None, _now: object) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    if request.amount > account.balance:
        return decline(ResultCode.INSUFFICIENT_FUNDS, "insufficient funds", *verified)
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=cash_out(account.number, request.branch_id, request.amount),
        changes=verified,
        report=account.number,
        amount=request.amount,
    )


def _transfer(request: Transfer, ledger: Ledger, pin: PinResponse | None, _now: object) -> Decision:
    if request.to_account == request.account:
        return decline(ResultCode.NOT_PERMITTED, "transfer to the same account")
    source = _usable(ledger, request.account)
    if isinstance(source, Decision):
        return source
    target = _usable(ledger, request.to_account, "target account")
    if isinstance(target, Decision):
        return target
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    if request.amount > account.balance:
        return decline(ResultCode.INSUFFICIENT_FUNDS, "insufficient funds", *verified)
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=move(account.number, target.number, request.amount),
        changes=verified,
        report=account.number,
        amount=request.amount,
    )


def _balance(request: Balance, ledger: Ledger, pin: PinResponse | None, _now: object) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, verified = held
    return Decision(ResultCode.APPROVED, APPROVED, changes=verified, report=account.number)


def _change_pin(
    request: ChangePin, ledger: Ledger, pin: PinResponse | None, _now: object
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
    request: CloseAccount, ledger: Ledger, pin: PinResponse | None, _now: object
) -> Decision:
    held = _holder(ledger, request.account, pin)
    if isinstance(held, Decision):
        return held
    account, _ = held
    payout = account.balance
    return Decision(
        ResultCode.APPROVED,
        APPROVED,
        postings=cash_out(account.number, request.branch_id, payout) if payout else (),
        changes=(replace(account, status="closed"),),
        report=account.number,
        amount=payout,
    )


_Rule = Callable[[Any, Ledger, PinResponse | None, dt.datetime], Decision]
_RULES: dict[str, _Rule] = {
    "open_account": _open_account,
    "deposit": _deposit,
    "withdraw": _withdraw,
    "transfer": _transfer,
    "balance": _balance,
    "change_pin": _change_pin,
    "close_account": _close_account,
}
