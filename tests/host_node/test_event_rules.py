"""The events an answer raises: plain documents the event models accept, as the models write them.

``events_for`` builds documents without the models (it runs for every answer); these tests are
where the models still check them: every kind it raises validates, and encodes to the very
bytes the validated model would give.
"""

from __future__ import annotations

import datetime as dt

from common.events import (
    EVENT_ADAPTER,
    AmountBand,
    Event,
    EventType,
    LargeCash,
    TransactionOutcome,
    decode_events,
    encode_documents,
    encode_events,
)
from common.money import yuan
from common.replies import Reply
from common.requests import IdDocument, Request
from common.results import ResultCode
from host_node.event_rules import LOCKING_REASON, events_for
from host_node.maker_checker import SIGNATURE_RULE
from tests.host_node.fakes import T0, Teller, account_no, fake_pin, item_of, valid_id

A = account_no(1)
AT = T0 + dt.timedelta(milliseconds=12)


def _reply(
    request: Request, result: ResultCode, reason: str = "", rule: str | None = None
) -> Reply:
    return Reply(
        request_id=request.request_id,
        result=result,
        reason=reason or result.name.lower(),
        received_at=T0,
        processed_at=AT,
        rule=rule,
    )


def _checked(request: Request, reply: Reply) -> list[Event]:
    """The answer's event documents, validated by the models and encoded as they would be."""
    documents = events_for(item_of(request), reply, node="host", latency_s=0.0123, at=AT)
    events = [EVENT_ADAPTER.validate_python(document) for document in documents]
    for document, event in zip(documents, events, strict=True):
        assert encode_documents([document]) == encode_events([event])
    assert decode_events(encode_documents(documents)) == events
    return events


def test_every_kind_an_answer_raises_is_a_valid_event_written_as_its_model_writes_it() -> None:
    teller = Teller()
    pin = fake_pin("123456")
    someone = IdDocument(id_type="resident_id", number=valid_id("someone else"))
    cash = teller.withdraw(A, yuan(60_000), pin).model_copy(
        update={"withdrawer": someone, "holder": someone}
    )
    deposit, lockout = teller.deposit(A, yuan(100)), teller.withdraw(A, 100, pin)
    freeze, forged = teller.freeze(A), teller.freeze(A)
    answers: list[tuple[Request, Reply]] = [
        (deposit, _reply(deposit, ResultCode.APPROVED)),
        (cash, _reply(cash, ResultCode.APPROVED)),
        (lockout, _reply(lockout, ResultCode.PIN_TRIES_EXCEEDED, f"PIN locked: {LOCKING_REASON}")),
        (freeze, _reply(freeze, ResultCode.APPROVED)),
        (forged, _reply(forged, ResultCode.SUPERVISOR_REQUIRED, "forged", SIGNATURE_RULE)),
    ]
    raised = [event for request, reply in answers for event in _checked(request, reply)]
    kinds = {event.type for event in raised}
    assert kinds == set(EventType) - {
        EventType.TIER_CHANGED,
        EventType.REPLICATION_LAG,
        EventType.NODE_STATUS,
    }
    first = raised[0]
    assert isinstance(first, TransactionOutcome) and first.request_id == deposit.request_id
    assert first.amount_band is AmountBand.UNDER_1K and first.latency_ms == 12.3
    (large,) = [e for e in raised if isinstance(e, LargeCash)]
    assert large.account == A[:6] + "******" + A[-4:] and large.amount_fen == yuan(60_000)
    assert large.third_party and large.identity_shown


def _bands(request: Request, reply: Reply) -> list[AmountBand]:
    return [e.amount_band for e in _checked(request, reply) if isinstance(e, TransactionOutcome)]


def test_an_amount_comes_from_the_request_else_from_the_reply() -> None:
    teller = Teller()
    deposit, balance = teller.deposit(A, yuan(5_000)), teller.balance(A, fake_pin("123456"))
    paid = _reply(balance, ResultCode.APPROVED).model_copy(update={"amount": yuan(20)})
    assert _bands(deposit, _reply(deposit, ResultCode.APPROVED)) == [AmountBand.UNDER_10K]
    assert _bands(balance, paid) == [AmountBand.UNDER_1K]
    assert _bands(balance, _reply(balance, ResultCode.APPROVED)) == [AmountBand.NONE]
    refused = item_of(b'{"request_id":"0001-01-9","kind":"deposit","amount":"x"}')
    outcome, decline = events_for(
        refused, _reply(deposit, ResultCode.FORMAT_ERROR), node="host", latency_s=0.0, at=AT
    )
    assert outcome["amount_band"] is AmountBand.NONE and decline["type"] is EventType.DECLINE
