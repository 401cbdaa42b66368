"""The regulations' rules (DOMAIN.md), decided purely: each decline with its code and rule."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.authorisation import StaffKey
from common.ids import cash_account
from common.money import yuan
from common.pin_commands import HsmError, PinResponse
from common.requests import (
    Deduct,
    Freeze,
    IdDocument,
    MakeAppointment,
    Unfreeze,
    UnlockPin,
    Withdraw,
)
from common.results import ResultCode
from host_node.ledger import AccountState, Customer, Decision, Ledger, PinRecord, Posting
from host_node.policy import Policy, bank_day
from host_node.rules import MAX_PIN_TRIES, decide
from host_node.staff import StaffMember
from tests.host_node.fakes import (
    STAFF,
    STAFF_KEYS,
    SUPERVISOR,
    T0,
    Teller,
    account_no,
    fake_pin,
    valid_id,
)

A, B = account_no(1), account_no(2)
OK = PinResponse(command_id="c", error=HsmError.OK)
WRONG = PinResponse(command_id="c", error=HsmError.VERIFICATION_FAILED)
PIN = fake_pin("1234")
HOLDER_ID = valid_id("chen")
AGENT_ID = valid_id("zhang")
OTHER_ID = valid_id("someone else")
CHEN = Customer("陈某", "resident_id", HOLDER_ID)
NEXT_DAY = T0 + dt.timedelta(days=1)


def holder(number: str = A, balance: int = 0, **changes: Any) -> AccountState:
    account = AccountState(number, "0001", "customer", T0, pin=PinRecord("1234"), holder=CHEN)
    return replace(account, balance=balance, **changes)


def ledger_of(*accounts: AccountState) -> Ledger:
    return Ledger({a.number: a for a in accounts}, STAFF)


def resident(number: str) -> IdDocument:
    return IdDocument(id_type="resident_id", number=number)


@pytest.fixture
def teller() -> Teller:
    return Teller()


def withdraw(
    teller: Teller, amount: int, supervisor: StaffKey | None = None, **documents: IdDocument
) -> Withdraw:
    request = Withdraw(**teller._base(), account=A, amount=amount, pin=PIN, **documents)
    return supervisor.authorise(request) if supervisor else request


def supervised(
    teller: Teller, kind: type[Any], supervisor: StaffKey | None = SUPERVISOR, **fields: Any
) -> Any:
    extra = (
        {}
        if kind is UnlockPin
        else {"authority_ref": fields.pop("authority_ref", "(2026)京0101执123号")}
    )
    request = kind(**teller._base(), account=A, **extra, **fields)
    return supervisor.authorise(request) if supervisor else request


def applied(ledger: Ledger, decision: Decision, at: dt.datetime = T0) -> Decision:
    ledger.apply(decision, at)
    return decision


# -- identity documents at opening ----------------------------------------------------------


@pytest.mark.parametrize(
    ("id_type", "number"),
    [
        ("resident_id", "110101199003071234"),  # wrong check character
        ("resident_id", "11010119900230123X"),  # 30 February
        ("resident_id", "1101011990030712"),  # too short
        ("resident_id", valid_id("x")[:6] + "20990101001" + "0"),  # born in the future
        ("military_officer", "2005123"),
        ("passport", "12345678"),
        ("passport", "EABCDEFG"),
    ],
)
def test_opening_refuses_an_invalid_document_with_77(
    teller: Teller, id_type: str, number: str
) -> None:
    request = teller.open_account(A, document=IdDocument(id_type=id_type, number=number))  # type: ignore[arg-type]
    decision = decide(request, ledger_of(), None, T0)
    assert (decision.result, decision.rule) == (ResultCode.IDENTITY_CHECK_FAILED, "id_document")
    assert not decision.changes and not decision.postings
    assert number not in repr(decision.identities) or len(number) < 4


@pytest.mark.parametrize(
    ("id_type", "number"),
    [("resident_id", "11010519491231002X"), ("military_officer", "南字第2005123号"),
     ("passport", "E12345678"), ("passport", "G87654321")],
)  # fmt: skip
def test_opening_accepts_each_kind_of_valid_document(
    teller: Teller, id_type: str, number: str
) -> None:
    request = teller.open_account(A, document=IdDocument(id_type=id_type, number=number))  # type: ignore[arg-type]
    decision = decide(request, ledger_of(), None, T0)
    assert decision.result is ResultCode.APPROVED
    (opened,) = decision.changes
    assert opened.holder == Customer("Wang Fang", id_type, number)
    (shown,) = decision.identities
    assert shown.startswith(id_type + ":") and number not in shown


def test_a_passbook_account_may_not_make_card_transfers(teller: Teller) -> None:
    ledger = ledger_of(holder(B))
    applied(ledger, decide(teller.open_account(A, deposit=500), ledger, None, T0))
    decision = decide(teller.transfer(A, B, 100, PIN), ledger, OK, T0)
    assert (decision.result, decision.rule) == (ResultCode.NOT_PERMITTED, "passbook")


# -- withdrawals over 50,000 CNY by someone else ------------------------------------------


def test_over_50000_needs_the_withdrawers_document(teller: Teller) -> None:
    decision = decide(
        withdraw(teller, yuan(50_001)), ledger_of(holder(balance=yuan(60_000))), OK, T0
    )
    assert (decision.result, decision.rule) == (
        ResultCode.IDENTITY_CHECK_FAILED,
        "large_cash_identity",
    )


def test_50000_exactly_needs_no_document(teller: Teller) -> None:
    decision = decide(
        withdraw(teller, yuan(50_000)), ledger_of(holder(balance=yuan(60_000))), OK, T0
    )
    assert decision.result is ResultCode.APPROVED and decision.identities == ()


def test_the_holder_withdrawing_shows_their_own_document(teller: Teller) -> None:
    request = withdraw(teller, yuan(80_000), withdrawer=resident(HOLDER_ID))
    decision = decide(request, ledger_of(holder(balance=yuan(100_000))), OK, T0)
    assert decision.result is ResultCode.APPROVED
    assert decision.identities == (
        f"withdrawer resident_id:{HOLDER_ID[:3]}***********{HOLDER_ID[-4:]} = holder",
    )


@pytest.mark.parametrize(
    ("shown", "reason"),
    [
        (None, "someone other than the holder: the holder's document is required"),
        (OTHER_ID, "the holder's document does not match the customer record"),
    ],
)
def test_an_agent_needs_the_holders_document_matching_the_record(
    teller: Teller, shown: str | None, reason: str
) -> None:
    documents = {"withdrawer": resident(AGENT_ID)}
    if shown is not None:
        documents["holder"] = resident(shown)
    account = holder(balance=yuan(100_000))
    decision = decide(withdraw(teller, yuan(60_000), **documents), ledger_of(account), OK, T0)
    assert (decision.result, decision.reason) == (ResultCode.IDENTITY_CHECK_FAILED, reason)
    assert decision.identities[0].startswith("withdrawer resident_id:110")
    assert all(AGENT_ID not in shown_ and OTHER_ID not in shown_ for shown_ in decision.identities)
    assert not decision.postings


def test_an_agent_with_both_documents_is_paid(teller: Teller) -> None:
    documents = {"withdrawer": resident(AGENT_ID), "holder": resident(HOLDER_ID)}
    ledger = ledger_of(holder(balance=yuan(100_000)))
    alone = decide(withdraw(teller, yuan(60_000), **documents), ledger, OK, T0)
    assert (alone.result, alone.rule) == (
        ResultCode.SUPERVISOR_REQUIRED,
        "supervisor_authorisation",
    )
    assert not alone.postings and len(alone.identities) == 3
    request = withdraw(teller, yuan(60_000), SUPERVISOR, **documents)
    decision = decide(request, ledger, OK, T0)
    assert decision.result is ResultCode.APPROVED
    assert len(decision.identities) == 3


def test_the_holder_herself_needs_no_supervisor_under_200000(teller: Teller) -> None:
    request = withdraw(teller, yuan(199_999), withdrawer=resident(HOLDER_ID))
    decision = decide(request, ledger_of(holder(balance=yuan(300_000))), OK, T0)
    assert decision.result is ResultCode.APPROVED


def test_an_invalid_withdrawer_document_is_refused(teller: Teller) -> None:
    request = withdraw(teller, yuan(60_000), withdrawer=resident("110101199003071234"))
    decision = decide(request, ledger_of(holder(balance=yuan(100_000))), OK, T0)
    assert decision.result is ResultCode.IDENTITY_CHECK_FAILED
    assert "check character" in decision.reason


# -- appointments for 200,000 CNY or more ----------------------------------------------------


def book(teller: Teller, amount: int, day: dt.date) -> MakeAppointment:
    return MakeAppointment(**teller._base(), account=A, amount=amount, date=day)


def test_200000_in_cash_without_an_appointment_is_refused_76(teller: Teller) -> None:
    request = withdraw(teller, yuan(200_000), withdrawer=resident(HOLDER_ID))
    decision = decide(request, ledger_of(holder(balance=yuan(300_000))), OK, T0)
    assert (decision.result, decision.rule) == (
        ResultCode.APPOINTMENT_REQUIRED,
        "large_cash_appointment",
    )
    assert not decision.postings


def test_an_appointment_made_the_day_before_is_used_up(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=yuan(500_000)))
    tomorrow = bank_day(NEXT_DAY)
    assert applied(ledger, decide(book(teller, yuan(250_000), tomorrow), ledger, None, T0)).approved
    early = withdraw(teller, yuan(250_000), withdrawer=resident(HOLDER_ID))
    assert decide(early, ledger, OK, T0).result is ResultCode.APPOINTMENT_REQUIRED
    alone = decide(early, ledger, OK, NEXT_DAY)
    assert (alone.result, alone.rule) == (
        ResultCode.SUPERVISOR_REQUIRED,
        "supervisor_authorisation",
    )
    signed = SUPERVISOR.authorise(early)
    first = applied(ledger, decide(signed, ledger, OK, NEXT_DAY), NEXT_DAY)
    assert first.result is ResultCode.APPROVED
    assert first.postings == (
        Posting(A, -yuan(250_000)),
        Posting(cash_account("0001"), yuan(250_000)),
    )
    again = withdraw(teller, yuan(200_000), SUPERVISOR, withdrawer=resident(HOLDER_ID))
    assert decide(again, ledger, OK, NEXT_DAY).result is ResultCode.APPOINTMENT_REQUIRED


def test_an_appointment_covers_its_amount_only(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=yuan(500_000)))
    applied(ledger, decide(book(teller, yuan(200_000), bank_day(NEXT_DAY)), ledger, None, T0))
    more = withdraw(teller, yuan(200_001), withdrawer=resident(HOLDER_ID))
    assert decide(more, ledger, OK, NEXT_DAY).result is ResultCode.APPOINTMENT_REQUIRED


def test_an_appointment_for_today_or_earlier_is_refused(teller: Teller) -> None:
    for day in (bank_day(T0), bank_day(T0) - dt.timedelta(days=3)):
        decision = decide(book(teller, yuan(300_000), day), ledger_of(holder()), None, T0)
        assert (decision.result, decision.rule) == (
            ResultCode.INVALID_TRANSACTION,
            "appointment_date",
        )


def test_the_chen_case_is_refused_at_the_identity_check(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=yuan(600_000)))
    for amount in (yuan(300_000), yuan(299_000)):
        request = withdraw(teller, amount, withdrawer=resident(AGENT_ID), holder=resident(OTHER_ID))
        decision = applied(ledger, decide(request, ledger, OK, T0))
        assert (decision.result, decision.rule) == (
            ResultCode.IDENTITY_CHECK_FAILED,
            "large_cash_identity",
        )
    assert ledger.get(A) is not None and ledger.get(A).balance == yuan(600_000)  # type: ignore[union-attr]


# -- freeze, unfreeze, deduct ---------------------------------------------------------------


def test_freeze_by_a_teller_alone_is_refused_63(teller: Teller) -> None:
    decision = decide(supervised(teller, Freeze, None), ledger_of(holder()), None, T0)
    assert (decision.result, decision.rule) == (
        ResultCode.SUPERVISOR_REQUIRED,
        "supervisor_authorisation",
    )
    assert not decision.changes


@pytest.mark.parametrize(
    ("signer", "why"),
    [
        ("S999901", "not on the staff table"),
        ("T000101", "teller, not a supervisor"),
        ("A000101", "auditor, not a supervisor"),
        ("S000201", "another branch"),
    ],
)
def test_freeze_needs_a_supervisor_of_the_branch(teller: Teller, signer: str, why: str) -> None:
    key = STAFF_KEYS.get(signer) or StaffKey(signer, Ed25519PrivateKey.generate())
    decision = decide(supervised(teller, Freeze, key), ledger_of(holder()), None, T0)
    assert (decision.result, decision.rule) == (
        ResultCode.SUPERVISOR_REQUIRED,
        "authorisation_refused",
    )
    assert why in decision.reason and not decision.changes


def test_a_supervisor_cannot_authorise_their_own_request() -> None:
    own = Teller(staff_id="S000101", role="supervisor")
    decision = decide(supervised(own, Freeze), ledger_of(holder()), None, T0)
    assert (decision.result, decision.rule) == (
        ResultCode.SUPERVISOR_REQUIRED,
        "authorisation_refused",
    )
    assert "their own request" in decision.reason


def test_a_forged_or_altered_authorisation_does_not_verify(teller: Teller) -> None:
    forger = StaffKey("S000101", Ed25519PrivateKey.generate())
    signed = supervised(teller, Freeze, amount=yuan(100))
    for request in (
        supervised(teller, Freeze, forger),  # someone else's key under the supervisor's id
        signed.model_copy(update={"amount": yuan(900)}),  # altered after signing
        signed.model_copy(update={"request_id": supervised(teller, Freeze).request_id}),
    ):
        decision = decide(request, ledger_of(holder(balance=yuan(1_000))), None, T0)
        assert (decision.result, decision.rule) == (
            ResultCode.SUPERVISOR_REQUIRED,
            "authorisation_signature",
        )
        assert not decision.changes
    assert decide(signed, ledger_of(holder(balance=yuan(1_000))), None, T0).approved


def test_a_supervisor_without_a_registered_key_cannot_authorise(teller: Teller) -> None:
    unkeyed = {**STAFF, "S000101": replace(STAFF["S000101"], public_key=None)}
    ledger = Ledger({A: holder()}, unkeyed)
    decision = decide(supervised(teller, Freeze), ledger, None, T0)
    assert decision.result is ResultCode.SUPERVISOR_REQUIRED
    assert "no registered key" in decision.reason


@pytest.mark.parametrize("kind", [Freeze, Unfreeze])
def test_a_court_order_needs_a_legal_authority_reference(teller: Teller, kind: type[Any]) -> None:
    request = supervised(teller, kind, authority_ref="because")
    decision = decide(request, ledger_of(holder(frozen=True)), None, T0)
    assert (decision.result, decision.rule) == (
        ResultCode.LEGAL_AUTHORITY_REQUIRED,
        "legal_authority",
    )


def test_a_full_freeze_stops_money_leaving_but_not_coming_in(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=yuan(1_000)), holder(B))
    froze = applied(ledger, decide(supervised(teller, Freeze), ledger, None, T0))
    assert froze.approved and "(2026)京0101执123号" in froze.reason
    assert decide(teller.deposit(A, 500), ledger, None, T0).approved
    for request in (teller.withdraw(A, 100, PIN), teller.transfer(A, B, 100, PIN)):
        decision = decide(request, ledger, OK, T0)
        assert (decision.result, decision.rule) == (ResultCode.RESTRICTED, "freeze")
    assert decide(teller.close(A, PIN), ledger, OK, T0).result is ResultCode.RESTRICTED
    assert applied(ledger, decide(supervised(teller, Unfreeze), ledger, None, T0)).approved
    assert decide(teller.withdraw(A, 100, PIN), ledger, OK, T0).approved


def test_a_partial_freeze_holds_an_amount(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=yuan(1_000)))
    applied(ledger, decide(supervised(teller, Freeze, amount=yuan(600)), ledger, None, T0))
    assert (
        decide(teller.withdraw(A, yuan(401), PIN), ledger, OK, T0).result is ResultCode.RESTRICTED
    )
    assert (
        decide(teller.withdraw(A, yuan(1_001), PIN), ledger, OK, T0).result
        is ResultCode.INSUFFICIENT_FUNDS
    )
    assert decide(teller.withdraw(A, yuan(400), PIN), ledger, OK, T0).approved


def test_a_deduction_takes_held_money_first(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=yuan(1_000)))
    applied(ledger, decide(supervised(teller, Freeze, amount=yuan(600)), ledger, None, T0))
    taken = applied(ledger, decide(supervised(teller, Deduct, amount=yuan(600)), ledger, None, T0))
    assert taken.approved
    assert taken.postings == (Posting(A, -yuan(600)), Posting(cash_account("0001"), yuan(600)))
    after = ledger.get(A)
    assert after is not None and (after.balance, after.held) == (yuan(400), 0)
    too_much = decide(supervised(teller, Deduct, amount=yuan(401)), ledger, None, T0)
    assert too_much.result is ResultCode.INSUFFICIENT_FUNDS


def test_unfreezing_what_is_not_frozen_is_refused(teller: Teller) -> None:
    decision = decide(supervised(teller, Unfreeze), ledger_of(holder()), None, T0)
    assert decision.result is ResultCode.INVALID_TRANSACTION


# -- daily limits and PIN lockout -----------------------------------------------------------


def test_daily_limits_per_account_reset_the_next_day(teller: Teller) -> None:
    policy = Policy(daily_cash_out_limit=yuan(1_000), daily_transfer_limit=yuan(300))
    ledger = ledger_of(holder(balance=yuan(5_000)), holder(B))
    assert applied(
        ledger, decide(teller.withdraw(A, yuan(800), PIN), ledger, OK, T0, policy)
    ).approved
    over = decide(teller.withdraw(A, yuan(201), PIN), ledger, OK, T0, policy)
    assert (over.result, over.rule) == (ResultCode.OVER_LIMIT, "daily_cash_out_limit")
    assert decide(teller.withdraw(A, yuan(200), PIN), ledger, OK, T0, policy).approved
    transfer = decide(teller.transfer(A, B, yuan(301), PIN), ledger, OK, T0, policy)
    assert (transfer.result, transfer.rule) == (ResultCode.OVER_LIMIT, "daily_transfer_limit")
    tomorrow = decide(teller.withdraw(A, yuan(1_000), PIN), ledger, OK, NEXT_DAY, policy)
    assert tomorrow.approved


def test_a_locked_pin_is_unlocked_by_a_supervisor(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=100))
    for _ in range(MAX_PIN_TRIES):
        applied(ledger, decide(teller.withdraw(A, 10, PIN), ledger, WRONG, T0))
    assert (
        decide(teller.withdraw(A, 10, PIN), ledger, OK, T0).result is ResultCode.PIN_TRIES_EXCEEDED
    )
    refused = decide(supervised(teller, UnlockPin, None), ledger, None, T0)
    assert refused.result is ResultCode.SUPERVISOR_REQUIRED
    assert applied(ledger, decide(supervised(teller, UnlockPin), ledger, None, T0)).approved
    assert decide(teller.withdraw(A, 10, PIN), ledger, OK, T0).approved
    again = decide(supervised(teller, UnlockPin), ledger, None, T0)
    assert again.result is ResultCode.INVALID_TRANSACTION


def test_a_closed_account_refuses_everything_after(teller: Teller) -> None:
    ledger = ledger_of(holder(balance=700))
    closed = applied(ledger, decide(teller.close(A, PIN), ledger, OK, T0))
    assert closed.approved and closed.amount == 700
    for request in (
        teller.deposit(A, 1),
        teller.withdraw(A, 1, PIN),
        book(teller, yuan(300_000), bank_day(NEXT_DAY)),
        supervised(teller, Freeze),
    ):
        assert decide(request, ledger, OK, T0).result is ResultCode.RESTRICTED


def test_staff_roles_are_known() -> None:
    assert STAFF["S000101"] == StaffMember(
        "S000101", "supervisor", "0001", STAFF_KEYS["S000101"].key.public_key().public_bytes_raw()
    )
    assert STAFF["T000101"].public_key is None
