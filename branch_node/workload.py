"""The workload model: what a terminal's customers ask for next, and what it expects back.

Pure and seeded: a :class:`WorkloadModel` draws from its own ``random.Random`` and learns only
from the replies it is shown, so the same seed and the same replies give the same requests.
A terminal first opens a few accounts (a customer name, a resident ID number, a 6-digit PIN
the customer remembers; some passbook accounts have no PIN), then serves a weighted mix of
deposits, withdrawals, transfers, balance inquiries, PIN changes and the odd account opening or
closing (and, when the mix asks for them, customer queries the branch supervisor authorises:
the maker-checker path), with a share of mistyped PINs and of withdrawals beyond the balance.
Cash stays within what a teller may pay alone: the holder's own withdrawals under 200,000 CNY,
so no large-cash exception needs a supervisor. The model keeps
what it believes about each account (balance, PIN, wrong tries, locked or closed) and never
chooses an account it believes locked, closed or in doubt.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType

from branch_node.resident_id import resident_id
from common.money import yuan
from common.replies import Reply
from common.results import ResultCode

_BORN_AFTER = dt.date(1945, 1, 1)
_BORN_BEFORE = dt.date(2006, 1, 1)
#: Cash over this needs the withdrawer's identity document at the counter (DOMAIN.md).
LARGE_CASH = yuan(50_000)
#: Cash of this much or more needs an appointment made the day before (DOMAIN.md); the
#: workload stays under it.
APPOINTMENT_CASH = yuan(200_000)
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国红玲文斌"


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of the request kinds once a terminal's first accounts are open."""

    deposit: float = 30.0
    withdraw: float = 25.0
    transfer: float = 12.0
    balance: float = 15.0
    change_pin: float = 3.0
    open_account: float = 4.0
    close_account: float = 1.0
    #: A staff query of a customer's account, authorised by the branch supervisor (off by
    #: default; the branch then needs the supervisor's staff key).
    customer_query: float = 0.0

    def __post_init__(self) -> None:
        weights = [getattr(self, f.name) for f in fields(self)]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("mix weights must be non-negative and not all zero")

    def items(self) -> tuple[tuple[str, float], ...]:
        return tuple((f.name, float(getattr(self, f.name))) for f in fields(self))


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """How a terminal's customers behave.

    Args:
        mix: weights of the request kinds.
        opening_accounts: accounts each terminal opens before anything else.
        max_accounts: no more openings once a terminal has this many usable accounts.
        passbook_share: share of new accounts opened without a PIN (deposits only).
        returning_customer_share: share of new accounts opened by a customer already known.
        wrong_pin_rate: share of PIN requests where the customer mistypes the PIN.
        overdraft_rate: share of withdrawals and transfers for more than the known balance.
        pin_try_limit: wrong PINs in a row after which the host locks the account.
    """

    mix: Mix = field(default_factory=Mix)
    opening_accounts: int = 3
    max_accounts: int = 12
    passbook_share: float = 0.1
    returning_customer_share: float = 0.25
    wrong_pin_rate: float = 0.05
    overdraft_rate: float = 0.03
    pin_try_limit: int = 3

    def __post_init__(self) -> None:
        if self.opening_accounts < 1 or self.max_accounts < self.opening_accounts:
            raise ValueError("need 1 <= opening_accounts <= max_accounts")
        if self.pin_try_limit < 1:
            raise ValueError("pin_try_limit must be at least 1")
        shares = (self.passbook_share, self.returning_customer_share)
        if not all(0.0 <= s <= 1.0 for s in shares):
            raise ValueError("shares must lie in [0, 1]")
        if self.wrong_pin_rate < 0 or self.overdraft_rate < 0:
            raise ValueError("rates must be non-negative")
        if self.wrong_pin_rate + self.overdraft_rate > 1.0:
            raise ValueError("wrong_pin_rate + overdraft_rate must not exceed 1")


class AccountStatus(StrEnum):
    OPEN = "open"
    LOCKED = "locked"  # too many wrong PINs
    CLOSED = "closed"
    RESTRICTED = "restricted"  # the host refused it (62, 14): frozen, closed or unknown
    IN_DOUBT = "in_doubt"  # a lost reply left its existence, PIN or state unknown


@dataclass(frozen=True, slots=True)
class Customer:
    name: str = field(repr=False)
    id_number: str = field(repr=False)


