"""Large cash withdrawals (DOMAIN.md, the case in the seed): identity checks and appointments.

- More than 50,000 CNY: the withdrawer shows a valid identity document; when it is not the
  holder's own (someone else withdraws), the holder's document must be shown too and must
  match the customer record. Otherwise ``77``.
- 200,000 CNY or more in cash: an appointment for that account, for today, for at least that
  amount, made on an earlier calendar day; it is used up. Otherwise ``76``.

Either kind of large cash is an exception a teller alone may not pay out: cash of 200,000 CNY
or more, and more than 50,000 CNY to someone other than the holder (the seed's case), also need
a supervisor's signed authorisation (:func:`exception`, checked by host_node.maker_checker).

The checks are pure: they take the account as the host knows it and return a refusal or what
the approval changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from common.id_documents import document_problem, masked_document
from common.requests import IdDocument, MakeAppointment, Withdraw
from common.results import ResultCode
from host_node.ledger import AccountState, Appointment, Customer, Decision, decline
from host_node.policy import Policy

IDENTITY_RULE = "large_cash_identity"
APPOINTMENT_RULE = "large_cash_appointment"
APPOINTMENT_DATE_RULE = "appointment_date"


def _shown(document: IdDocument) -> str:
    return masked_document(document.id_type, document.number)


def _matches(document: IdDocument, holder: Customer) -> bool:
    return (document.id_type, document.number) == (holder.id_type, holder.id_number)


def identity_check(
    request: Withdraw, account: AccountState, policy: Policy, today: dt.date
) -> Decision | tuple[str, ...]:
    """The ``77`` refusal, or the masked documents checked (empty when none was needed)."""
    if request.amount <= policy.agent_identity_over:
        return ()
    withdrawer = request.withdrawer
    if withdrawer is None:
        return _refuse("the withdrawer's identity document is required over 50,000 CNY", ())
    checked: tuple[str, ...] = (f"withdrawer {_shown(withdrawer)}",)
    problem = document_problem(withdrawer.id_type, withdrawer.number, today)
    if problem is not None:
        return _refuse(f"withdrawer's document: {problem}", checked)
    holder = account.holder
    if holder is None:
        return _refuse("the account has no customer record to check against", checked)
    if _matches(withdrawer, holder):
        return (f"withdrawer {_shown(withdrawer)} = holder",)
    shown = request.holder
    if shown is None:
        return _refuse("someone other than the holder: the holder's document is required", checked)
    checked += (f"holder {_shown(shown)}",)
    if not _matches(shown, holder):
        return _refuse("the holder's document does not match the customer record", checked)
    return (*checked, "holder matches the customer record")


def _refuse(reason: str, checked: tuple[str, ...]) -> Decision:
    return decline(ResultCode.IDENTITY_CHECK_FAILED, reason, rule=IDENTITY_RULE, identities=checked)


def exception(request: Withdraw, account: AccountState, policy: Policy) -> str | None:
    """What makes ``request`` a large-cash exception for a supervisor to authorise, or None.

    Call after :func:`identity_check` passed (over 50,000 CNY the withdrawer's document is
    then known to be valid).
    """
    if request.amount >= policy.appointment_from:
        return "cash of 200,000 CNY or more"
    if request.amount <= policy.agent_identity_over:
        return None
    withdrawer, holder = request.withdrawer, account.holder
    if withdrawer is not None and holder is not None and _matches(withdrawer, holder):
        return None
    return "cash over 50,000 CNY to someone other than the holder"


def use_appointment(
    request: Withdraw, account: AccountState, policy: Policy, today: dt.date
) -> Decision | tuple[Appointment, ...]:
    """The ``76`` refusal, or the account's appointments after using the one that covers it."""
    if request.amount < policy.appointment_from:
        return account.appointments
    for index, booked in enumerate(account.appointments):
        if booked.date == today and booked.amount >= request.amount and booked.made_on < today:
            return account.appointments[:index] + account.appointments[index + 1 :]
    return decline(
        ResultCode.APPOINTMENT_REQUIRED,
        "cash of 200,000 CNY or more needs an appointment made the day before",
        rule=APPOINTMENT_RULE,
    )


def book(
    request: MakeAppointment, account: AccountState, policy: Policy, today: dt.date
) -> Decision:
    """Book a large cash withdrawal: for a later day, within the account's appointment cap."""
    if request.date <= today:
        return decline(
            ResultCode.INVALID_TRANSACTION,
            "an appointment is made at least one calendar day before the withdrawal",
            rule=APPOINTMENT_DATE_RULE,
        )
    current = tuple(a for a in account.appointments if a.date >= today)
    if len(current) >= policy.max_appointments:
        return decline(
            ResultCode.OVER_LIMIT, "too many appointments on this account", rule="appointment_cap"
        )
    booked = Appointment(request.date, request.amount, today)
    changed = replace(account, appointments=(*current, booked))
    return Decision(
        ResultCode.APPROVED,
        "approved",
        changes=(changed,),
        report=account.number,
        rule=APPOINTMENT_RULE,
    )
