"""The dashboard's aggregation of the event stream (pure)."""

from __future__ import annotations

import datetime as dt

from common.events import (
    AmountBand,
    CustomerTier,
    EventBase,
    LargeCash,
    NodeStatus,
    PinLockout,
    ReplicationStatus,
    SecurityAlert,
    SecurityAlertKind,
    StatsSummary,
    TierChanged,
    TransactionOutcome,
    encode_event,
    encode_events,
)
from common.results import ResultCode
from dashboard.state import STALE_AFTER_S, DashboardState

AT = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
MASKED = "620001******0034"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outcome(branch: str, result: ResultCode, n: int) -> TransactionOutcome:
    return TransactionOutcome(
        node="host",
        branch=branch,
        at=AT,
        request_id=f"{branch}-01-{n:010d}",
        request_kind="deposit",
        amount_band=AmountBand.UNDER_1K,
        result=result,
        latency_ms=1.5,
    )


def topic(event: EventBase) -> str:
    return f"bank/events/{event.branch}/{event.type.value}"


def ingest(state: DashboardState, *events: EventBase) -> None:
    """Hand ``events`` (sharing a topic) to ``state`` as one message, the way the host sends."""
    state.ingest(topic(events[0]), encode_events(events))


def test_ticks_count_transactions_and_carry_new_alerts_once() -> None:
    state = DashboardState(clock=Clock())
    for n in range(3):
        event = outcome("0001", ResultCode.APPROVED, n)
        ingest(state, event)
    declined = outcome("0002", ResultCode.WRONG_PIN, 9)
    ingest(state, declined)
    lockout = PinLockout(node="host", branch="0002", at=AT, request_id="0002-01-1", account=MASKED)
    ingest(state, lockout)
    first = state.tick(1.0)
    assert first["interval"]["transactions"] == 4
    assert first["interval"]["by_branch"] == {"0001": 3, "0002": 1}
    assert first["totals"]["by_result"] == {"00": 3, "55": 1}
    assert first["tps"] == 4.0  # no host stats yet: counted from the events
    assert [a["title"] for a in first["alerts"]] == ["PIN locked"]
    second = state.tick(2.0)
    assert second["alerts"] == [] and second["interval"]["transactions"] == 0
    snapshot = state.snapshot()
    assert len(snapshot["ticks"]) == 2 and len(snapshot["alerts"]) == 1


def test_alerts_are_worded_for_an_operator() -> None:
    state = DashboardState(clock=Clock())
    large = LargeCash(
        node="host",
        branch="0003",
        at=AT,
        request_id="0003-01-1",
        request_kind="withdraw",
        account=MASKED,
        amount_fen=7_065_900,
        result=ResultCode.APPROVED,
        identity_shown=True,
        third_party=True,
    )
    alert = SecurityAlert(
        node="host", at=AT, alert=SecurityAlertKind.BAD_SIGNATURE, detail="frame 12 signature"
    )
    for event in (large, alert):
        ingest(state, event)
    titles = {a["title"]: a for a in state.tick(1.0)["alerts"]}
    assert titles["large cash"]["detail"] == (
        f"70,659.00 CNY withdrawal · {MASKED} · third party · 00 approved"
    )
    assert titles["large cash"]["level"] == "warning"
    assert titles["security: bad signature"]["level"] == "critical"


def test_stats_drive_throughput_nodes_replication_and_tiers() -> None:
    clock = Clock()
    state = DashboardState(clock=clock)
    summary = StatsSummary(
        node="host",
        role="primary",
        at=AT,
        interval_s=1.0,
        tps=812.5,
        requests=10_000,
        queues={"inbox": 3},
        replication=ReplicationStatus(mode="sync", lag_entries=2, lag_s=0.01),
    )
    state.ingest("bank/stats/host", encode_event(summary))
    tick = state.tick(1.0)
    assert tick["tps"] == 812.5 and tick["requests"] == 10_000
    assert tick["nodes"][0] | {"age_s": None} == {
        "name": "host",
        "role": "primary",
        "status": "up",
        "age_s": None,
        "queues": {"inbox": 3},
        "events": {"published": 0, "dropped": 0, "buffered": 0},
    }
    assert tick["replication"]["lag_entries"] == 2
    clock.now += STALE_AFTER_S + 1
    assert state.tick(2.0)["nodes"][0]["status"] == "stale"
    down = NodeStatus(node="host", at=AT, status="down", reason="stopped")
    ingest(state, down)
    update = state.tick(3.0)
    assert update["nodes"][0]["status"] == "down"
    assert update["alerts"][0]["level"] == "critical"

    for to_tier in (CustomerTier.BASE, CustomerTier.BASE, CustomerTier.WEALTH):
        changed = TierChanged(
            node="host",
            branch="0001",
            at=AT,
            customer="110****1233",
            from_tier=None,
            to_tier=to_tier,
        )
        ingest(state, changed)
    moved = TierChanged(
        node="host",
        branch="0001",
        at=AT,
        customer="110***********1233",
        from_tier=CustomerTier.BASE,
        to_tier=CustomerTier.PRIVATE,
    )
    ingest(state, moved)
    tiers = state.tick(4.0)["tiers"]
    assert tiers == {
        "base": 1,
        "branch": 0,
        "director": 0,
        "wealth": 1,
        "private": 1,
    }


def test_a_message_of_many_events_counts_each() -> None:
    state = DashboardState(clock=Clock())
    ingest(state, *(outcome("0001", ResultCode.APPROVED, n) for n in range(5)))
    ingest(state, outcome("0002", ResultCode.APPROVED, 9))
    tick = state.tick(1.0)
    assert tick["interval"]["by_branch"] == {"0001": 5, "0002": 1}
    assert tick["feed"] == {"received": 6, "rejected": 0}


def test_garbage_is_counted_not_shown() -> None:
    state = DashboardState(clock=Clock())
    state.ingest("bank/events/0001/transaction", b"not json")
    state.ingest("bank/events/0001/transaction", b'[{"v": 9, "type": "transaction"}]')
    state.ingest("elsewhere/topic", b"{}")
    state.ingest("bank/stats/host", b"[]")
    # one event outside an array (the format before the host batched events), or an empty array
    single = outcome("0001", ResultCode.APPROVED, 1)
    state.ingest(topic(single), encode_event(single))
    state.ingest(topic(single), b"[]")
    # one bad element refuses its whole message: the good one is not counted either
    state.ingest(topic(single), b"[" + encode_event(single) + b', {"v": 1}]')
    tick = state.tick(1.0)
    assert state.rejected == 7 and tick["interval"]["transactions"] == 0
    assert tick["feed"] == {"received": 7, "rejected": 7}