@dataclass(slots=True)
class KnownAccount:
    """What the terminal believes about one account it opened."""

    number: str
    customer: Customer
    pin: str | None = field(repr=False)
    balance: int | None  # None when a lost reply left it unknown
    status: AccountStatus = AccountStatus.OPEN
    wrong_tries: int = 0

    @property
    def usable(self) -> bool:
        return self.status is AccountStatus.OPEN


@dataclass(frozen=True, slots=True)
class Intent:
    """One request as the customer means it, before the terminal adds ids and PIN blocks.

    ``pin`` is what the customer types (possibly wrong); ``id_number`` the resident ID shown
    at the counter (account opening, large cash); ``expect`` the result the model predicts.
    """

    kind: str
    account: str
    expect: ResultCode
    amount: int | None = None
    to_account: str | None = None
    pin: str | None = field(default=None, repr=False)
    new_pin: str | None = field(default=None, repr=False)
    customer: Customer | None = None
    id_number: str | None = field(default=None, repr=False)
    #: A teller alone may not do it: the terminal has the branch supervisor sign it.
    supervised: bool = False

    @property
    def cash_in(self) -> bool:
        """Approval means counter cash came in."""
        return self.kind in ("deposit", "open_account")

    @property
    def cash_out(self) -> bool:
        """Approval means counter cash was paid out."""
        return self.kind in ("withdraw", "close_account")


