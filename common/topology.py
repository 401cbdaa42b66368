"""The bus topology: every exchange, queue and binding name, declared here and nowhere else.

Names are contracts (DESIGN.md "The bus"): tests, tools and dashboards use them. Point-to-point
queues (``crypto.commands``, ``host.crypto-replies``, ``dr.*``) are addressed through the
default exchange ``""`` with the queue name as routing key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

REQUESTS_EXCHANGE = "bn.requests"
REPLIES_EXCHANGE = "bn.replies"
DEAD_EXCHANGE = "bn.dead"
EVENTS_EXCHANGE = "amq.topic"
DEFAULT_EXCHANGE = ""

HOST_REQUESTS = "host.requests"
CRYPTO_COMMANDS = "crypto.commands"
HOST_CRYPTO_REPLIES = "host.crypto-replies"
DR_REPLICATION = "dr.replication"
DR_ACKS = "dr.acks"
#: Epochs announced by promoted hosts; read (never consumed) by a host starting as primary.
DR_EPOCH = "dr.epoch"
DEAD_QUEUE = "bn.dead"

#: Header naming why a message was dead-lettered.
REASON_HEADER = "x-branchnet-reason"
#: Header naming the queue a dead-lettered message came from.
ORIGIN_HEADER = "x-branchnet-origin"
#: Header naming the queue a command's answers go to (``host.crypto-replies`` for the host).
REPLY_TO_HEADER = "reply_to"

ExchangeType = Literal["direct", "topic", "fanout"]


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: ExchangeType
    durable: bool = True


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue. ``quorum`` queues are replicated and durable; ``max_length`` bounds it."""

    name: str
    durable: bool = True
    quorum: bool = False
    single_active_consumer: bool = False
    max_length: int | None = None
    delivery_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    bindings: tuple[Binding, ...] = field(default=())

    def __add__(self, other: Topology) -> Topology:
        return Topology(
            self.exchanges + other.exchanges,
            self.queues + other.queues,
            self.bindings + other.bindings,
        )


def branch_key(branch_id: str) -> str:
    """Routing key of a branch's requests on ``bn.requests`` and replies on ``bn.replies``."""
    return f"branch.{branch_id}"


def branch_reply_queue(branch_id: str) -> str:
    return f"branch.{branch_id}.replies"


def event_key(branch_id: str, kind: str) -> str:
    """Routing key of an event on ``amq.topic``; MQTT sees it as ``bank/events/<b>/<kind>``."""
    return f"bank.events.{branch_id}.{kind}"


def stats_key(node: str) -> str:
    return f"bank.stats.{node}"


#: Exchanges and queues every node may rely on.
CORE = Topology(
    exchanges=(
        # Topic exchanges, though keys are exact: RabbitMQ enforces topic permissions (a
        # branch may publish and bind only ``branch.<its own id>``) on topic exchanges only.
        ExchangeSpec(REQUESTS_EXCHANGE, "topic"),
        ExchangeSpec(REPLIES_EXCHANGE, "topic"),
        ExchangeSpec(DEAD_EXCHANGE, "fanout"),
    ),
    queues=(
        QueueSpec(HOST_REQUESTS, quorum=True, single_active_consumer=True, delivery_limit=20),
        QueueSpec(CRYPTO_COMMANDS, max_length=100_000),
        QueueSpec(HOST_CRYPTO_REPLIES, max_length=100_000),
        QueueSpec(DR_REPLICATION, quorum=True, single_active_consumer=True),
        QueueSpec(DR_ACKS),
        QueueSpec(DR_EPOCH),
        QueueSpec(DEAD_QUEUE, max_length=1_000_000),
    ),
    bindings=(Binding(DEAD_QUEUE, DEAD_EXCHANGE, ""),),
)


def host_topology(branch_ids: Iterable[str]) -> Topology:
    """Bind ``host.requests`` to each registered branch's routing key."""
    return Topology(
        bindings=tuple(Binding(HOST_REQUESTS, REQUESTS_EXCHANGE, branch_key(b)) for b in branch_ids)
    )


def branch_topology(branch_id: str) -> Topology:
    """A branch's own reply queue, bound to its key on ``bn.replies``."""
    queue = branch_reply_queue(branch_id)
    return Topology(
        queues=(QueueSpec(queue, max_length=100_000),),
        bindings=(Binding(queue, REPLIES_EXCHANGE, branch_key(branch_id)),),
    )
