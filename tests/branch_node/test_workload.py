"""The workload model: seeded, integer money, realistic mix, and it learns from replies."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import pytest

from branch_node.resident_id import is_valid_resident_id
from branch_node.workload import (
    APPOINTMENT_CASH,
    LARGE_CASH,
    AccountStatus,
    Intent,
    Mix,
    WorkloadConfig,
    WorkloadModel,
)
from common.ids import card_number, is_valid_account_no
from common.requests import PIN_KINDS
from common.results import ResultCode
from tests.branch_node.fakes import FakeBank


def _cards(terminal: str = "01") -> Callable[[], str]:
    serials = itertools.count(1)
    return lambda: card_number("0001", terminal, next(serials))


def _drive(
    model: WorkloadModel, bank: FakeBank, steps: int, *, lose: Callable[[int], bool] = bool
) -> list[tuple[Intent, ResultCode | None]]:
    """Run ``steps`` intents through the bank; ``lose(i)`` True drops reply i (a timeout)."""
    history: list[tuple[Intent, ResultCode | None]] = []
    for step in range(steps):
        intent = model.next_intent()
        reply = bank.answer_intent(intent)
        if lose(step):
            model.observe(intent, None)
            history.append((intent, None))
        else:
            model.observe(intent, reply)
            history.append((intent, reply.result))
    return history


def _never(_: int) -> bool:
    return False


def test_the_same_seed_and_replies_give_the_same_requests() -> None:
    first = _drive(WorkloadModel(7, WorkloadConfig(), _cards()), FakeBank(), 500, lose=_never)
    again = _drive(WorkloadModel(7, WorkloadConfig(), _cards()), FakeBank(), 500, lose=_never)
    other = _drive(WorkloadModel(8, WorkloadConfig(), _cards()), FakeBank(), 500, lose=_never)
    assert first == again
    assert [i for i, _ in first] != [i for i, _ in other]


def test_money_is_always_a_positive_integer_number_of_fen() -> None:
    history = _drive(WorkloadModel(1, WorkloadConfig(), _cards()), FakeBank(), 2000, lose=_never)
    amounts = [i.amount for i, _ in history if i.amount is not None]
    assert len(amounts) > 1000
    assert all(type(a) is int for a in amounts)
    assert all(a > 0 for i, _ in history if i.kind != "open_account" for a in [i.amount] if a)
    assert all(i.amount is None or i.amount >= 0 for i, _ in history)


def test_a_terminal_opens_accounts_first_with_valid_ids_and_card_numbers() -> None:
    config = WorkloadConfig(opening_accounts=4)
    history = _drive(WorkloadModel(3, config, _cards()), FakeBank(), 1500, lose=_never)
    assert [i.kind for i, _ in history[:4]] == ["open_account"] * 4
    openings = [i for i, _ in history if i.kind == "open_account"]
    assert all(is_valid_resident_id(i.id_number or "") for i in openings)
    assert all(is_valid_account_no(i.account) for i in openings)
    assert len({i.account for i in openings}) == len(openings)
    assert all(i.customer is not None and i.customer.name for i in openings)
    pins = [i.pin for i in openings if i.pin is not None]
    assert all(len(p) == 6 and p.isdigit() for p in pins)


def test_the_model_predicts_every_result_of_a_bank_that_follows_the_host_rules() -> None:
    model = WorkloadModel(11, WorkloadConfig(), _cards())
    history = _drive(model, FakeBank(), 5000, lose=_never)
    surprises = [(i.kind, i.expect, r) for i, r in history if r != i.expect]
    assert surprises == []
    results = Counter(r for _, r in history)
    assert results[ResultCode.APPROVED] > 4000
    assert results[ResultCode.WRONG_PIN] > 0 and results[ResultCode.INSUFFICIENT_FUNDS] > 0
    kinds = Counter(i.kind for i, _ in history)
    assert set(kinds) == {
        "open_account", "deposit", "withdraw", "transfer", "balance", "change_pin",
        "close_account",
    }  # fmt: skip


def test_wrong_pins_and_overdrafts_come_at_about_the_configured_rates() -> None:
    config = WorkloadConfig(wrong_pin_rate=0.05, overdraft_rate=0.03)
    history = _drive(WorkloadModel(5, config, _cards()), FakeBank(), 20000, lose=_never)
    pin_requests = [i for i, _ in history if i.kind in PIN_KINDS]
    refusals = (ResultCode.WRONG_PIN, ResultCode.PIN_TRIES_EXCEEDED)
    wrong = sum(i.expect in refusals for i in pin_requests)
    assert 0.03 < wrong / len(pin_requests) < 0.07
    money = [i for i, _ in history if i.kind in ("withdraw", "transfer")]
    overdrafts = sum(i.expect is ResultCode.INSUFFICIENT_FUNDS for i in money)
    assert 0.015 < overdrafts / len(money) < 0.045


def test_known_balances_match_the_bank() -> None:
    model = WorkloadModel(2, WorkloadConfig(), _cards())
    bank = FakeBank()
    _drive(model, bank, 3000, lose=_never)
    open_accounts = [a for a in model.accounts.values() if a.usable]
    assert open_accounts
    assert {a.number: a.balance for a in open_accounts} == {
        a.number: bank.accounts[a.number].balance for a in open_accounts
    }


def test_locked_and_closed_accounts_are_never_used_again() -> None:
    # Many wrong PINs and closings, so locks and closes really happen.
    config = WorkloadConfig(
        wrong_pin_rate=0.4, overdraft_rate=0.0, mix=Mix(close_account=10.0, open_account=10.0)
    )
    model = WorkloadModel(9, config, _cards())
    bank = FakeBank()
    locked: set[str] = set()
    closed: set[str] = set()
    for _ in range(4000):
        intent = model.next_intent()
        assert intent.account not in locked | closed, intent.kind
        assert intent.to_account not in locked | closed
        reply = bank.answer_intent(intent)
        model.observe(intent, reply)
        if reply.result is ResultCode.PIN_TRIES_EXCEEDED:
            locked.add(intent.account)
        if intent.kind == "close_account" and reply.approved:
            closed.add(intent.account)
    assert len(locked) > 3 and len(closed) > 3
    statuses = Counter(a.status for a in model.accounts.values())
    assert statuses[AccountStatus.LOCKED] == len(locked)
    assert statuses[AccountStatus.CLOSED] == len(closed)


def test_passbook_accounts_never_get_pin_requests() -> None:
    config = WorkloadConfig(passbook_share=0.5)
    model = WorkloadModel(4, config, _cards())
    history = _drive(model, FakeBank(), 3000, lose=_never)
    passbooks = {i.account for i, _ in history if i.kind == "open_account" and i.pin is None}
    assert passbooks
    assert not [i for i, _ in history if i.kind in PIN_KINDS and i.account in passbooks]
    assert [i for i, _ in history if i.kind == "deposit" and i.account in passbooks]


def test_after_a_lost_reply_the_model_stops_trusting_what_it_changed() -> None:
    model = WorkloadModel(6, WorkloadConfig(), _cards())
    bank = FakeBank()
    history = _drive(model, bank, 3000, lose=lambda step: step % 37 == 36)
    lost = [i for i, r in history if r is None]
    assert any(i.kind in ("deposit", "withdraw", "transfer") for i in lost)
    # After a lost money request, that account's next use is a balance inquiry (or nothing).
    for index, (intent, result) in enumerate(history):
        if result is None and intent.kind in ("withdraw", "transfer") and intent.pin:
            later = [i for i, _ in history[index + 1 :] if i.account == intent.account]
            if later:
                assert later[0].kind in ("balance", "deposit")
    # Accounts whose opening, PIN change or closing was lost are never used again.
    doubtful = {a.number for a in model.accounts.values() if a.status is AccountStatus.IN_DOUBT}
    assert doubtful
    for index, (intent, result) in enumerate(history):
        if result is None and intent.kind in ("open_account", "change_pin", "close_account"):
            assert intent.account in doubtful
            after = [i for i, _ in history[index + 1 :]]
            assert not [i for i in after if intent.account in (i.account, i.to_account)]
    # Every answered request's result was still predicted.
    assert all(r == i.expect for i, r in history if r is not None)


def test_observe_requires_the_outstanding_intent() -> None:
    model = WorkloadModel(1, WorkloadConfig(), _cards())
    intent = model.next_intent()
    with pytest.raises(RuntimeError):
        model.next_intent()
    model.observe(intent, None)
    with pytest.raises(ValueError):
        model.observe(intent, None)


def test_intents_do_not_show_pins_or_id_numbers_in_repr() -> None:
    model = WorkloadModel(1, WorkloadConfig(), _cards())
    intent = model.next_intent()
    assert intent.kind == "open_account" and intent.id_number
    text = repr(intent)
    assert intent.id_number not in text
    assert intent.pin is None or f"'{intent.pin}'" not in text


@pytest.mark.parametrize(
    "config",
    [
        {"opening_accounts": 0},
        {"opening_accounts": 5, "max_accounts": 4},
        {"wrong_pin_rate": 0.7, "overdraft_rate": 0.5},
        {"passbook_share": 1.5},
        {"pin_try_limit": 0},
    ],
)
def test_a_config_that_makes_no_sense_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WorkloadConfig(**config)  # type: ignore[arg-type]


def test_large_cash_shows_an_id_and_never_needs_an_appointment() -> None:
    config = WorkloadConfig(overdraft_rate=0.5, mix=Mix(deposit=50.0, withdraw=30.0))
    history = _drive(WorkloadModel(12, config, _cards()), FakeBank(), 6000, lose=_never)
    withdrawals = [i for i, _ in history if i.kind == "withdraw"]
    assert max(i.amount or 0 for i in withdrawals) < APPOINTMENT_CASH
    large = [i for i in withdrawals if (i.amount or 0) > LARGE_CASH]
    assert large
    owners = {i.account: i.id_number for i, _ in history if i.kind == "open_account"}
    assert all(i.id_number == owners[i.account] for i in large)
    assert all(i.id_number is None for i in withdrawals if (i.amount or 0) <= LARGE_CASH)


def test_customer_queries_are_supervised_and_teach_the_balance() -> None:
    bank = FakeBank()
    only = dict.fromkeys(("withdraw", "transfer", "balance", "change_pin", "close_account"), 0.0)
    config = WorkloadConfig(mix=Mix(deposit=1.0, open_account=0.0, customer_query=3.0, **only))
    model = WorkloadModel(3, config, _cards())
    queries = []
    for _ in range(200):
        intent = model.next_intent()
        reply = bank.answer_intent(intent)
        model.observe(intent, reply)
        if intent.kind == "customer_query":
            queries.append(intent)
            assert model.accounts[intent.account].balance == bank.accounts[intent.account].balance
    assert len(queries) > 50
    assert all(q.supervised and q.pin is None and q.expect is ResultCode.APPROVED for q in queries)
    plain = _drive(WorkloadModel(3, WorkloadConfig(), _cards()), FakeBank(), 500, lose=_never)
    assert not [i for i, _ in plain if i.kind == "customer_query"]  # off by default
