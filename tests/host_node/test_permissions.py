"""Roles enforced per kind against the host's staff table, and permissioned customer queries."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.authorisation import StaffKey
from common.events import EVENT_ADAPTER, SecurityAlert, SecurityAlertKind
from common.money import yuan
from common.pin_commands import HsmError, PinResponse
from common.replies import Reply
from common.requests import Deduct, Request
from common.results import ResultCode
from host_node.event_rules import events_for
from host_node.ledger import AccountState, Ledger, PinRecord
from host_node.rules import decide
from tests.host_node.fakes import (
    STAFF,
    STAFF_KEYS,
    SUPERVISOR,
    T0,
    Teller,
    account_no,
    fake_pin,
    item_of,
)

A, B = account_no(1), account_no(2)
OK = PinResponse(command_id="c", error=HsmError.OK)
PIN = fake_pin("1234")
AUDITOR = Teller(staff_id="A000101", role="auditor")
AUDITOR_KEY = STAFF_KEYS["A000101"]
SUPERVISING = Teller(staff_id="S000101", role="supervisor")


def ledger() -> Ledger:
    accounts = [
        replace(AccountState(n, "0001", "customer", T0, pin=PinRecord("1234")), balance=yuan(1_000))
        for n in (A, B)
    ]
    return Ledger({a.number: a for a in accounts}, STAFF)


def decided(request: Request) -> tuple[ResultCode, str]:
    decision = decide(request, ledger(), OK, T0)
    if not decision.approved:
        assert not decision.postings and not decision.changes
    return decision.result, decision.rule


@pytest.mark.parametrize(
    ("maker", "why"),
    [
        (Teller(staff_id="T999999"), "not on the staff table"),
        (Teller(staff_id="T000201"), "another branch"),
        (Teller(role="supervisor"), "as a teller, not a supervisor"),
        (Teller(role="auditor"), "as a teller, not an auditor"),
        (Teller(staff_id="A000101"), "as an auditor, not a teller"),
        (Teller(staff_id="S000101", role="auditor"), "as a supervisor, not an auditor"),
    ],
)
def test_a_claimed_role_the_staff_table_does_not_confirm_is_refused_58(
    maker: Teller, why: str
) -> None:
    decision = decide(maker.deposit(A, 100), ledger(), None, T0)
    assert (decision.result, decision.rule) == (ResultCode.ROLE_NOT_PERMITTED, "staff_role")
    assert why in decision.reason and not decision.postings


def money_requests(maker: Teller) -> list[Request]:
    base: dict[str, Any] = maker._base()
    return [
        maker.deposit(A, 100),
        maker.withdraw(A, 100, PIN),
        maker.transfer(A, B, 100, PIN),
        maker.close(A, PIN),
        maker.open_account(account_no(3), deposit=100, pin=PIN),
        SUPERVISOR.authorise(Deduct(**base, account=A, amount=100, authority_ref="(2026)执1号")),
        maker.freeze(A),
        maker.balance(A, PIN),
    ]


def test_an_auditor_may_not_move_money_or_change_an_account() -> None:
    for request in money_requests(AUDITOR):
        signed = request if request.authorisation else AUDITOR_KEY.authorise(request)
        assert decided(signed) == (ResultCode.ROLE_NOT_PERMITTED, "role_permission"), request
    deposit = AUDITOR_KEY.authorise(AUDITOR.deposit(A, 1))
    assert "an auditor may not deposit" in decide(deposit, ledger(), None, T0).reason


def test_tellers_and_signed_supervisors_may_key_money_requests() -> None:
    assert decided(Teller().deposit(A, 100)) == (ResultCode.APPROVED, "")
    assert decided(SUPERVISOR.authorise(SUPERVISING.deposit(A, 100))) == (ResultCode.APPROVED, "")


@pytest.mark.parametrize("maker", [AUDITOR, SUPERVISING], ids=["auditor", "supervisor"])
def test_a_supervisor_or_auditor_must_prove_the_claim_by_signature(maker: Teller) -> None:
    unsigned = maker.customer_query(A)
    assert decided(unsigned) == (ResultCode.ROLE_NOT_PERMITTED, "staff_signature")
    impostor = StaffKey(maker.staff_id, Ed25519PrivateKey.generate())
    strangers = [impostor, STAFF_KEYS["A000201"], STAFF_KEYS["S000201"]]
    if maker is SUPERVISING:
        strangers.append(AUDITOR_KEY)  # an auditor vouches for nobody else
    for key in strangers:
        assert decided(key.authorise(maker.customer_query(A))) == (
            ResultCode.ROLE_NOT_PERMITTED,
            "staff_signature_invalid",
        ), key.staff_id
    own = STAFF_KEYS[maker.staff_id].authorise(maker.customer_query(A))
    assert decided(own) == (ResultCode.APPROVED, "customer_query")
    vouched = SUPERVISOR.authorise(AUDITOR.customer_query(A))  # the branch supervisor vouches
    assert decided(vouched) == (ResultCode.APPROVED, "customer_query")


def test_a_tellers_customer_query_needs_a_supervisors_signature() -> None:
    teller = Teller()
    assert decided(teller.customer_query(A)) == (
        ResultCode.SUPERVISOR_REQUIRED,
        "supervisor_authorisation",
    )
    decision = decide(teller.customer_query(A, SUPERVISOR), ledger(), None, T0)
    assert (decision.result, decision.rule, decision.report) == (
        ResultCode.APPROVED,
        "customer_query",
        A,
    )


@pytest.mark.parametrize("maker", [AUDITOR, SUPERVISING], ids=["auditor", "supervisor"])
def test_auditors_and_supervisors_query_on_a_stated_purpose(maker: Teller) -> None:
    key = STAFF_KEYS[maker.staff_id]
    assert decided(maker.customer_query(A, key)) == (ResultCode.APPROVED, "customer_query")
    for blank in (" ", "\t x "):
        assert decided(maker.customer_query(A, key, purpose=blank)) == (
            ResultCode.ROLE_NOT_PERMITTED,
            "query_purpose",
        )
    unknown = maker.customer_query(account_no(9), key)
    assert decided(unknown) == (ResultCode.NO_SUCH_ACCOUNT, "account")


def test_role_and_signature_refusals_raise_security_alerts() -> None:
    lifted = SUPERVISOR.authorise(Teller(start=5).freeze(A, None)).authorisation
    forged = Teller().freeze(A, None).model_copy(update={"authorisation": lifted})
    cases = [
        (Teller(role="supervisor").deposit(A, 1), SecurityAlertKind.PERMISSION_DENIED),
        (AUDITOR.deposit(A, 1), SecurityAlertKind.PERMISSION_DENIED),
        (forged, SecurityAlertKind.BAD_SIGNATURE),
        (
            Teller(staff_id="S000101", role="supervisor").freeze(A),
            SecurityAlertKind.PERMISSION_DENIED,
        ),
    ]
    for request, kind in cases:
        decision = decide(request, ledger(), None, T0)
        alerts = [
            e
            for e in events_of(request, decision.result, decision.rule)
            if isinstance(e, SecurityAlert)
        ]
        assert [a.alert for a in alerts] == [kind], request
        assert alerts[0].source == request.request_id and alerts[0].branch == "0001"
    missing = decide(Teller().freeze(A, None), ledger(), None, T0)
    assert missing.result is ResultCode.SUPERVISOR_REQUIRED
    events = events_of(Teller().freeze(A, None), missing.result, missing.rule)
    assert not any(isinstance(e, SecurityAlert) for e in events)


def events_of(request: Request, result: ResultCode, rule: str) -> list[Any]:
    reply = Reply(
        request_id=request.request_id,
        result=result,
        reason="refused",
        received_at=T0,
        processed_at=T0,
        journal_seq=1,
        rule=rule or None,
    )
    # events_for gives documents (no models on the host's hot path): read them as the models
    documents = events_for(
        item_of(request), reply, node="host", latency_s=0.0, at=T0 + dt.timedelta(1)
    )
    return [EVENT_ADAPTER.validate_python(document) for document in documents]
