"""The ledger's data and arithmetic: accounts, postings, and a batch's view of them.

Double entry, credit-positive: every decision's postings sum to zero and an account's balance
is the sum of its postings. Customer accounts are card numbers; each branch's counter cash is
the ledger account :func:`common.ids.cash_account`, created on first use, so cash paid in at a
counter is a positive posting to the customer and a negative one to the branch's cash account.
A branch's cash position is therefore minus its cash account's balance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Literal, NamedTuple

from common.ids import cash_account
from common.results import ResultCode
from host_node.immutable import immutable
from host_node.staff import StaffMember

AccountKind = Literal["customer", "cash", "expense"]
AccountStatus = Literal["open", "closed"]
PinMethod = Literal["ibm3624", "visa_pvv"]
CASH_PREFIX = cash_account("")
EXPENSE_PREFIX = "INTEREST-"


class Posting(NamedTuple):
    """One leg of a journal entry: ``amount`` fen credited (positive) or debited to ``account``."""

    account: str
    amount: int


@immutable
class PinRecord:
    """The stored transform of a PIN (the "变码"): never the PIN or a PIN block."""

    value: str = field(repr=False)
    method: PinMethod = "ibm3624"
    key_version: int = 1


@immutable
class Customer:
    """The holder named at account opening; the id number is stored, never logged."""

    name: str = field(repr=False)
    id_type: str
    id_number: str = field(repr=False)


@immutable
class Appointment:
    """A large cash withdrawal booked ahead (DOMAIN.md): ``amount`` fen on ``date``."""

    date: dt.date
    amount: int
    made_on: dt.date


@immutable
class DailyUsage:
    """What an account paid out in cash and transferred on one bank day."""

    day: dt.date | None = None
    cash_out: int = 0
    transferred: int = 0

    def on(self, day: dt.date) -> DailyUsage:
        """The usage for ``day``: this one, or a fresh one when the day has turned."""
        return self if self.day == day else DailyUsage(day)

    def plus(self, cash_out: int = 0, transferred: int = 0) -> DailyUsage:
        """This usage with more paid out in cash or transferred (the hot path: no ``replace``)."""
        return DailyUsage(self.day, self.cash_out + cash_out, self.transferred + transferred)


NO_USAGE = DailyUsage()


@immutable
class AccountState:
    """An account as the host knows it now.

    ``holder`` is the customer record the account was opened for (read with the account, never
    changed by it). ``frozen`` holds the whole balance; ``held`` is the amount partial freezes
    hold. ``usage`` counts today's cash out and transfers for the daily limits;
    ``appointments`` are the large cash withdrawals booked and not yet used.
    """

    number: str
    branch_id: str
    kind: AccountKind
    opened_at: dt.datetime
    balance: int = 0
    status: AccountStatus = "open"
    pin: PinRecord | None = None
    pin_tries: int = 0
    holder: Customer | None = None
    frozen: bool = False
    held: int = 0
    usage: DailyUsage = NO_USAGE
    appointments: tuple[Appointment, ...] = ()

    @property
    def available(self) -> int:
        """What may leave the account: the balance less what freezes hold."""
        if self.frozen:
            return 0
        return max(0, self.balance - self.held)

    def credited(self, amount: int) -> AccountState:
        """This account after a posting of ``amount`` (the hot path: no ``replace``)."""
        return AccountState(
            self.number,
            self.branch_id,
            self.kind,
            self.opened_at,
            self.balance + amount,
            self.status,
            self.pin,
            self.pin_tries,
            self.holder,
            self.frozen,
            self.held,
            self.usage,
            self.appointments,
        )

    def with_usage(
        self, usage: DailyUsage, appointments: tuple[Appointment, ...] | None = None
    ) -> AccountState:
        """This account with ``usage`` (and ``appointments``, when given): a withdrawal's or
        transfer's change (the hot path: no ``replace``)."""
        return AccountState(
            self.number,
            self.branch_id,
            self.kind,
            self.opened_at,
            self.balance,
            self.status,
            self.pin,
            self.pin_tries,
            self.holder,
            self.frozen,
            self.held,
            usage,
            self.appointments if appointments is None else appointments,
        )


