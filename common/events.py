"""Ops events: small versioned JSON documents on ``amq.topic`` (DESIGN.md "Events").

Every event carries ``v`` (the schema version), ``type`` (its kind, also the last word of its
routing key ``bank.events.<branch>.<type>``), the emitting ``node``, the ``branch`` it concerns
(or ``network`` for events about the network itself) and ``at``. A message's body is a JSON
**array** of one or more such documents, all with the message's routing key (the host sends
one message per key per batch of answers: one per event would cost it and the broker a
message each). A consumer dispatches on each element's ``type``; :func:`decode_events` does
that for Python consumers.

Events are for operators, not evidence: they are masked. Card numbers appear only as first 6 /
last 4 digits (:func:`common.ids.mask_pan`), identity numbers and names never, PIN data never.
Free text is passed through :func:`scrub` so that no long digit run survives. Amounts of
ordinary transactions appear as a band (:func:`amount_band`); large cash carries the amount.

Once a second each node also publishes a :class:`StatsSummary` on ``bank.stats.<node>``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from common.ids import mask_pan
from common.money import yuan
from common.results import ResultCode

SCHEMA_VERSION: Literal[1] = 1
#: The branch word of events about the network as a whole (nodes, replication, security).
NETWORK = "network"
#: Cash of this much or more in one request is reported as large cash (50,000 CNY).
LARGE_CASH_FEN = yuan(50_000)

BranchWord = Annotated[str, Field(pattern=r"^(\d{4}|network)$")]
MaskedPan = Annotated[str, Field(pattern=r"^(\d{6}\*+\d{4}|\*+)$")]
#: An identity number with at most its first three and last four characters shown.
MaskedIdNumber = Annotated[str, Field(pattern=r"^[0-9A-Za-z]{0,3}\*+[0-9A-Za-z]{0,4}$")]
Text = Annotated[str, Field(max_length=200)]

_DIGIT_RUN = re.compile(r"\d{8,}")
_ID_LIKE = re.compile(r"\b[A-Z]{1,2}\d{6,}\b|\b\d{6,}[\dX]\b")


class EventType(StrEnum):
    """The kinds of event; each is the last word of its routing key."""

    TRANSACTION = "transaction"
    DECLINE = "decline"
    LARGE_CASH = "large_cash"
    PIN_LOCKOUT = "pin_lockout"
    FREEZE_DEDUCT = "freeze_deduct"
    TIER_CHANGED = "tier_changed"
    REPLICATION_LAG = "replication_lag"
    SECURITY_ALERT = "security_alert"
    NODE_STATUS = "node_status"


class AmountBand(StrEnum):
    """Coarse amount bands in CNY (the amount itself is not in a transaction event)."""

    NONE = "none"
    UNDER_1K = "<1k"
    UNDER_10K = "1k-10k"
    UNDER_50K = "10k-50k"
    UNDER_200K = "50k-200k"
    LARGE = ">=200k"


_BANDS: tuple[tuple[int, AmountBand], ...] = (
    (yuan(1_000), AmountBand.UNDER_1K),
    (yuan(10_000), AmountBand.UNDER_10K),
    (yuan(50_000), AmountBand.UNDER_50K),
    (yuan(200_000), AmountBand.UNDER_200K),
)


class CustomerTier(StrEnum):
    """The customer tiers of DOMAIN.md "Customer tiers", by financial assets."""

    BASE = "base"  # under 50k CNY
    BRANCH = "branch"  # 50k-100k: branch staff
    DIRECTOR = "director"  # 100k-200k: branch director and lobby manager
    WEALTH = "wealth"  # 200k-2M: wealth managers
    PRIVATE = "private"  # over 2M: wealth management centre / private banking


class SecurityAlertKind(StrEnum):
    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"
    PERMISSION_DENIED = "permission_denied"
    UNKNOWN_SENDER = "unknown_sender"
    STALE_EPOCH = "stale_epoch"
    BAD_FRAME = "bad_frame"


class EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = SCHEMA_VERSION
    type: EventType
    node: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
    branch: BranchWord = NETWORK
    at: dt.datetime


class TransactionOutcome(EventBase):
    """One answered request: what kind, how big, how it ended, how long the host took."""

    type: Literal[EventType.TRANSACTION] = EventType.TRANSACTION
    request_id: str
    request_kind: str
    amount_band: AmountBand
    result: ResultCode
    latency_ms: float = Field(ge=0, description="host latency: frame received to reply sent")


class Decline(EventBase):
    """A request answered with anything but ``00``, and why."""

    type: Literal[EventType.DECLINE] = EventType.DECLINE
    request_id: str
    request_kind: str
    result: ResultCode
    reason: Text


class LargeCash(EventBase):
    """Cash of 50,000 CNY or more over the counter, approved or not."""

    type: Literal[EventType.LARGE_CASH] = EventType.LARGE_CASH
    request_id: str
    request_kind: str
    account: MaskedPan
    amount_fen: int = Field(ge=0)
    result: ResultCode
    identity_shown: bool = Field(description="the withdrawer showed an identity document")
    third_party: bool = Field(description="the withdrawer is not the account holder")


class PinLockout(EventBase):
    """An account's PIN locked after the third wrong PIN in a row."""

    type: Literal[EventType.PIN_LOCKOUT] = EventType.PIN_LOCKOUT
    request_id: str
    account: MaskedPan


class FreezeDeduct(EventBase):
    """A freeze, unfreeze or deduction (扣划) under a legal authority."""

    type: Literal[EventType.FREEZE_DEDUCT] = EventType.FREEZE_DEDUCT
    request_id: str
    action: Literal["freeze", "unfreeze", "deduct"]
    account: MaskedPan
    amount_fen: int | None = Field(default=None, ge=0)
    result: ResultCode
    supervisor_id: str | None = None


