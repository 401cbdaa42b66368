"""Which ops events an answered request raises: the pure core behind the event publisher.

Every answered request raises a :class:`~common.events.TransactionOutcome`; a refusal also a
:class:`~common.events.Decline`; cash of 50,000 CNY or more a
:class:`~common.events.LargeCash`; the wrong PIN that locks an account a
:class:`~common.events.PinLockout`; a freeze, unfreeze or deduction a
:class:`~common.events.FreezeDeduct`; a request refused for its maker's role or for a supervisor
authorisation that is not acceptable (forged, self-signed, another branch's) a
:class:`~common.events.SecurityAlert`. Everything is masked here, at the source. Answers'
events are plain documents of those models (:data:`~common.events.EventDocument`): there
is one for every answer, and model validation would cost more than the rest of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.events import (
    LARGE_CASH_FEN,
    NETWORK,
    SCHEMA_VERSION,
    EventDocument,
    EventType,
    SecurityAlert,
    SecurityAlertKind,
    amount_band,
    mask_account,
    scrub,
)
from common.replies import Reply
from common.requests import (
    CloseAccount,
    Deduct,
    Deposit,
    Freeze,
    RecordError,
    Unfreeze,
    Withdraw,
)
from common.results import ResultCode
from host_node.intake import Item
from host_node.maker_checker import REFUSED_RULE, SIGNATURE_RULE, checker
from host_node.permissions import (
    PERMISSION_RULE,
    ROLE_RULE,
    STAFF_FORGED_RULE,
    STAFF_SIGNATURE_RULE,
)

#: The reason the rules give for the wrong PIN that locks an account.
LOCKING_REASON = "third wrong PIN"


def events_for(
    item: Item, reply: Reply, *, node: str, latency_s: float, at: dt.datetime
) -> list[EventDocument]:
    """The events one answered request raises, masked, as documents.

    Each document has its model's fields in its model's order: tests check that the models
    accept every kind and encode it to the same bytes.
    """
    request = item.record
    kind = item.kind
    request_id = item.request_id
    result = reply.result
    # a model's fields by name: getattr on a field a model lacks costs microseconds to miss
    fields: dict[str, Any] = {} if isinstance(request, RecordError) else request.__dict__
    amount = fields.get("amount")
    if amount is None:
        amount = reply.amount
    events: list[EventDocument] = [
        {  # one for every answer: written out, the rarer ones go through _document
            "v": SCHEMA_VERSION,
            "type": EventType.TRANSACTION,
            "node": node,
            "branch": item.branch_id,
            "at": at,
            "request_id": request_id,
            "request_kind": kind,
            "amount_band": amount_band(amount),
            "result": result,
            "latency_ms": round(latency_s * 1000, 3) if latency_s > 0 else 0.0,
        }
    ]
    if result is not ResultCode.APPROVED:
        events.append(
            _document(
                EventType.DECLINE,
                node,
                item.branch_id,
                at,
                request_id=request_id,
                request_kind=kind,
                result=result,
                reason=scrub(reply.reason),
            )
        )
    cash = _cash_amount(request, reply)
    if cash is not None and cash >= LARGE_CASH_FEN:
        withdraw = request if isinstance(request, Withdraw) else None
        events.append(
            _document(
                EventType.LARGE_CASH,
                node,
                item.branch_id,
                at,
                request_id=request_id,
                request_kind=kind,
                account=mask_account(request.account),  # type: ignore[union-attr]
                amount_fen=cash,
                result=result,
                identity_shown=withdraw is not None and withdraw.withdrawer is not None,
                third_party=withdraw is not None
                and withdraw.withdrawer is not None
                and withdraw.holder is not None,
            )
        )
    if result is ResultCode.PIN_TRIES_EXCEEDED and LOCKING_REASON in reply.reason:
        events.append(
            _document(
                EventType.PIN_LOCKOUT,
                node,
                item.branch_id,
                at,
                request_id=request_id,
                account=mask_account(request.account),  # type: ignore[union-attr]
            )
        )
    if isinstance(request, _LEGAL_ACTIONS):
        events.append(
            _document(
                EventType.FREEZE_DEDUCT,
                node,
                item.branch_id,
                at,
                request_id=request_id,
                action=request.kind,
                account=mask_account(request.account),
                amount_fen=fields.get("amount"),
                result=result,
                supervisor_id=checker(request) or None,
            )
        )
    alert = _SECURITY_RULES.get(reply.rule or "")
    if alert is not None:
        events.append(
            _document(
                EventType.SECURITY_ALERT,
                node,
                item.branch_id,
                at,
                alert=alert,
                detail=scrub(f"{kind} refused: {reply.reason}"),
                source=request_id,
            )
        )
    return events


def _document(
    kind: EventType, node: str, branch: str, at: dt.datetime, **fields: Any
) -> EventDocument:
    """An event document: the fields every event has, then ``fields``, in the model's order."""
    return {"v": SCHEMA_VERSION, "type": kind, "node": node, "branch": branch, "at": at, **fields}