class WorkloadModel:
    """One terminal's customers: a seeded source of intents that learns from replies.

    Args:
        seed: anything ``random.Random`` accepts; use one per terminal.
        config: the behaviour.
        issue_card: hands out the next card number from the terminal's stock.
    """

    def __init__(self, seed: object, config: WorkloadConfig, issue_card: Callable[[], str]) -> None:
        self.config = config
        self._rng = random.Random(str(seed))
        self._issue_card = issue_card
        self._accounts: dict[str, KnownAccount] = {}
        self._opened = 0
        self._outstanding: Intent | None = None
        self._builders: dict[str, Callable[[], Intent | None]] = {
            "deposit": self._deposit,
            "withdraw": self._withdraw,
            "transfer": self._transfer,
            "balance": self._balance,
            "change_pin": self._change_pin,
            "open_account": self._open_account,
            "close_account": self._close_account,
            "customer_query": self._customer_query,
        }
        self._kinds, self._weights = zip(*config.mix.items(), strict=True)

    @property
    def accounts(self) -> Mapping[str, KnownAccount]:
        """Every account this terminal opened (or tried to), by number."""
        return MappingProxyType(self._accounts)

    def next_intent(self) -> Intent:
        """Choose the next request. Call :meth:`observe` with its outcome before the next one.

        Raises:
            RuntimeError: the previous intent's outcome was not observed yet.
        """
        if self._outstanding is not None:
            raise RuntimeError("observe the previous intent's outcome first")
        intent = self._choose()
        self._outstanding = intent
        return intent

    def observe(self, intent: Intent, reply: Reply | None) -> None:
        """Learn from the host's reply to ``intent``; ``None`` means no reply ever came."""
        if intent is not self._outstanding:
            raise ValueError("observe() must be given the outstanding intent")
        self._outstanding = None
        if reply is None:
            self._lost(intent)
        elif reply.result is ResultCode.APPROVED:
            self._approved(intent, reply)
        else:
            self._declined(intent, reply)

    # -- choosing ---------------------------------------------------------------------------

    def _choose(self) -> Intent:
        usable = self._usable()
        if self._opened < self.config.opening_accounts or not usable:
            return self._open()
        unknown = [a for a in usable if a.balance is None and a.pin is not None]
        if unknown:  # a lost reply left a balance unknown: ask before moving money
            return self._balance_of(unknown[0])
        kind = self._rng.choices(self._kinds, self._weights)[0]
        return self._builders[kind]() or self._deposit()

    def _usable(self, *, with_pin: bool = False) -> list[KnownAccount]:
        return [
            a for a in self._accounts.values() if a.usable and (a.pin is not None or not with_pin)
        ]

    def _open_account(self) -> Intent | None:
        if len(self._usable()) >= self.config.max_accounts:
            return None
        return self._open()

    def _open(self) -> Intent:
        rng = self._rng
        known = sorted({a.customer for a in self._accounts.values()}, key=lambda c: c.id_number)
        if known and rng.random() < self.config.returning_customer_share:
            customer = rng.choice(known)
        else:
            customer = Customer(self._name(), self._id_number())
        pin = None if rng.random() < self.config.passbook_share else self._new_pin()
        initial = 0 if rng.random() < 0.2 else self._cash_amount()
        self._opened += 1
        return Intent(
            kind="open_account",
            account=self._issue_card(),
            expect=ResultCode.APPROVED,
            amount=initial,
            pin=pin,
            customer=customer,
            id_number=customer.id_number,
        )

    def _deposit(self) -> Intent:
        account = self._rng.choice(self._usable())
        return Intent("deposit", account.number, ResultCode.APPROVED, amount=self._cash_amount())

    def _withdraw(self) -> Intent | None:
        candidates = [a for a in self._usable(with_pin=True) if a.balance is not None]
        if not candidates:
            return None
        account = self._rng.choice(candidates)
        balance = account.balance or 0
        pin, expect, overdraft = self._typed_pin(account)
        if overdraft and balance + yuan(5_000) >= APPOINTMENT_CASH:
            # so much cash would need an appointment first: withdraw within the balance
            overdraft, expect = False, ResultCode.APPROVED
        if overdraft:
            amount = balance + yuan(100 * self._rng.randint(1, 50))
        elif balance == 0:
            return None
        else:
            amount = self._cash_withdrawal(balance)
        large = amount > LARGE_CASH
        return Intent(
            "withdraw",
            account.number,
            expect,
            amount=amount,
            pin=pin,
            id_number=account.customer.id_number if large else None,
        )

    def _transfer(self) -> Intent | None:
        sources = [a for a in self._usable(with_pin=True) if a.balance is not None]
        if not sources:
            return None
        source = self._rng.choice(sources)
        targets = [a for a in self._usable() if a.number != source.number]
        if not targets:
            return None
        target = self._rng.choice(targets)
        balance = source.balance or 0
        pin, expect, overdraft = self._typed_pin(source)
        if overdraft:
            amount = balance + yuan(self._rng.randint(1, 5000))
        elif balance == 0:
            return None
        else:
            amount = self._part_of(balance, limit=yuan(50_000))
        return Intent(
            "transfer", source.number, expect, amount=amount, to_account=target.number, pin=pin
        )

    def _balance(self) -> Intent | None:
        candidates = self._usable(with_pin=True)
        if not candidates:
            return None
        account = self._rng.choice(candidates)
        pin, expect, _ = self._typed_pin(account, overdraft_possible=False)
        return Intent("balance", account.number, expect, pin=pin)

    def _balance_of(self, account: KnownAccount) -> Intent:
        return Intent("balance", account.number, ResultCode.APPROVED, pin=account.pin)

    def _change_pin(self) -> Intent | None:
        candidates = self._usable(with_pin=True)
        if not candidates:
            return None
        account = self._rng.choice(candidates)
        pin, expect, _ = self._typed_pin(account, overdraft_possible=False)
        new_pin = self._new_pin()
        while new_pin == account.pin:
            new_pin = self._new_pin()
        return Intent("change_pin", account.number, expect, pin=pin, new_pin=new_pin)

    def _close_account(self) -> Intent | None:
        if len(self._usable()) <= self.config.opening_accounts:
            return None
        candidates = self._usable(with_pin=True)
        if not candidates:
            return None
        account = self._rng.choice(candidates)
        pin, expect, _ = self._typed_pin(account, overdraft_possible=False)
        return Intent("close_account", account.number, expect, pin=pin)

    def _customer_query(self) -> Intent:
        account = self._rng.choice(self._usable())
        return Intent("customer_query", account.number, ResultCode.APPROVED, supervised=True)

    def _typed_pin(
        self, account: KnownAccount, *, overdraft_possible: bool = True
    ) -> tuple[str, ResultCode, bool]:
        """The PIN the customer types, the expected result, and whether to overdraw."""
        assert account.pin is not None
        roll = self._rng.random()
        if roll < self.config.wrong_pin_rate:
            wrong = self._new_pin()
            while wrong == account.pin:
                wrong = self._new_pin()
            tries_left = self.config.pin_try_limit - account.wrong_tries
            expect = ResultCode.WRONG_PIN if tries_left > 1 else ResultCode.PIN_TRIES_EXCEEDED
            return wrong, expect, False
        if overdraft_possible and roll < self.config.wrong_pin_rate + self.config.overdraft_rate:
            return account.pin, ResultCode.INSUFFICIENT_FUNDS, True
        return account.pin, ResultCode.APPROVED, False

    # -- amounts and people -----------------------------------------------------------------

    def _cash_amount(self) -> int:
        """A counter deposit: mostly round hundreds, some odd sums, a few large ones."""
        rng = self._rng
        roll = rng.random()
        if roll < 0.85:
            return yuan(100 * rng.randint(1, 100))
        if roll < 0.98:
            return yuan(rng.randint(1, 9_999), rng.randint(0, 99))
        return yuan(1_000 * rng.randint(20, 300))

    def _cash_withdrawal(self, balance: int) -> int:
        """Cash out of ``balance``: round hundreds when it allows, never over 50,000 yuan."""
        hundreds = min(balance, LARGE_CASH) // yuan(100)
        if hundreds >= 1:
            return yuan(100 * self._rng.randint(1, hundreds))
        return self._rng.randint(1, balance)

    def _part_of(self, balance: int, *, limit: int) -> int:
        """A whole-yuan amount up to ``balance`` and ``limit`` (fen when under one yuan)."""
        whole = min(balance, limit) // yuan(1)
        if whole >= 1:
            return yuan(self._rng.randint(1, whole))
        return self._rng.randint(1, balance)

    def _new_pin(self) -> str:
        while True:
            pin = f"{self._rng.randrange(1_000_000):06d}"
            if len(set(pin)) > 2:  # customers are told not to pick 111111 or 121212
                return pin

    def _name(self) -> str:
        given = "".join(self._rng.choices(_GIVEN, k=self._rng.choice((1, 2))))
        return self._rng.choice(_SURNAMES) + given

    def _id_number(self) -> str:
        return resident_id(self._rng, born_after=_BORN_AFTER, born_before=_BORN_BEFORE)

    # -- learning ---------------------------------------------------------------------------

    def _approved(self, intent: Intent, reply: Reply) -> None:
        moved = reply.amount if reply.amount is not None else intent.amount or 0
        if intent.kind == "open_account":
            assert intent.customer is not None
            self._accounts[intent.account] = KnownAccount(
                intent.account,
                intent.customer,
                intent.pin,
                reply.balance if reply.balance is not None else moved,
            )
            return
        account = self._accounts[intent.account]
        account.wrong_tries = 0
        if intent.kind == "deposit":
            self._set_balance(account, reply.balance, +moved)
        elif intent.kind == "withdraw":
            self._set_balance(account, reply.balance, -moved)
        elif intent.kind == "transfer":
            self._set_balance(account, reply.balance, -moved)
            assert intent.to_account is not None
            self._set_balance(self._accounts[intent.to_account], None, +moved)
        elif intent.kind == "customer_query":
            self._set_balance(account, reply.balance, 0)
        elif intent.kind == "balance":
            if reply.balance is None:  # nothing learnt; stop asking about it
                account.status = AccountStatus.IN_DOUBT
            self._set_balance(account, reply.balance, 0)
        elif intent.kind == "change_pin":
            account.pin = intent.new_pin
        elif intent.kind == "close_account":
            account.status = AccountStatus.CLOSED
            account.balance = 0

    @staticmethod
    def _set_balance(account: KnownAccount, reported: int | None, delta: int) -> None:
        if reported is not None:
            account.balance = reported
        elif account.balance is not None:
            account.balance += delta

    def _declined(self, intent: Intent, reply: Reply) -> None:
        account = self._accounts.get(intent.account)
        if account is None:  # an opening that failed: the card is spoiled, nothing to learn
            return
        result = reply.result
        if result is ResultCode.WRONG_PIN:
            account.wrong_tries += 1
            if account.wrong_tries >= self.config.pin_try_limit:
                account.status = AccountStatus.LOCKED
        elif result is ResultCode.PIN_TRIES_EXCEEDED:
            account.status = AccountStatus.LOCKED
        elif result in (ResultCode.RESTRICTED, ResultCode.NO_SUCH_ACCOUNT):
            account.status = AccountStatus.RESTRICTED
        elif result is ResultCode.INSUFFICIENT_FUNDS and reply.balance is not None:
            account.balance = reply.balance

    def _lost(self, intent: Intent) -> None:
        """No reply: whatever the request could have changed is now in doubt."""
        if intent.kind == "open_account":
            assert intent.customer is not None
            self._accounts[intent.account] = KnownAccount(
                intent.account, intent.customer, intent.pin, None, AccountStatus.IN_DOUBT
            )
            return
        account = self._accounts[intent.account]
        if intent.kind in ("change_pin", "close_account"):
            account.status = AccountStatus.IN_DOUBT
        elif intent.kind in ("deposit", "withdraw", "transfer"):
            account.balance = None
            if intent.to_account is not None:
                self._accounts[intent.to_account].balance = None
        if intent.pin is not None and intent.pin != account.pin:
            account.wrong_tries += 1  # it may have counted against the account
            if account.wrong_tries >= self.config.pin_try_limit:
                account.status = AccountStatus.LOCKED
