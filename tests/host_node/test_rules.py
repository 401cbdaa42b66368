from __future__ import annotations

from dataclasses import replace

import pytest

from common.ids import cash_account
from common.pin_commands import ChangePinCommand, GenerateOffset, HsmError, PinResponse, VerifyPin
from common.results import ResultCode
from host_node.ledger import AccountState, Ledger, PinRecord, Posting
from host_node.rules import MAX_PIN_TRIES, decide, pin_command
from tests.host_node.fakes import STAFF, T0, MemoryBank, Teller, account_no, fake_pin

A, B = account_no(1), account_no(2)
OK = PinResponse(command_id="c", error=HsmError.OK)
WRONG = PinResponse(command_id="c", error=HsmError.VERIFICATION_FAILED)
PIN = fake_pin("1234")


def holder(number: str = A, balance: int = 0, **changes: object) -> AccountState:
    account = AccountState(number, "0001", "customer", T0, pin=PinRecord("1234"))
    return replace(account, balance=balance, **changes)  # type: ignore[arg-type]


def ledger_of(*accounts: AccountState) -> Ledger:
    return Ledger({a.number: a for a in accounts}, STAFF)


@pytest.fixture
def teller() -> Teller:
    return Teller()


def test_open_account_with_deposit_books_cash_in(teller: Teller) -> None:
    ledger = ledger_of()
    request = teller.open_account(A, deposit=5_000, pin=PIN)
    done = PinResponse(command_id="c", error=HsmError.OK, verification_value="0071", key_version=2)
    decision = decide(request, ledger, done, T0)
    assert decision.result is ResultCode.APPROVED
    assert decision.postings == (Posting(A, 5_000), Posting(cash_account("0001"), -5_000))
    (opened,) = decision.changes
    assert opened.pin == PinRecord("0071", "ibm3624", 2)
    assert decision.customer is not None and decision.customer.id_number == "110101199003071233"
    assert "110101199003071233" not in repr(decision)


def test_open_account_refuses_a_number_in_use(teller: Teller) -> None:
    decision = decide(teller.open_account(A), ledger_of(holder()), None, T0)
    assert decision.result is ResultCode.ACCOUNT_EXISTS
    assert not decision.postings and not decision.changes


def test_passbook_account_opens_without_crypto_and_refuses_pin_kinds(teller: Teller) -> None:
    ledger = ledger_of()
    opened = decide(teller.open_account(A, deposit=100), ledger, None, T0)
    assert opened.result is ResultCode.APPROVED
    ledger.apply(opened, T0)
    refused = decide(teller.withdraw(A, 50, PIN), ledger, OK, T0)
    assert (refused.result, refused.reason) == (ResultCode.NOT_PERMITTED, "account has no PIN")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (None, ResultCode.UNAVAILABLE),
        (PinResponse(command_id="c", error=HsmError.FORMAT_ERROR), ResultCode.FORMAT_ERROR),
        (PinResponse(command_id="c", error=HsmError.KEY_ERROR), ResultCode.SYSTEM_ERROR),
    ],
)
def test_open_account_with_pin_declined_without_a_verification_value(
    teller: Teller, answer: PinResponse | None, code: ResultCode
) -> None:
    request = teller.open_account(A, deposit=100, pin=PIN)
    decision = decide(request, ledger_of(), answer, T0)
    assert decision.result is code
    assert not decision.postings and not decision.changes


def test_deposit_to_unknown_or_closed_account(teller: Teller) -> None:
    deposit = teller.deposit(A, 10)
    assert decide(deposit, ledger_of(), None, T0).result is ResultCode.NO_SUCH_ACCOUNT
    closed = holder(status="closed")
    assert decide(deposit, ledger_of(closed), None, T0).result is ResultCode.RESTRICTED


def test_withdraw_short_of_funds_moves_nothing(teller: Teller) -> None:
    decision = decide(teller.withdraw(A, 501, PIN), ledger_of(holder(balance=500)), OK, T0)
    assert decision.result is ResultCode.INSUFFICIENT_FUNDS
    assert decision.postings == ()


def test_withdraw_pays_out_at_the_requesting_branch(teller: Teller) -> None:
    elsewhere = Teller(branch_id="0002")
    decision = decide(elsewhere.withdraw(A, 300, PIN), ledger_of(holder(balance=500)), OK, T0)
    assert decision.result is ResultCode.APPROVED
    assert decision.postings == (Posting(A, -300), Posting(cash_account("0002"), 300))