#: Requests that move cash over the counter, and legal actions on an account.
_CASH = (Deposit, Withdraw)
_LEGAL_ACTIONS = (Freeze, Unfreeze, Deduct)

#: Request refusals that are security events, and the alert operators see for each.
_SECURITY_RULES = {
    SIGNATURE_RULE: SecurityAlertKind.BAD_SIGNATURE,
    REFUSED_RULE: SecurityAlertKind.PERMISSION_DENIED,
    ROLE_RULE: SecurityAlertKind.PERMISSION_DENIED,
    PERMISSION_RULE: SecurityAlertKind.PERMISSION_DENIED,
    STAFF_SIGNATURE_RULE: SecurityAlertKind.PERMISSION_DENIED,
    STAFF_FORGED_RULE: SecurityAlertKind.BAD_SIGNATURE,
}


def _cash_amount(request: object, reply: Reply) -> int | None:
    """Cash over the counter a request asked to move (a closing: what it paid out)."""
    if isinstance(request, _CASH):
        return request.amount
    if isinstance(request, CloseAccount):
        return reply.amount if reply.approved else None
    return None


def frame_alert(
    reason: str, routing_key: str, *, at: dt.datetime, node: str = "host"
) -> SecurityAlert:
    """The security alert for a request frame the host refused whole."""
    if "unregistered sender" in reason:
        alert = SecurityAlertKind.UNKNOWN_SENDER
    elif "does not match routing key" in reason:
        alert = SecurityAlertKind.PERMISSION_DENIED
    else:
        alert = SecurityAlertKind.BAD_FRAME
    return SecurityAlert(
        node=node,
        branch=NETWORK,
        at=at,
        alert=alert,
        detail=scrub(reason),
        source=scrub(routing_key),
    )


#: The alert kind operators see for each reason the envelope guard refuses a frame.
_REFUSAL_KINDS = {
    "bad_signature": SecurityAlertKind.BAD_SIGNATURE,
    "replayed": SecurityAlertKind.REPLAY,
    "outside_window": SecurityAlertKind.REPLAY,
    "unknown_branch": SecurityAlertKind.UNKNOWN_SENDER,
    "wrong_route": SecurityAlertKind.PERMISSION_DENIED,
    "stale_epoch": SecurityAlertKind.STALE_EPOCH,
    "stale_sign_on": SecurityAlertKind.STALE_EPOCH,
}


def refusal_alert(
    refusal: str, reason: str, routing_key: str, *, at: dt.datetime, node: str = "host"
) -> SecurityAlert:
    """The security alert for a frame the envelope guard refused (``host_node.guard.Refusal``)."""
    return SecurityAlert(
        node=node,
        branch=NETWORK,
        at=at,
        alert=_REFUSAL_KINDS.get(refusal, SecurityAlertKind.BAD_FRAME),
        detail=scrub(reason),
        source=scrub(routing_key),
    )
