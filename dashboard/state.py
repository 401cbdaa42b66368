"""What the dashboard knows: the pure core that turns the event stream into screen updates.

Messages arrive by MQTT topic: ``bank/events/<branch>/<type>`` (each an array of events,
:func:`~common.events.decode_events`) and ``bank/stats/<node>`` (one summary each).
Transaction events can come by the thousand per second, so they are not forwarded one by one:
they are counted, and once a second :meth:`DashboardState.tick` returns one update with the
interval's counts, the latest stats of every node, the new alerts, node health and tier counts.
A browser that connects later gets :meth:`DashboardState.snapshot`: the recent ticks and alerts.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic

from common.events import (
    CustomerTier,
    Decline,
    EventBase,
    FreezeDeduct,
    LargeCash,
    NodeStatus,
    PinLockout,
    ReplicationLag,
    SecurityAlert,
    StatsSummary,
    TierChanged,
    TransactionOutcome,
    decode_events,
    decode_stats,
)
from common.money import format_fen
from common.results import MEANINGS, ResultCode

#: Ticks kept for a browser that connects late (five minutes at one a second).
HISTORY = 300
#: Alerts kept for the feed.
ALERT_HISTORY = 200
#: A node whose stats stop for this long is shown as stale.
STALE_AFTER_S = 5.0

Update = dict[str, Any]


@dataclass(slots=True)
class _Node:
    name: str
    role: str = ""
    status: str = "up"
    last_seen: float = 0.0
    stats: StatsSummary | None = None

    def view(self, now: float) -> dict[str, Any]:
        silent = now - self.last_seen > STALE_AFTER_S
        stale = self.status == "up" and self.stats is not None and silent
        stats = self.stats
        return {
            "name": self.name,
            "role": self.role,
            "status": "stale" if stale else self.status,
            "age_s": round(now - self.last_seen, 1) if self.last_seen else None,
            "queues": dict(stats.queues) if stats else {},
            "events": stats.events.model_dump() if stats else None,
        }


@dataclass(slots=True)
class _Interval:
    transactions: int = 0
    declines: int = 0
    by_result: Counter[str] = field(default_factory=Counter)
    by_branch: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)


class DashboardState:
    """Aggregates the event stream; see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._interval = _Interval()
        self._ticks: deque[Update] = deque(maxlen=HISTORY)
        self._alerts: deque[Update] = deque(maxlen=ALERT_HISTORY)
        self._new_alerts: list[Update] = []
        self._nodes: dict[str, _Node] = {}
        self._totals_by_result: Counter[str] = Counter()
        self._totals_by_branch: Counter[str] = Counter()
        self._tier_counts: Counter[str] = Counter()
        self._tiers_reported: dict[str, int] | None = None
        self._replication: dict[str, Any] | None = None
        self.received = 0
        self.rejected = 0

    # -- intake ------------------------------------------------------------------------------

    def ingest(self, topic: str, payload: bytes) -> None:
        """Take one message; anything that is not valid events or a summary is counted, not shown.

        ``received`` counts the events and summaries taken, and a message refused as one.
        """
        words = topic.split("/")
        try:
            if len(words) == 3 and words[:2] == ["bank", "stats"]:
                self._stats(decode_stats(payload))
                self.received += 1
                return
            if len(words) == 4 and words[:2] == ["bank", "events"]:
                events = decode_events(payload)
                self.received += len(events)
                for event in events:
                    self._event(event)
                return
        except (pydantic.ValidationError, ValueError):
            pass
        self.received += 1
        self.rejected += 1

    def _stats(self, summary: StatsSummary) -> None:
        node = self._node(summary.node)
        node.stats = summary
        node.role = summary.role or node.role
        node.last_seen = self._clock()
        if node.status == "down":
            node.status = "up"
        if summary.replication is not None:
            self._replication = summary.replication.model_dump() | {"node": summary.node}
        if summary.tiers is not None:
            self._tiers_reported = {str(k): v for k, v in summary.tiers.items()}

    def _event(self, event: EventBase) -> None:
        interval = self._interval
        if isinstance(event, TransactionOutcome):
            interval.transactions += 1
            interval.by_result[event.result.value] += 1
            interval.by_branch[event.branch] += 1
            interval.by_kind[event.request_kind] += 1
            self._totals_by_result[event.result.value] += 1
            self._totals_by_branch[event.branch] += 1
        elif isinstance(event, Decline):
            interval.declines += 1
        elif isinstance(event, NodeStatus):
            node = self._node(event.node)
            node.status, node.role = event.status, event.role or node.role
            node.last_seen = self._clock()
            if event.status == "down":
                self._alert(event, "critical", f"node {event.node} down", event.reason)
            else:
                self._alert(event, "info", f"node {event.node} up", event.role)
        elif isinstance(event, TierChanged):
            if event.from_tier is not None:
                self._tier_counts[event.from_tier.value] -= 1
            self._tier_counts[event.to_tier.value] += 1
        elif isinstance(event, ReplicationLag):
            self._replication = event.model_dump(
                include={"mode", "lag_entries", "lag_s", "standby_up", "node"}
            )
            if not event.standby_up or event.lag_entries > 0:
                self._alert(
                    event,
                    "warning",
                    "replication lag",
                    f"{event.lag_entries} entries, {event.lag_s:.1f} s ({event.mode})",
                )
        else:
            self._notable(event)

    def _notable(self, event: EventBase) -> None:
        if isinstance(event, LargeCash):
            verb = {"deposit": "deposit", "withdraw": "withdrawal"}.get(
                event.request_kind, event.request_kind.replace("_", " ")
            )
            detail = f"{format_fen(event.amount_fen)} CNY {verb} · {event.account}"
            if event.third_party:
                detail += " · third party"
            level = "warning" if event.result is ResultCode.APPROVED else "critical"
            self._alert(event, level, "large cash", f"{detail} · {_code(event.result)}")
        elif isinstance(event, PinLockout):
            self._alert(event, "critical", "PIN locked", f"account {event.account}")
        elif isinstance(event, SecurityAlert):
            title = "security: " + event.alert.value.replace("_", " ")
            self._alert(event, "critical", title, event.detail)
        elif isinstance(event, FreezeDeduct):
            amount = f" · {format_fen(event.amount_fen)} CNY" if event.amount_fen else ""
            detail = f"{event.account}{amount} · {_code(event.result)}"
            self._alert(event, "notice", event.action, detail)

    def _alert(self, event: EventBase, level: str, title: str, detail: str) -> None:
        alert = {
            "at": event.at.isoformat(),
            "type": event.type.value,
            "level": level,
            "branch": event.branch,
            "title": title,
            "detail": detail,
        }
        self._alerts.append(alert)
        self._new_alerts.append(alert)

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _Node(name)
        return node

    # -- output ------------------------------------------------------------------------------

    def tick(self, at: float) -> Update:
        """The update for the interval just ended (``at``: wall-clock seconds)."""
        interval, self._interval = self._interval, _Interval()
        stats = [n.stats for n in self._nodes.values() if n.stats is not None and self._fresh(n)]
        hosts = [s for s in stats if s.requests or s.node.startswith("host")]
        latency = max((s.latency_ms for s in hosts), key=lambda lat: lat.p99, default=None)
        update: Update = {
            "type": "tick",
            "at": at,
            "tps": round(sum(s.tps for s in hosts), 1) if hosts else float(interval.transactions),
            "latency_ms": latency.model_dump() if latency else None,
            "requests": max(
                (s.requests for s in hosts), default=sum(self._totals_by_branch.values())
            ),
            "interval": {
                "transactions": interval.transactions,
                "declines": interval.declines,
                "by_result": dict(interval.by_result),
                "by_branch": dict(interval.by_branch),
                "by_kind": dict(interval.by_kind),
            },
            "alerts": self._new_alerts,
        }
        self._new_alerts = []
        self._ticks.append(update)
        return update | self._status()

    def _fresh(self, node: _Node) -> bool:
        return self._clock() - node.last_seen <= STALE_AFTER_S

    def _status(self) -> Update:
        now = self._clock()
        return {
            "totals": {
                "by_result": dict(self._totals_by_result),
                "by_branch": dict(sorted(self._totals_by_branch.items())),
            },
            "nodes": [n.view(now) for n in sorted(self._nodes.values(), key=lambda n: n.name)],
            "replication": self._replication,
            "tiers": self._tiers(),
            "tiers_reported": self._tiers_reported is not None or bool(self._tier_counts),
            "results": {code.value: MEANINGS[code] for code in ResultCode},
            "feed": {"received": self.received, "rejected": self.rejected},
        }

    def _tiers(self) -> dict[str, int]:
        counts = self._tiers_reported
        if counts is None:
            counts = {tier: max(0, n) for tier, n in self._tier_counts.items()}
        return {tier.value: counts.get(tier.value, 0) for tier in CustomerTier}

    def snapshot(self) -> Update:
        """Everything a newly connected browser needs: recent ticks and alerts, and the status."""
        return {"type": "snapshot", "ticks": list(self._ticks), "alerts": list(self._alerts)} | (
            self._status()
        )


def _code(result: ResultCode) -> str:
    return f"{result.value} {MEANINGS[result]}"


def encode_update(update: Update) -> bytes:
    return orjson.dumps(update)