class TierChanged(EventBase):
    """A customer moved between tiers (``from_tier`` None: a new customer)."""

    type: Literal[EventType.TIER_CHANGED] = EventType.TIER_CHANGED
    customer: MaskedIdNumber
    from_tier: CustomerTier | None
    to_tier: CustomerTier


class ReplicationLag(EventBase):
    """How far the standby is behind the primary."""

    type: Literal[EventType.REPLICATION_LAG] = EventType.REPLICATION_LAG
    mode: Literal["sync", "async"]
    lag_entries: int = Field(ge=0)
    lag_s: float = Field(ge=0)
    standby_up: bool = True


class SecurityAlert(EventBase):
    """Something refused for security reasons: a bad signature, a replay, a denied action."""

    type: Literal[EventType.SECURITY_ALERT] = EventType.SECURITY_ALERT
    alert: SecurityAlertKind
    detail: Text
    source: Text = ""


class NodeStatus(EventBase):
    """A node came up or went down."""

    type: Literal[EventType.NODE_STATUS] = EventType.NODE_STATUS
    status: Literal["up", "down"]
    role: str = ""
    reason: Text = ""


Event = Annotated[
    TransactionOutcome
    | Decline
    | LargeCash
    | PinLockout
    | FreezeDeduct
    | TierChanged
    | ReplicationLag
    | SecurityAlert
    | NodeStatus,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
#: The body of an event message: one or more events sharing its routing key.
EVENTS_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(Annotated[list[Event], Field(min_length=1)])
#: An event as a plain document: one model's fields in its order, values orjson can write.
#: The host builds these on its hot path (no model construction); tests check the models
#: accept every one and that :func:`encode_documents` writes what the model would.
EventDocument = dict[str, Any]
EVENT_MODELS: dict[EventType, type[EventBase]] = {
    EventType.TRANSACTION: TransactionOutcome,
    EventType.DECLINE: Decline,
    EventType.LARGE_CASH: LargeCash,
    EventType.PIN_LOCKOUT: PinLockout,
    EventType.FREEZE_DEDUCT: FreezeDeduct,
    EventType.TIER_CHANGED: TierChanged,
    EventType.REPLICATION_LAG: ReplicationLag,
    EventType.SECURITY_ALERT: SecurityAlert,
    EventType.NODE_STATUS: NodeStatus,
}


class LatencySummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class ReplicationStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["sync", "async"]
    lag_entries: int = Field(ge=0)
    lag_s: float = Field(ge=0)
    standby_up: bool = True


class EventCounts(BaseModel):
    """The publisher's own health: what it published, dropped and still holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    published: int = 0
    dropped: int = 0
    buffered: int = 0


class StatsSummary(BaseModel):
    """A node's once-a-second summary on ``bank.stats.<node>``.

    ``tps``, ``by_result``, ``by_branch`` and ``latency_ms`` cover the last interval only;
    ``requests`` is the total since the node started.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = SCHEMA_VERSION
    type: Literal["stats"] = "stats"
    node: str
    role: str = ""
    at: dt.datetime
    interval_s: float = Field(ge=0)
    tps: float = Field(ge=0)
    requests: int = Field(ge=0)
    by_result: dict[str, int] = Field(default_factory=dict)
    by_branch: dict[str, int] = Field(default_factory=dict)
    latency_ms: LatencySummary = Field(default_factory=LatencySummary)
    queues: dict[str, int] = Field(default_factory=dict)
    replication: ReplicationStatus | None = None
    tiers: dict[CustomerTier, int] | None = None
    events: EventCounts = Field(default_factory=EventCounts)


STATS_ADAPTER: TypeAdapter[StatsSummary] = TypeAdapter(StatsSummary)


def amount_band(amount_fen: int | None) -> AmountBand:
    """The band an amount falls in; None or zero is ``none``."""
    if not amount_fen:
        return AmountBand.NONE
    for bound, band in _BANDS:
        if amount_fen < bound:
            return band
    return AmountBand.LARGE


def mask_account(number: str) -> str:
    """An account number as events show it: first 6 and last 4 digits."""
    return mask_pan(number)


def scrub(text: str, limit: int = 200) -> str:
    """Free text made safe for an event: long digit runs and ID-like tokens masked, cut short."""
    text = _ID_LIKE.sub(lambda m: "*" * len(m.group(0)), text)
    text = _DIGIT_RUN.sub(lambda m: "*" * len(m.group(0)), text)
    return text[:limit]


def encode_event(event: EventBase | StatsSummary) -> bytes:
    """One document's bytes (compact JSON): a stats summary's whole body, an event's element."""
    return event.__pydantic_serializer__.to_json(event)


def encode_events(events: Sequence[EventBase]) -> bytes:
    """The body of an event message: ``events`` (sharing one routing key) as a JSON array."""
    return b"[" + b",".join(encode_event(event) for event in events) + b"]"


def encode_documents(documents: Sequence[EventDocument]) -> bytes:
    """:func:`encode_events` for event documents: the same bytes the models would give."""
    return orjson.dumps(documents, option=orjson.OPT_UTC_Z)


def decode_events(raw: bytes) -> list[Event]:
    """Decode the body of an event message: a JSON array of one or more events.

    Raises:
        pydantic.ValidationError: not an array of events of this schema version (one bad
            element refuses the whole message).
    """
    return EVENTS_ADAPTER.validate_json(raw)


def decode_stats(raw: bytes) -> StatsSummary:
    """Decode a stats summary.

    Raises:
        pydantic.ValidationError: not a stats summary of this schema version.
    """
    return STATS_ADAPTER.validate_json(raw)