def test_wrong_pin_is_counted_and_the_third_locks(teller: Teller) -> None:
    account = holder(balance=500)
    for tries in range(1, MAX_PIN_TRIES + 1):
        decision = decide(teller.withdraw(A, 10, fake_pin("9999")), ledger_of(account), WRONG, T0)
        (account,) = decision.changes
        assert account.pin_tries == tries
        assert decision.postings == ()
    assert decision.result is ResultCode.PIN_TRIES_EXCEEDED
    later = decide(teller.balance(A, PIN), ledger_of(account), OK, T0)
    assert later.result is ResultCode.PIN_TRIES_EXCEEDED


def test_right_pin_resets_the_count_even_when_declined(teller: Teller) -> None:
    account = holder(balance=5, pin_tries=2)
    decision = decide(teller.withdraw(A, 10, PIN), ledger_of(account), OK, T0)
    assert decision.result is ResultCode.INSUFFICIENT_FUNDS
    assert decision.changes == (replace(account, pin_tries=0),)


def test_crypto_silence_is_unavailable_and_changes_nothing(teller: Teller) -> None:
    decision = decide(teller.withdraw(A, 10, PIN), ledger_of(holder(balance=50)), None, T0)
    assert decision.result is ResultCode.UNAVAILABLE
    assert decision.postings == () and decision.changes == ()


@pytest.mark.parametrize(
    ("target", "code"),
    [
        (A, ResultCode.NOT_PERMITTED),
        (account_no(9), ResultCode.NO_SUCH_ACCOUNT),
        (B, ResultCode.RESTRICTED),
    ],
)
def test_transfer_refusals(teller: Teller, target: str, code: ResultCode) -> None:
    ledger = ledger_of(holder(balance=500), holder(B, status="closed"))
    decision = decide(teller.transfer(A, target, 100, PIN), ledger, OK, T0)
    assert decision.result is code
    assert decision.postings == ()


def test_transfer_moves_money_between_customers(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=500), holder(B))
    decision = decide(teller.transfer(A, B, 200, PIN), ledger, OK, T0)
    assert decision.postings == (Posting(A, -200), Posting(B, 200))


def test_change_pin_stores_the_new_value_and_resets_tries(teller: Teller) -> None:
    account = holder(pin_tries=1)
    answer = PinResponse(command_id="c", error=HsmError.OK, verification_value="4321")
    request = teller.change_pin(A, PIN, fake_pin("4321"))
    decision = decide(request, ledger_of(account), answer, T0)
    assert decision.result is ResultCode.APPROVED
    (changed,) = decision.changes
    assert (changed.pin, changed.pin_tries) == (PinRecord("4321"), 0)


def test_close_account_pays_out_the_balance(teller: Teller) -> None:
    decision = decide(teller.close(A, PIN), ledger_of(holder(balance=750)), OK, T0)
    assert (decision.result, decision.amount) == (ResultCode.APPROVED, 750)
    assert decision.postings == (Posting(A, -750), Posting(cash_account("0001"), 750))
    assert decision.changes[0].status == "closed"


def test_pin_command_for_each_kind(teller: Teller) -> None:
    account = holder(balance=10)
    opening = teller.open_account(A, pin=PIN)
    assert isinstance(pin_command(opening, None, "c"), GenerateOffset)
    assert pin_command(teller.open_account(A), None, "c") is None
    verify = pin_command(teller.withdraw(A, 1, PIN), account, "c")
    assert isinstance(verify, VerifyPin) and verify.verification_value == "1234"
    change = pin_command(teller.change_pin(A, fake_pin("1"), fake_pin("2")), account, "c")
    assert isinstance(change, ChangePinCommand)
    assert pin_command(teller.deposit(A, 1), account, "c") is None
    assert pin_command(teller.balance(A, fake_pin("1")), replace(account, pin_tries=3), "c") is None
    assert pin_command(teller.balance(A, fake_pin("1")), replace(account, pin=None), "c") is None


def test_a_whole_life_of_an_account() -> None:
    teller, bank = Teller(), MemoryBank()
    replies = bank.run(
        [
            teller.open_account(A, deposit=10_000, pin=teller.pin("1234")),
            teller.open_account(B, pin=teller.pin("5555")),
            teller.withdraw(A, 2_500, teller.pin("1234")),
            teller.transfer(A, B, 1_000, teller.pin("1234")),
            teller.change_pin(A, teller.pin("1234"), teller.pin("2468")),
            teller.withdraw(A, 100, teller.pin("1234")),
            teller.balance(A, teller.pin("2468")),
            teller.close(A, teller.pin("2468")),
            teller.deposit(A, 100),
        ]
    )
    codes = [r.result.value for r in replies]
    assert codes == ["00", "00", "00", "00", "00", "55", "00", "00", "62"]
    assert replies[6].balance == 6_500
    assert replies[7].amount == 6_500 and replies[7].balance == 0
    assert bank.balance(B) == 1_000
    assert bank.balance(cash_account("0001")) == -10_000 + 2_500 + 6_500