@immutable
class Decision:
    """What the rules decided for one request.

    ``changes`` are new or updated accounts with their balance untouched; the ``postings`` move
    the money. A decline may still change state (a wrong PIN is counted). ``report`` names the
    account whose balance after the decision goes in the reply. ``rule`` names the rule that
    decided (for a decline: the one that stopped it); ``identities`` are the identity documents
    checked, masked, for the journal.
    """

    result: ResultCode
    reason: str
    postings: tuple[Posting, ...] = ()
    changes: tuple[AccountState, ...] = ()
    customer: Customer | None = None
    report: str | None = None
    amount: int | None = None
    account: str | None = None
    rule: str = ""
    identities: tuple[str, ...] = ()

    @property
    def approved(self) -> bool:
        return self.result is ResultCode.APPROVED


def decline(
    code: ResultCode,
    reason: str,
    *changes: AccountState,
    rule: str = "",
    identities: tuple[str, ...] = (),
) -> Decision:
    """A refusal that moves no money, optionally recording ``changes`` (PIN tries)."""
    return Decision(code, reason, changes=changes, rule=rule, identities=identities)


def cash_in(account: str, branch_id: str, amount: int) -> tuple[Posting, ...]:
    """Cash paid in at ``branch_id``'s counter to ``account``."""
    return (Posting(account, amount), Posting(cash_account(branch_id), -amount))


def cash_out(account: str, branch_id: str, amount: int) -> tuple[Posting, ...]:
    """Cash paid out of ``account`` at ``branch_id``'s counter."""
    return (Posting(account, -amount), Posting(cash_account(branch_id), amount))


def move(source: str, target: str, amount: int) -> tuple[Posting, ...]:
    """A transfer from ``source`` to ``target``."""
    return (Posting(source, -amount), Posting(target, amount))


def is_cash_account(number: str) -> bool:
    return number.startswith(CASH_PREFIX)


def interest_expense_account(branch_id: str) -> str:
    """The ledger account a branch pays its depositors' interest from."""
    return f"{EXPENSE_PREFIX}{branch_id}"


def is_expense_account(number: str) -> bool:
    return number.startswith(EXPENSE_PREFIX)


class Ledger:
    """Accounts as of now within a batch: a snapshot plus the batch's decisions so far.

    Applying decisions in arrival order here is what makes a batch give the same results as
    processing its requests one by one.
    """

    def __init__(
        self,
        accounts: Mapping[str, AccountState],
        staff: Mapping[str, StaffMember] | None = None,
    ) -> None:
        self._accounts = dict(accounts)
        self._touched: dict[str, None] = {}
        self.staff: Mapping[str, StaffMember] = staff or {}

    def get(self, number: str) -> AccountState | None:
        return self._accounts.get(number)

    def apply(self, decision: Decision, at: dt.datetime) -> None:
        """Record ``decision``'s account changes, then its postings.

        Nothing is recorded when it raises.

        Raises:
            ValueError: the postings do not balance or a change tampers with a balance; both
                are defects in the rules, never the input's fault.
        """
        if balance_sum(decision.postings) != 0:
            raise ValueError("postings of one decision must sum to zero")
        accounts = self._accounts
        updated: dict[str, AccountState] = {}  # all or nothing: put once every one is made
        for change in decision.changes:
            current = accounts.get(change.number)
            if change.balance != (current.balance if current else 0):
                raise ValueError("an account change must not alter its balance")
            updated[change.number] = change
        for number, amount in decision.postings:
            account = updated.get(number) or accounts.get(number)
            updated[number] = (account or _new_cash_account(number, at)).credited(amount)
        accounts.update(updated)
        self._touched.update(dict.fromkeys(updated))

    def touched(self) -> list[AccountState]:
        """Every account created or changed so far, in its current state."""
        return [self._accounts[number] for number in self._touched]


def _new_cash_account(number: str, at: dt.datetime) -> AccountState:
    if is_expense_account(number):
        return AccountState(number, number.removeprefix(EXPENSE_PREFIX), "expense", opened_at=at)
    if not is_cash_account(number):
        raise ValueError("a posting names an account that does not exist")
    return AccountState(number, number.removeprefix(CASH_PREFIX), "cash", opened_at=at)


def balance_sum(postings: Iterable[Posting]) -> int:
    """The net of ``postings``; zero for every well-formed journal entry."""
    return sum(posting.amount for posting in postings)
