from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.ids import cash_account
from common.requests import Request
from common.results import ResultCode
from host_node.ledger import (
    AccountState,
    Decision,
    Ledger,
    Posting,
    cash_in,
    cash_out,
    move,
)
from tests.host_node.fakes import T0, MemoryBank, Teller, account_no

ACCOUNTS = [account_no(n) for n in range(1, 5)]
BRANCHES = ["0001", "0002"]


def test_cash_account_is_created_on_first_use() -> None:
    ledger = Ledger({})
    opened = AccountState(ACCOUNTS[0], "0001", "customer", T0)
    postings = cash_in(ACCOUNTS[0], "0002", 700)
    ledger.apply(Decision(ResultCode.APPROVED, "ok", postings, (opened,)), T0)
    cash = ledger.get(cash_account("0002"))
    assert cash is not None and (cash.kind, cash.branch_id, cash.balance) == ("cash", "0002", -700)
    assert {a.number for a in ledger.touched()} == {ACCOUNTS[0], cash_account("0002")}


def test_postings_that_do_not_balance_are_refused() -> None:
    ledger = Ledger({ACCOUNTS[0]: AccountState(ACCOUNTS[0], "0001", "customer", T0)})
    with pytest.raises(ValueError, match="sum to zero"):
        ledger.apply(Decision(ResultCode.APPROVED, "ok", (Posting(ACCOUNTS[0], 5),)), T0)
    assert ledger.touched() == []


def test_an_account_change_may_not_touch_the_balance() -> None:
    account = AccountState(ACCOUNTS[0], "0001", "customer", T0, balance=10)
    ledger = Ledger({account.number: account})
    opened = AccountState(ACCOUNTS[1], "0001", "customer", T0)
    with pytest.raises(ValueError, match="balance"):
        tampered = (opened, replace(account, balance=99))
        ledger.apply(Decision(ResultCode.APPROVED, "ok", changes=tampered), T0)
    assert ledger.touched() == [] and ledger.get(opened.number) is None  # all or nothing


def test_posting_helpers_balance() -> None:
    for legs in (cash_in("x", "0001", 5), cash_out("x", "0001", 5), move("x", "y", 5)):
        assert sum(p.amount for p in legs) == 0


amounts = st.integers(min_value=1, max_value=50_000)
accounts, branches = st.sampled_from(ACCOUNTS), st.sampled_from(BRANCHES)
operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["deposit", "withdraw"]), accounts, branches, amounts),
        st.tuples(st.just("transfer"), accounts, accounts, amounts),
    ),
    max_size=40,
)


def _requests(script: list[tuple[str, str, str, int]]) -> list[Request]:
    tellers = {b: Teller(branch_id=b) for b in BRANCHES}
    opener = tellers["0001"]
    requests: list[Request] = [
        opener.open_account(a, deposit=10_000, pin=opener.pin("1234"), id_number=f"ID{i}")
        for i, a in enumerate(ACCOUNTS)
    ]
    for kind, account, other, amount in script:
        if kind == "deposit":
            requests.append(tellers[other].deposit(account, amount))
        elif kind == "withdraw":
            teller = tellers[other]
            requests.append(teller.withdraw(account, amount, teller.pin("1234")))
        else:
            requests.append(opener.transfer(account, other, amount, opener.pin("1234")))
    return requests


@settings(max_examples=60, deadline=None)
@given(script=operations)
def test_money_is_conserved_and_balances_are_their_postings(
    script: list[tuple[str, str, str, int]],
) -> None:
    bank = MemoryBank()
    replies = bank.run(_requests(script))
    posted: Counter[str] = Counter()
    for entry in bank.journal:
        assert sum(p.amount for p in entry.postings) == 0
        assert entry.postings == () or entry.result is ResultCode.APPROVED
        for posting in entry.postings:
            posted[posting.account] += posting.amount
    for number, account in bank.accounts.items():
        assert account.balance == posted[number]
        assert account.kind == "cash" or account.balance >= 0
    customers = sum(a.balance for a in bank.accounts.values() if a.kind == "customer")
    cash = -sum(a.balance for a in bank.accounts.values() if a.kind == "cash")
    assert customers == cash
    cash_moved = sum(
        (r.amount or 0) * (1 if kind == "deposit" else -1)
        for r, (kind, *_) in zip(replies[len(ACCOUNTS) :], script, strict=True)
        if r.result is ResultCode.APPROVED and kind != "transfer"
    )
    assert cash == 10_000 * len(ACCOUNTS) + cash_moved
